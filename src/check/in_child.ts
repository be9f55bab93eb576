/**
 * Probes that need another process: ptrace, remote syscalls, memory of another task, and kernel
 * calls that would change our own process (mount and network namespaces, seccomp, vDSO moves) made
 * in a throwaway child instead. See child.ts for how the child is made and disposed of.
 */
import * as pt from "../../ffi/ptrace.ts";
import { AT_FDCWD } from "../../ffi/mount.ts";
import { ProcMem, readMemory, writeMemory } from "../../ffi/memory.ts";
import { readStat } from "../../ffi/proc.ts";
import { ARCH, CLONE, MAP, MOVE_MOUNT_SET_GROUP, MREMAP, NR, O, PR, PROT, SIG } from "../../ffi/syscalls.ts";
import { isSyscallError, type SyscallError } from "../../ffi/errors.ts";
import {
  BPF_RET_K,
  CLONE_ARGS_SIZE,
  cloneArgs,
  FD_PAIR_SIZE,
  parseFdPair,
  PRCTL_MM_MAP_SIZE,
  prctlMmMap,
  readInt32,
  readU64,
  SECCOMP_RET_ALLOW,
  SECCOMP_SET_MODE_FILTER,
  siginfo,
  SOCK_FILTER_SIZE,
  SOCK_FPROG_SIZE,
  sockFilter,
  sockFprog,
  timespec,
  TIMESPEC_SIZE,
  UFFDIO_API_SIZE,
  UFFDIO_REGISTER_MODE,
  UFFDIO_REGISTER_SIZE,
  uffdioApi,
  uffdioRegister,
} from "../../ffi/structs.ts";
import { SOCK } from "../../ffi/sockcall.ts";
import {
  closeFd,
  failed,
  openPath,
  PAGE_IS,
  pagemapScan,
  PM_SCAN,
  pokeUser,
  rawSyscall,
  UFFD_FEATURE,
  UFFDIO_API,
  UFFDIO_REGISTER,
} from "../../ffi/probe.ts";
import { CHILD_PTRACE_OPTIONS, type ProbeChild } from "./child.ts";
import {
  AF,
  attr,
  attrNested,
  attrS32,
  attrString,
  exchange,
  IFLA,
  IFLA_INFO,
  NLM_F,
  parseAttrs,
  request,
  RTM,
  setReceiveTimeout,
  VETH_INFO_PEER,
} from "../../ffi/netlink.ts";
import { answerText, closeAll, errnoText, no, type ProbeEnv, type ProbeResult, yes } from "./result.ts";

const PAGE = 4096n;

function anonPages(c: ProbeChild, len: bigint, prot: number): bigint {
  return c.call("mmap", NR.mmap, 0, len, prot, MAP.PRIVATE | MAP.ANONYMOUS, -1, 0);
}

// --- ptrace and remote syscalls ------------------------------------------------------------------

export function ptraceSeize(env: ProbeEnv): ProbeResult {
  const c = env.child();
  pt.getRegs(c.pid);
  const xstate = pt.getXstate(c.pid);
  return yes(
    `PTRACE_SEIZE and PTRACE_INTERRUPT stopped a child; NT_PRSTATUS and NT_X86_XSTATE (${xstate.length} bytes) read`,
  );
}

export function remoteSyscall(env: ProbeEnv): ProbeResult {
  const c = env.child();
  const r = c.attempt("getpid", NR.getpid);
  return r === BigInt(c.pid)
    ? yes("a syscall single-stepped from the child's [vdso] returned the child's pid")
    : no(`getpid run in child ${c.pid} returned ${isSyscallError(r) ? r.code : r}`);
}

export function processVmRw(env: ProbeEnv): ProbeResult {
  const c = env.child();
  const elf = readMemory(c.pid, c.vdso.start, 4);
  if (elf[0] !== 0x7f || elf[1] !== 0x45) {
    return no("process_vm_readv read something else than the vDSO's ELF header");
  }
  const data = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  const at = c.alloc(data.length, data); // written with process_vm_writev
  const back = c.read(at, data.length);
  return back.every((b, i) => b === data[i])
    ? yes("process_vm_readv and process_vm_writev move a child's memory")
    : no("process_vm_writev data did not read back");
}

export function procPidMem(env: ProbeEnv): ProbeResult {
  const c = env.child();
  const page = anonPages(c, PAGE, PROT.READ);
  try {
    const mem = new ProcMem(c.pid);
    try {
      mem.write(page, new Uint8Array([0xc3, 0x5a]));
    } finally {
      mem.close();
    }
    const back = readMemory(c.pid, page, 2);
    return back[0] === 0xc3 && back[1] === 0x5a
      ? yes("/proc/PID/mem writes into a read-only private mapping")
      : no("a write through /proc/PID/mem did not land");
  } finally {
    c.attempt("munmap", NR.munmap, page, PAGE);
  }
}

/** The /proc/PID/pagemap entry of the page holding `addr`. */
function pagemapEntry(pid: number, addr: bigint): bigint {
  const f = Deno.openSync(`/proc/${pid}/pagemap`, { read: true });
  try {
    const buf = new Uint8Array(8);
    f.seekSync(Number(addr / PAGE * 8n), Deno.SeekMode.Start);
    if (f.readSync(buf) !== 8) throw new Error(`Short read from /proc/${pid}/pagemap`);
    return readU64(buf);
  } finally {
    f.close();
  }
}

const PM_PRESENT = 1n << 63n;
const PM_SOFT_DIRTY = 1n << 55n;
const PM_PFN = (1n << 55n) - 1n;

export function pagemap(env: ProbeEnv): ProbeResult {
  const c = env.child();
  const at = c.alloc(8, new Uint8Array([1, 1, 1, 1, 1, 1, 1, 1]));
  const e = pagemapEntry(c.pid, at);
  if (!(e & PM_PRESENT)) return no("/proc/PID/pagemap does not show a written page as present");
  return (e & PM_PFN)
    ? yes("/proc/PID/pagemap shows present pages with their frame numbers")
    : yes("/proc/PID/pagemap shows present pages (frame numbers hidden)");
}

export function prctlMmMapInChild(env: ProbeEnv): ProbeResult {
  const c = env.child();
  const st = readStat(c.pid);
  const size = c.alloc(4, new Uint8Array(4));
  const r0 = c.attempt("prctl(PR_SET_MM_MAP_SIZE)", NR.prctl, PR.SET_MM, PR.SET_MM_MAP_SIZE, size, 0, 0);
  if (isSyscallError(r0)) return no(`prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE) failed: ${errnoText(r0)}`);
  const expected = readInt32(c.read(size, 4)) >>> 0;
  if (expected !== PRCTL_MM_MAP_SIZE) {
    return no(`the kernel's prctl_mm_map is ${expected} bytes, not ${PRCTL_MM_MAP_SIZE}`);
  }
  const auxv = Deno.readFileSync(`/proc/${c.pid}/auxv`);
  const map = prctlMmMap({
    startCode: st.field(26),
    endCode: st.field(27),
    startData: st.field(45),
    endData: st.field(46),
    startBrk: st.field(47),
    brk: c.call("brk", NR.brk, 0),
    startStack: st.field(28),
    argStart: st.field(48),
    argEnd: st.field(49),
    envStart: st.field(50),
    envEnd: st.field(51),
    auxv: c.alloc(auxv.length, auxv),
    auxvSize: auxv.length,
    exeFd: -1,
  });
  const r = c.attempt(
    "prctl(PR_SET_MM_MAP)",
    NR.prctl,
    PR.SET_MM,
    PR.SET_MM_MAP,
    c.alloc(map.length, map),
    map.length,
    0,
  );
  return r === 0n
    ? yes("prctl(PR_SET_MM, PR_SET_MM_MAP) set a child's memory layout and auxv")
    : no(`prctl(PR_SET_MM, PR_SET_MM_MAP) failed in a child: ${answerText(r)}`);
}

/** Pids not in use now, a little above the last one handed out. */
function freePids(count: number): number[] {
  const max = Number(Deno.readTextFileSync("/proc/sys/kernel/pid_max").trim());
  let pid = Number(Deno.readTextFileSync("/proc/sys/kernel/ns_last_pid").trim()) + 1000;
  const out: number[] = [];
  while (out.length < count) {
    pid += 7;
    if (pid >= max) pid = 1000;
    try {
      Deno.statSync(`/proc/${pid}`);
    } catch {
      out.push(pid);
    }
  }
  return out;
}

/** clone3 in the child with `flags` (CLONE_PARENT: the new task is ours to reap). */
function clone3(c: ProbeChild, flags: number, setTid?: number): bigint | SyscallError {
  const tid = setTid === undefined ? 0n : c.alloc(4, new Uint8Array(new Int32Array([setTid]).buffer));
  const args = cloneArgs({
    flags: BigInt(flags | CLONE.PARENT),
    exitSignal: 0,
    ...(setTid === undefined ? {} : { setTid: tid, setTidSize: 1 }),
  });
  const r = c.attempt("clone3", NR.clone3, c.alloc(CLONE_ARGS_SIZE, args), CLONE_ARGS_SIZE);
  if (!isSyscallError(r) && r > 0n) c.adopt(Number(r));
  return r;
}

export function clone3SetTid(env: ProbeEnv): ProbeResult {
  const c = env.child();
  for (const want of freePids(5)) {
    const r = clone3(c, 0, want);
    if (isSyscallError(r, "EEXIST")) continue; // taken meanwhile: try another
    if (isSyscallError(r)) return no(`clone3() with set_tid failed: ${errnoText(r)}`);
    return r === BigInt(want)
      ? yes(`clone3() with set_tid created a task with the chosen pid ${want}`)
      : no(`clone3() with set_tid = ${want} created pid ${r}`);
  }
  return no("clone3() with set_tid found every chosen pid taken");
}

export function cloneParentNewpid(env: ProbeEnv): ProbeResult {
  const r = clone3(env.child(), CLONE.NEWPID);
  return !isSyscallError(r) && r > 0n
    ? yes("CLONE_PARENT and CLONE_NEWPID work together")
    : no(`CLONE_PARENT | CLONE_NEWPID don't work together: ${answerText(r)}`);
}

export function sigqueueinfo(env: ProbeEnv): ProbeResult {
  const c = env.child();
  const info = siginfo(SIG.USR1, 1); // si_code > 0, as a restore queues them
  // The signal stays blocked, pending.
  const r = c.attempt("rt_sigqueueinfo", NR.rt_sigqueueinfo, c.pid, SIG.USR1, c.alloc(info.length, info));
  return r === 0n
    ? yes("rt_sigqueueinfo queues a signal with a positive si_code")
    : no(`unable to send siginfo with positive si_code to itself: ${answerText(r)}`);
}

export function ptracePeeksiginfo(env: ProbeEnv): ProbeResult {
  const c = env.child();
  const shared = pt.peekSiginfo(c.pid, true).length;
  const own = pt.peekSiginfo(c.pid, false).length;
  pt.getSigmask(c.pid);
  return yes(`PTRACE_PEEKSIGINFO (${shared} shared, ${own} private pending) and PTRACE_GETSIGMASK work`);
}

export function getRseqConf(env: ProbeEnv): ProbeResult {
  const c = env.child();
  const conf = pt.rseqConfiguration(c.pid);
  if (conf.flags !== 0) {
    return no(`PTRACE_GET_RSEQ_CONFIGURATION reports flags ${conf.flags}, criu-ts knows none`);
  }
  return yes(
    conf.abiPointer
      ? `PTRACE_GET_RSEQ_CONFIGURATION works (child's rseq area ${conf.abiSize} bytes, signature 0x${
        conf.signature.toString(16)
      })`
      : "PTRACE_GET_RSEQ_CONFIGURATION works (the child has no rseq area yet)",
  );
}

export function seccompSuspend(env: ProbeEnv): ProbeResult {
  const c = env.child();
  try {
    pt.setOptions(c.pid, CHILD_PTRACE_OPTIONS | pt.PTRACE_O.SUSPEND_SECCOMP);
  } finally {
    pt.setOptions(c.pid, CHILD_PTRACE_OPTIONS);
  }
  return yes("PTRACE_O_SUSPEND_SECCOMP is accepted");
}

export function seccompFilters(env: ProbeEnv): ProbeResult {
  return env.fresh((c) => {
    const allowAll = sockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW);
    const prog = sockFprog(1, c.alloc(SOCK_FILTER_SIZE, allowAll));
    c.call(
      "seccomp(SECCOMP_SET_MODE_FILTER)",
      NR.seccomp,
      SECCOMP_SET_MODE_FILTER,
      0,
      c.alloc(SOCK_FPROG_SIZE, prog),
    );
    const got = pt.seccompFilter(c.pid, 0);
    return got && got.length === 8
      ? yes("PTRACE_SECCOMP_GET_FILTER reads back a child's filter")
      : no("PTRACE_SECCOMP_GET_FILTER did not return the filter just installed");
  });
}

// --- memory --------------------------------------------------------------------------------------

export function memDirtyTrack(env: ProbeEnv): ProbeResult {
  const c = env.child();
  try {
    const f = Deno.openSync(`/proc/${c.pid}/clear_refs`, { write: true });
    try {
      f.writeSync(new TextEncoder().encode("4"));
    } finally {
      f.close();
    }
  } catch (e) {
    return no(`soft-dirty bits cannot be cleared (/proc/PID/clear_refs: ${(e as Error).message})`);
  }
  const at = c.alloc(8, new Uint8Array([7, 7, 7, 7, 7, 7, 7, 7]));
  return pagemapEntry(c.pid, at) & PM_SOFT_DIRTY ? yes("soft-dirty bits are set on written pages") : no(
    "this kernel has no soft-dirty bits (CONFIG_MEM_SOFT_DIRTY is off): a written page is not marked in " +
      "/proc/PID/pagemap; criu-ts tracks memory changes with PAGEMAP_SCAN instead (see pagemap_scan_dirty_track)",
  );
}

export function pagemapScanDirtyTrack(env: ProbeEnv): ProbeResult {
  return env.fresh((c) => {
    const len = 4n * PAGE;
    const base = anonPages(c, len, PROT.READ | PROT.WRITE);
    writeMemory(c.pid, base, new Uint8Array(Number(len)).fill(1)); // populate every page
    const uffd = c.attempt("userfaultfd", NR.userfaultfd, O.CLOEXEC | O.NONBLOCK);
    if (isSyscallError(uffd)) return no(`userfaultfd failed in a child: ${errnoText(uffd)}`);
    const api = c.alloc(UFFDIO_API_SIZE, uffdioApi(UFFD_FEATURE.WP_ASYNC | UFFD_FEATURE.WP_UNPOPULATED));
    const r = c.attempt("ioctl(UFFDIO_API)", NR.ioctl, uffd, UFFDIO_API, api);
    if (isSyscallError(r)) {
      return no(`userfaultfd has no asynchronous write-protect (UFFD_FEATURE_WP_ASYNC): ${errnoText(r)}`);
    }
    const registered = c.attempt(
      "ioctl(UFFDIO_REGISTER)",
      NR.ioctl,
      uffd,
      UFFDIO_REGISTER,
      c.alloc(UFFDIO_REGISTER_SIZE, uffdioRegister(base, len, UFFDIO_REGISTER_MODE.WP)),
    );
    if (isSyscallError(registered)) {
      return no(`UFFDIO_REGISTER in write-protect mode failed: ${errnoText(registered)}`);
    }
    const fd = openPath(`/proc/${c.pid}/pagemap`, O.RDONLY | O.CLOEXEC);
    if (failed(fd)) return no(`cannot open /proc/PID/pagemap: ${errnoText(fd)}`);
    try {
      const scan = (flags: number) =>
        pagemapScan(fd, {
          start: base,
          end: base + len,
          flags,
          categoryInverted: 0,
          categoryMask: PAGE_IS.WRITTEN,
          categoryAnyofMask: 0,
          returnMask: PAGE_IS.WRITTEN,
        }, 8);
      const reset = scan(PM_SCAN.WP_MATCHING | PM_SCAN.CHECK_WPASYNC); // report and write-protect
      if (failed(reset.r)) return no(`PAGEMAP_SCAN cannot write-protect: ${errnoText(reset.r)}`);
      writeMemory(c.pid, base + 2n * PAGE, new Uint8Array([9]));
      const after = scan(0);
      if (failed(after.r)) return no(`PAGEMAP_SCAN failed: ${errnoText(after.r)}`);
      const exact = after.regions.length === 1 && after.regions[0]!.start === base + 2n * PAGE &&
        after.regions[0]!.end === base + 3n * PAGE;
      return exact
        ? yes(
          "userfaultfd async write-protect + PAGEMAP_SCAN report exactly the page written since the last scan",
        )
        : no(`PAGEMAP_SCAN reported ${after.regions.length} written regions where one page was written`);
    } finally {
      closeFd(fd);
    }
  });
}

export function aioRemap(env: ProbeEnv): ProbeResult {
  const c = env.child();
  const ctxAt = c.alloc(8, new Uint8Array(8));
  const r = c.attempt("io_setup", NR.io_setup, 16, ctxAt);
  if (isSyscallError(r)) return no(`no AIO syscall: ${errnoText(r)}`);
  const ctx = readU64(c.read(ctxAt, 8));
  const ring = c.maps().find((m) => m.start === ctx && m.path.includes("[aio]"));
  if (!ring) {
    c.attempt("io_destroy", NR.io_destroy, ctx);
    return no("no AIO ring at the address io_setup returned");
  }
  const len = ring.end - ring.start;
  const to = anonPages(c, len, PROT.READ | PROT.WRITE);
  const moved = c.attempt("mremap(aio ring)", NR.mremap, ctx, len, len, MREMAP.MAYMOVE | MREMAP.FIXED, to);
  if (moved !== to) {
    c.attempt("io_destroy", NR.io_destroy, ctx);
    c.attempt("munmap", NR.munmap, to, len);
    return no(`cannot remap an AIO ring: ${answerText(moved)}`);
  }
  const zero = c.alloc(TIMESPEC_SIZE, timespec(0n)); // never wait
  const ev = c.attempt("io_getevents", NR.io_getevents, to, 0, 1, 0, zero);
  c.attempt("io_destroy", NR.io_destroy, to);
  return !isSyscallError(ev)
    ? yes("an AIO ring moved with mremap keeps working")
    : no(`AIO remap doesn't work properly: ${errnoText(ev)}`);
}

export function specialMappingMremap(env: ProbeEnv): ProbeResult {
  return env.fresh((c) => {
    const names = ["[vvar]", "[vvar_vclock]", "[vdso]"];
    const specials = c.maps().filter((m) => names.includes(m.path));
    const total = specials.reduce((n, m) => n + (m.end - m.start), 0n);
    let at = anonPages(c, total, PROT.NONE);
    const moved = new Map<string, bigint>();
    for (const m of specials) {
      const size = m.end - m.start;
      const r = c.attempt(
        `mremap(${m.path})`,
        NR.mremap,
        m.start,
        size,
        size,
        MREMAP.MAYMOVE | MREMAP.FIXED,
        at,
      );
      if (r !== at) return no(`cannot move ${m.path} with mremap: ${answerText(r)}`);
      if (m.path === "[vdso]") c.syscallIp = c.syscallIp - m.start + at;
      moved.set(m.path, at);
      at += size;
    }
    const now = c.maps();
    for (const [path, start] of moved) {
      if (!now.some((m) => m.path === path && m.start === start)) {
        return no(`${path} is not where mremap put it`);
      }
    }
    const r = c.attempt("getpid", NR.getpid);
    return r === BigInt(c.pid)
      ? yes(`${[...moved.keys()].join(", ")} move with mremap and the moved vDSO still runs syscalls`)
      : no(`a syscall from the moved vDSO returned ${answerText(r)}`);
  });
}

export function canMapVdso(env: ProbeEnv): ProbeResult {
  const c = env.child();
  // While one is mapped: EEXIST says the call exists.
  const r = c.attempt("arch_prctl(ARCH_MAP_VDSO_64)", NR.arch_prctl, ARCH.MAP_VDSO_64, c.vdso.start);
  return isSyscallError(r, "EEXIST") || r === 0n ? yes("arch_prctl(ARCH_MAP_VDSO_64) exists") : no(
    `no API to map the vDSO (arch_prctl(ARCH_MAP_VDSO_64): ${answerText(r)}); a restore moves it with mremap`,
  );
}

export function loginuid(env: ProbeEnv): ProbeResult {
  const c = env.child();
  let saved: string;
  try {
    saved = Deno.readTextFileSync(`/proc/${c.pid}/loginuid`).trim();
  } catch {
    return no("loginuid restore is off: /proc/PID/loginuid is missing (no CONFIG_AUDITSYSCALL)");
  }
  const fd = c.attempt(
    "open(/proc/self/loginuid)",
    NR.open,
    c.string("/proc/self/loginuid"),
    O.RDWR | O.CLOEXEC,
    0,
  );
  if (isSyscallError(fd)) {
    return no(`loginuid restore is off: cannot open /proc/self/loginuid (${errnoText(fd)})`);
  }
  try {
    for (const value of ["4294967295", saved]) {
      const r = c.attempt("pwrite64(loginuid)", NR.pwrite64, fd, c.string(value), value.length, 0);
      if (r !== BigInt(value.length)) {
        return no(`loginuid restore is off: writing loginuid failed (${answerText(r)})`);
      }
    }
  } finally {
    c.attempt("close(loginuid)", NR.close, fd);
  }
  return yes("a task can unset its loginuid and set it back");
}

// --- breakpoints ---------------------------------------------------------------------------------

const DEBUGREG_OFFSET = 848; // offsetof(struct user, u_debugreg) on x86_64

export function breakpoints(env: ProbeEnv): ProbeResult {
  return env.fresh((c) => {
    const ip = c.syscallIp;
    let r = pokeUser(c.pid, DEBUGREG_OFFSET, ip); // DR0: the address
    if (r === 0) r = pokeUser(c.pid, DEBUGREG_OFFSET + 7 * 8, 1n); // DR7: local enable 0, on execution
    if (failed(r)) return no(`cannot set a hardware breakpoint: ${errnoText(r)}`);
    const regs = pt.getRegs(c.pid);
    regs.set("ip", ip);
    regs.set("orig_ax", -1);
    pt.setRegs(c.pid, regs);
    pt.cont(c.pid, 0);
    const deadline = performance.now() + 500;
    while (performance.now() < deadline) {
      const st = pt.wait(c.pid, pt.WNOHANG);
      if (!st) continue;
      if (st.kind === "stopped" && st.signal === SIG.TRAP) {
        return yes("a hardware breakpoint stops the child with SIGTRAP");
      }
      return no(
        `hardware breakpoints don't seem to work (the child ${st.kind} with signal ${
          "signal" in st ? st.signal : "-"
        })`,
      );
    }
    return no("hardware breakpoints don't seem to work (no SIGTRAP within 500 ms)");
  });
}

// --- mount namespace probes ----------------------------------------------------------------------

const MS = { BIND: 0x1000, REC: 0x4000, PRIVATE: 0x40000, SHARED: 0x100000 } as const;

/** Gives the child a mount namespace of its own with a private tmpfs on /tmp. */
function privateTmp(c: ProbeChild): void {
  c.call("unshare(CLONE_NEWNS)", NR.unshare, CLONE.NEWNS);
  c.call("mount(/, MS_REC|MS_PRIVATE)", NR.mount, 0, c.string("/"), 0, MS.REC | MS.PRIVATE, 0);
  c.call("mount(tmpfs on /tmp)", NR.mount, c.string("criu-ts"), c.string("/tmp"), c.string("tmpfs"), 0, 0);
}

function mkdirs(c: ProbeChild, ...paths: string[]): void {
  for (const p of paths) c.call(`mkdir(${p})`, NR.mkdir, c.string(p), 0o700);
}

export function moveMountSetGroup(env: ProbeEnv): ProbeResult {
  return env.fresh((c) => {
    privateTmp(c);
    mkdirs(c, "/tmp/a");
    c.call("mount(--bind)", NR.mount, c.string("/tmp/a"), c.string("/tmp/a"), 0, MS.BIND, 0);
    c.call("mount(MS_SHARED)", NR.mount, 0, c.string("/tmp"), 0, MS.SHARED, 0);
    const r = c.attempt(
      "move_mount(MOVE_MOUNT_SET_GROUP)",
      NR.move_mount,
      AT_FDCWD,
      c.string("/tmp"),
      AT_FDCWD,
      c.string("/tmp/a"),
      MOVE_MOUNT_SET_GROUP,
    );
    return r === 0n
      ? yes("move_mount(MOVE_MOUNT_SET_GROUP) copies a sharing group")
      : no(`move_mount(MOVE_MOUNT_SET_GROUP) is not supported: ${answerText(r)}`);
  });
}

/** Major and minor numbers of a dev_t as stat returns it. */
function devPair(dev: number): string {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major.toString(16).padStart(2, "0")}:${minor.toString(16).padStart(2, "0")}`;
}

export function overlayfsMaps(env: ProbeEnv): ProbeResult {
  return env.fresh((c) => {
    privateTmp(c);
    mkdirs(c, "/tmp/l", "/tmp/u", "/tmp/w", "/tmp/m");
    const opts = "lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w";
    const r = c.attempt(
      "mount(overlay)",
      NR.mount,
      c.string("overlay"),
      c.string("/tmp/m"),
      c.string("overlay"),
      0,
      c.string(opts),
    );
    if (isSyscallError(r)) return no(`cannot mount overlayfs: ${errnoText(r)}`);
    const fd = c.call("open", NR.open, c.string("/tmp/m/f"), O.RDWR | O.CREAT, 0o644);
    const addr = c.call("mmap(file)", NR.mmap, 0, PAGE, PROT.READ, MAP.SHARED, fd, 0);
    const vma = c.maps().find((m) => m.start === addr);
    const st = Deno.statSync(`/proc/${c.pid}/root/tmp/m/f`);
    if (!vma) return no("the mapped overlayfs file is not in /proc/PID/maps");
    const want = `${devPair(st.dev)} ${st.ino}`;
    const got = `${vma.dev} ${vma.inode}`;
    return got === want
      ? yes("/proc/PID/maps shows the overlayfs device and inode of a mapped file")
      : no(`/proc/PID/maps shows ${got} for an overlayfs file that stat says is ${want}`);
  });
}

export function autofs(env: ProbeEnv): ProbeResult {
  return env.fresh((c) => {
    privateTmp(c);
    mkdirs(c, "/tmp/a");
    const fds = c.alloc(FD_PAIR_SIZE, new Uint8Array(FD_PAIR_SIZE));
    c.call("pipe2", NR.pipe2, fds, 0);
    const [, write] = parseFdPair(c.read(fds, FD_PAIR_SIZE));
    const pgrp = readStat(c.pid).field(5);
    const opts = `fd=${write},pgrp=${pgrp},minproto=5,maxproto=5,direct`;
    const r = c.attempt(
      "mount(autofs)",
      NR.mount,
      c.string("criu-ts"),
      c.string("/tmp/a"),
      c.string("autofs"),
      0,
      c.string(opts),
    );
    if (isSyscallError(r)) return no(`cannot mount autofs: ${errnoText(r)}`);
    const line = Deno.readTextFileSync(`/proc/${c.pid}/mountinfo`).split("\n").find((l) =>
      / - autofs /.test(l)
    );
    if (!line) return no("the autofs mount is not in /proc/PID/mountinfo");
    return line.includes("pipe_ino=")
      ? yes("autofs mounts show pipe_ino in mountinfo")
      : no("autofs is not supported: mountinfo has no pipe_ino= for it");
  });
}

// --- network namespace probes --------------------------------------------------------------------

const { NEWLINK: RTM_NEWLINK, GETLINK: RTM_GETLINK } = RTM;
const {
  IFNAME: IFLA_IFNAME,
  LINKINFO: IFLA_LINKINFO,
  NET_NS_FD: IFLA_NET_NS_FD,
  LINK_NETNSID: IFLA_LINK_NETNSID,
} = IFLA;
const { KIND: IFLA_INFO_KIND, DATA: IFLA_INFO_DATA } = IFLA_INFO;

export function linkNsid(env: ProbeEnv): ProbeResult {
  return env.fresh((c) => {
    // Two new network namespaces in the child: a veth pair across them must report its peer's nsid.
    c.call("unshare(CLONE_NEWNET)", NR.unshare, CLONE.NEWNET);
    const nsFd = c.call("open(ns/net)", NR.open, c.string("/proc/self/ns/net"), O.RDONLY, 0);
    c.call("unshare(CLONE_NEWNET)", NR.unshare, CLONE.NEWNET);
    const sk = c.call("socket(NETLINK_ROUTE)", NR.socket, AF.NETLINK, SOCK.RAW, 0);
    const pidfd = rawSyscall(NR.pidfd_open, c.pid, 0);
    if (failed(pidfd)) return no(`pidfd_open failed: ${errnoText(pidfd)}`);
    const ns = rawSyscall(NR.pidfd_getfd, pidfd, Number(nsFd), 0);
    const nl = rawSyscall(NR.pidfd_getfd, pidfd, Number(sk), 0);
    try {
      if (failed(ns)) return no(`pidfd_getfd failed: ${errnoText(ns)}`);
      if (failed(nl)) return no(`pidfd_getfd failed: ${errnoText(nl)}`);
      setReceiveTimeout(nl);
      const ifinfo = new Uint8Array(16);
      const peer = attr(
        VETH_INFO_PEER,
        new Uint8Array([...ifinfo, ...attrString(IFLA_IFNAME, "ctveth1"), ...attrS32(IFLA_NET_NS_FD, ns)]),
      );
      const create = request(RTM_NEWLINK, NLM_F.REQUEST | NLM_F.ACK | NLM_F.CREATE | 0x200, ifinfo, [
        attrString(IFLA_IFNAME, "ctveth0"),
        attrNested(IFLA_LINKINFO, [attrString(IFLA_INFO_KIND, "veth"), attrNested(IFLA_INFO_DATA, [peer])]),
      ]);
      const made = exchange(nl, create);
      if (failed(made.error)) {
        return no(`cannot create a veth pair across namespaces: ${errnoText(made.error)}`);
      }
      const links = exchange(nl, request(RTM_GETLINK, NLM_F.REQUEST | NLM_F.DUMP, ifinfo));
      if (failed(links.error)) return no(`cannot list links: ${errnoText(links.error)}`);
      const found = links.replies.some((m) =>
        m.type === RTM_NEWLINK && parseAttrs(m.payload, 16).has(IFLA_LINK_NETNSID)
      );
      return found
        ? yes("a veth whose peer is in another namespace reports IFLA_LINK_NETNSID")
        : no("NSID isn't supported for links: no IFLA_LINK_NETNSID on a veth across namespaces");
    } finally {
      closeAll(nl, ns, pidfd);
    }
  });
}
