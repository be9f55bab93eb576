/**
 * Probes that run in our own process: /proc files, and syscalls whose every trace (an fd, a lock, a
 * page) is closed or undone before the probe returns.
 */
import {
  ACCESS,
  accessPath,
  type Answer,
  closeFd,
  epollCtl,
  failed,
  failedWith,
  fcntlGetOwnerUids,
  inotifyAddWatch,
  ioctlInt,
  ioctlNone,
  kcmpEpollTfd,
  madviseScratchPage,
  memfdCreate,
  openat2WithoutHow,
  openPath,
  PAGE_IS,
  pagemapScan,
  type PagemapScanArgs,
  pipe2,
  prctlGetTidAddress,
  prctlMmMapSize,
  rawSyscall,
  readBytes,
  signalfd,
  socketpair,
  UFFD_FEATURE,
  userfaultfdApi,
  vmspliceOneByte,
  writeString,
} from "../../ffi/probe.ts";
import { CAP, MADV, NR, O, PR, TFD_IOC_SET_TICKS } from "../../ffi/syscalls.ts";
import { TUN } from "../../ffi/tun.ts";
import { SIOC_SOCKET } from "../../ffi/sockopt.ts";
import { AF } from "../../ffi/sockaddr.ts";
import { SOCK } from "../../ffi/sockcall.ts";
import { readStatus } from "../../ffi/proc.ts";
import { TTY_IOCTL } from "../../ffi/pty.ts";
import {
  answerText,
  closeAll,
  errnoText,
  no,
  type ProbeEnv,
  type ProbeResult,
  withFd,
  withOpened,
  yes,
} from "./result.ts";

const CLOEXEC = O.CLOEXEC;
const { R_OK, W_OK, F_OK } = ACCESS;

function exists(path: string): boolean {
  return accessPath(path, F_OK) === 0;
}

function fdinfo(fd: number): string {
  return Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`);
}

// --- capabilities and /proc ---------------------------------------------------------------------

const CAP_SYS_ADMIN = BigInt(CAP.SYS_ADMIN);
const CAP_CHECKPOINT_RESTORE = BigInt(CAP.CHECKPOINT_RESTORE);

export function capabilities(): ProbeResult {
  const eff = BigInt("0x" + (readStatus(Deno.pid).get("CapEff") ?? "0"));
  const has = (bit: bigint) => (eff >> bit & 1n) === 1n;
  if (has(CAP_SYS_ADMIN)) return yes("CapEff includes CAP_SYS_ADMIN");
  if (has(CAP_CHECKPOINT_RESTORE)) return yes("CapEff includes CAP_CHECKPOINT_RESTORE");
  return no(
    "neither CAP_SYS_ADMIN nor CAP_CHECKPOINT_RESTORE is in CapEff (run as root or grant one of them)",
  );
}

export function mapFilesSelf(): ProbeResult {
  const r = accessPath("/proc/self/map_files", R_OK);
  return r === 0
    ? yes("/proc/self/map_files is readable")
    : no(`/proc/self/map_files is not readable: ${answerText(r)}`);
}

export function nsLastPid(): ProbeResult {
  const r = accessPath("/proc/sys/kernel/ns_last_pid", W_OK);
  return r === 0
    ? yes("/proc/sys/kernel/ns_last_pid is writable")
    : no(`/proc/sys/kernel/ns_last_pid is not writable: ${answerText(r)}`);
}

export function ipcNextId(): ProbeResult {
  const r = accessPath("/proc/sys/kernel/sem_next_id", R_OK | W_OK);
  return r === 0
    ? yes("/proc/sys/kernel/sem_next_id is readable and writable")
    : no(`/proc/sys/kernel/sem_next_id is not readable and writable: ${answerText(r)}`);
}

export function procStat(): ProbeResult {
  const text = Deno.readTextFileSync("/proc/self/stat");
  const fields = 2 + text.slice(text.lastIndexOf(")") + 2).trim().split(" ").length;
  // Fields 45-51 (data, brk, arg and env bounds) are what a restore needs from stat.
  return fields >= 51
    ? yes(`/proc/self/stat has ${fields} fields (memory layout bounds included)`)
    : no(`/proc/self/stat has ${fields} fields; the memory layout fields (45-51) are missing`);
}

export function posixTimers(): ProbeResult {
  const r = accessPath("/proc/self/timers", R_OK);
  return r === 0
    ? yes("/proc/self/timers is readable")
    : no(`/proc/<pid>/timers is missing: ${answerText(r)}`);
}

export function nsFile(ns: string, what: string): () => ProbeResult {
  return () =>
    exists(`/proc/self/ns/${ns}`)
      ? yes(`/proc/self/ns/${ns} exists`)
      : no(`${what}: /proc/self/ns/${ns} is missing`);
}

export function timens(): ProbeResult {
  return exists("/proc/self/timens_offsets")
    ? yes("/proc/self/timens_offsets exists")
    : no("time namespaces are not supported: /proc/self/timens_offsets is missing");
}

export function nsPid(): ProbeResult {
  return readStatus(Deno.pid).has("NSpid")
    ? yes("/proc/self/status has NSpid")
    : no("/proc/self/status has no NSpid line");
}

export function userns(): ProbeResult {
  if (!exists("/proc/self/ns/user")) return no("/proc/self/ns/user is missing");
  const { r } = prctlMmMapSize();
  return r === 0
    ? yes("/proc/self/ns/user exists and prctl(PR_SET_MM_MAP_SIZE) answers")
    : no(`prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE) failed: ${answerText(r)}`);
}

// --- syscalls -----------------------------------------------------------------------------------

export function kcmp(): ProbeResult {
  return withOpened(openPath("/", O.RDONLY | O.DIRECTORY | CLOEXEC), (fd) => {
    const r = rawSyscall(NR.kcmp, Deno.pid, Deno.pid, 0, fd, fd); // KCMP_FILE, same fd: equal
    if (r === 0) return yes("kcmp(KCMP_FILE) finds an fd equal to itself");
    return no(
      failedWith(r, "ENOSYS")
        ? "the kcmp system call is not supported"
        : `kcmp(KCMP_FILE) answered ${answerText(r)}`,
    );
  }, (e) => no(`cannot open /: ${errnoText(e)}`));
}

export function prctlBasics(): ProbeResult {
  const tid = prctlGetTidAddress();
  if (failed(tid.r)) return no(`prctl(PR_GET_TID_ADDRESS) is not supported: ${errnoText(tid.r)}`);
  const map = prctlMmMapSize();
  if (failed(map.r)) {
    // Old kernels had only the single-field PR_SET_MM calls, which need CAP_SYS_RESOURCE; we do not use them.
    return no(`prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE) is not supported: ${errnoText(map.r)}`);
  }
  return yes(`PR_GET_TID_ADDRESS works; PR_SET_MM_MAP takes a ${map.size}-byte struct`);
}

export function fcntlOwnerUids(): ProbeResult {
  return withOpened(openPath("/proc/self/comm", O.RDONLY | CLOEXEC), (fd) => {
    const { r } = fcntlGetOwnerUids(fd);
    return r === 0
      ? yes("fcntl(F_GETOWNER_UIDS) works")
      : no(`fcntl(F_GETOWNER_UIDS) failed: ${answerText(r)}`);
  }, (e) => no(`cannot open /proc/self/comm: ${errnoText(e)}`));
}

export function closeRange(): ProbeResult {
  // first > last: the kernel refuses the range without closing anything.
  const r = rawSyscall(NR.close_range, 2, 1, 0);
  if (failedWith(r, "EINVAL")) return yes("close_range(2) exists (refused an empty range with EINVAL)");
  return no(
    failedWith(r, "ENOSYS")
      ? "the close_range system call is not supported"
      : `close_range answered ${answerText(r)}`,
  );
}

export function fdinfoExt(): ProbeResult {
  const missing: string[] = [];
  const seen: string[] = [];
  const expect = (what: string, ok: boolean) => (ok ? seen : missing).push(what);

  const efd = rawSyscall(NR.eventfd2, 13, CLOEXEC);
  if (failed(efd)) missing.push(`eventfd (${errnoText(efd)})`);
  else withFd(efd, (fd) => expect("eventfd", /eventfd-count:\s*d\b/.test(fdinfo(fd))));

  const pipe = pipe2(CLOEXEC);
  const ep = rawSyscall(NR.epoll_create1, CLOEXEC);
  try {
    if (failed(pipe) || failed(ep)) missing.push("epoll (cannot make a pipe or an epoll fd)");
    else if (failed(epollCtl(ep, 1, pipe[0], 1))) missing.push("epoll (EPOLL_CTL_ADD failed)");
    else expect("epoll", new RegExp(`tfd:\\s*${pipe[0]}\\b`).test(fdinfo(ep)));
  } finally {
    closeAll(ep, ...(failed(pipe) ? [] : pipe));
  }

  const sfd = signalfd(1n << 9n, CLOEXEC); // SIGUSR1
  if (failed(sfd)) missing.push(`signalfd (${errnoText(sfd)})`);
  else withFd(sfd, (fd) => expect("signalfd", /sigmask:\s*0*200\b/.test(fdinfo(fd))));

  const ifd = rawSyscall(NR.inotify_init1, CLOEXEC);
  if (failed(ifd)) missing.push(`inotify (${errnoText(ifd)})`);
  else {
    withFd(ifd, (fd) => {
      const wd = inotifyAddWatch(fd, "/", 0xfff);
      expect("inotify", !failed(wd) && /inotify wd:/.test(fdinfo(fd)));
    });
  }
  return missing.length
    ? no(`/proc/PID/fdinfo lacks what criu-ts reads for: ${missing.join(", ")}`)
    : yes(`/proc/PID/fdinfo describes ${seen.join(", ")}`);
}

export function unalignedVmsplice(): ProbeResult {
  const p = pipe2(CLOEXEC | O.NONBLOCK);
  if (failed(p)) return no(`cannot make a pipe: ${errnoText(p)}`);
  try {
    const r = vmspliceOneByte(p[1], 8 | 2); // SPLICE_F_GIFT | SPLICE_F_NONBLOCK
    return r === 1
      ? yes("vmsplice of one unaligned byte works")
      : no(`unaligned vmsplice failed: ${failed(r) ? errnoText(r) : `wrote ${r} bytes`}`);
  } finally {
    closeAll(...p);
  }
}

const { TIOCGPTN, TIOCSPTLCK } = TTY_IOCTL;

export function tty(): ProbeResult {
  const master = openPath("/dev/ptmx", O.RDWR | O.NOCTTY | CLOEXEC);
  if (failed(master)) return no(`cannot open /dev/ptmx: ${errnoText(master)}`);
  return withFd(master, (fd) => {
    if (failed(ioctlInt(fd, TIOCSPTLCK, 1).r)) return no("cannot lock a pty master (TIOCSPTLCK)");
    const ptn = ioctlInt(fd, TIOCGPTN, 0);
    if (failed(ptn.r)) return no(`cannot get the pty number: ${errnoText(ptn.r)}`);
    const slave = openPath(`/dev/pts/${ptn.value}`, O.RDWR | O.NOCTTY | CLOEXEC);
    if (!failed(slave)) {
      closeFd(slave);
      return no(`opened /dev/pts/${ptn.value} although its master is locked`);
    }
    return failedWith(slave, "EIO")
      ? yes("ptys work and a locked pty refuses to open")
      : no(`unexpected error opening a locked pty: ${errnoText(slave)}`);
  });
}

const TUNSETIFINDEX = TUN.SETIFINDEX;
const SIOCGSKNS = SIOC_SOCKET.GSKNS;

export function tun(): ProbeResult {
  const fd = openPath("/dev/net/tun", O.RDWR | CLOEXEC);
  if (failed(fd)) return no(`cannot open /dev/net/tun: ${errnoText(fd)}`);
  return withFd(fd, (fd) => {
    const { r } = ioctlInt(fd, TUNSETIFINDEX, 13);
    return r === 0 ? yes("/dev/net/tun accepts TUNSETIFINDEX") : no(`TUNSETIFINDEX failed: ${answerText(r)}`);
  });
}

export function tunNetns(): ProbeResult {
  const fd = openPath("/dev/net/tun", O.RDONLY | CLOEXEC);
  if (failed(fd)) return no(`cannot open /dev/net/tun: ${errnoText(fd)}`);
  return withFd(fd, (fd) => {
    const ns = ioctlNone(fd, SIOCGSKNS);
    if (failed(ns)) return no(`SIOCGSKNS on a tun fd failed: ${errnoText(ns)}`);
    closeFd(ns);
    return yes("SIOCGSKNS on a tun fd returns its network namespace");
  });
}

export function timerfd(): ProbeResult {
  const fd = rawSyscall(NR.timerfd_create, 1, CLOEXEC); // CLOCK_MONOTONIC
  if (failed(fd)) return no(`timerfd_create failed: ${errnoText(fd)}`);
  return withFd(fd, (fd) => {
    const r = ioctlNone(fd, TFD_IOC_SET_TICKS); // NULL argument: EFAULT when the ioctl exists
    return failedWith(r, "EFAULT")
      ? yes("timerfd has the TFD_IOC_SET_TICKS ioctl")
      : no(`no timerfd support for restore (TFD_IOC_SET_TICKS: ${answerText(r)})`);
  });
}

export function mntId(): ProbeResult {
  return withOpened(openPath("/", O.RDONLY | O.DIRECTORY | CLOEXEC), (fd) => {
    return /^mnt_id:/m.test(fdinfo(fd))
      ? yes("fdinfo has mnt_id")
      : no("fdinfo does not contain the mnt_id field");
  }, (e) => no(`cannot open /: ${errnoText(e)}`));
}

export function fdinfoLock(): ProbeResult {
  return withOpened(openPath("/proc/locks", O.RDONLY | CLOEXEC), (fd) => {
    const r = rawSyscall(NR.flock, fd, 1); // LOCK_SH, released by the close
    if (failed(r)) return no(`cannot take a lock: ${errnoText(r)}`);
    return /^lock:/m.test(fdinfo(fd))
      ? yes("fdinfo shows file locks")
      : no("fdinfo does not contain the lock field");
  }, (e) => no(`cannot open /proc/locks: ${errnoText(e)}`));
}

export function kcmpEpoll(): ProbeResult {
  const p = pipe2(CLOEXEC);
  if (failed(p)) return no(`cannot make a pipe: ${errnoText(p)}`);
  const ep = rawSyscall(NR.epoll_create1, CLOEXEC);
  try {
    if (failed(ep)) return no(`cannot make an epoll fd: ${errnoText(ep)}`);
    if (failed(epollCtl(ep, 1, p[0], 1 | 4))) return no("EPOLL_CTL_ADD failed");
    const r = kcmpEpollTfd(Deno.pid, p[0], ep, p[0], 0);
    return r === 0
      ? yes("kcmp(KCMP_EPOLL_TFD) finds an epoll target")
      : no(`kcmp(KCMP_EPOLL_TFD): ${answerText(r)}`);
  } finally {
    closeAll(ep, ...p);
  }
}

export function memfd(): ProbeResult {
  const fd = memfdCreate("criu-ts-check", 1); // MFD_CLOEXEC
  if (failed(fd)) return no(`memfd_create failed: ${errnoText(fd)}`);
  closeFd(fd);
  return yes("memfd_create works");
}

export function memfdHugetlb(): ProbeResult {
  const fd = memfdCreate("criu-ts-check", 1 | 4); // MFD_CLOEXEC | MFD_HUGETLB
  if (failed(fd)) return no(`memfd_create(MFD_HUGETLB) failed: ${errnoText(fd)}`);
  closeFd(fd);
  return yes("memfd_create(MFD_HUGETLB) works");
}

export function openat2(): ProbeResult {
  const r = openat2WithoutHow();
  return failedWith(r, "ENOSYS")
    ? no("the openat2 system call is not supported")
    : yes(`openat2 exists (${answerText(r)} for a NULL how)`);
}

export function pidfdStore(): ProbeResult {
  const pidfd = rawSyscall(NR.pidfd_open, Deno.pid, 0);
  if (failed(pidfd)) return no(`pidfd_open is not supported: ${errnoText(pidfd)}`);
  const pair = socketpair(AF.UNIX, SOCK.DGRAM | CLOEXEC, 0);
  let stolen: Answer | undefined;
  try {
    if (failed(pair)) return no(`cannot make a socket pair: ${errnoText(pair)}`);
    if (writeString(pair[0], "1984") !== 4) return no("cannot write to a socket pair");
    stolen = rawSyscall(NR.pidfd_getfd, pidfd, pair[1], 0);
    if (failed(stolen)) return no(`pidfd_getfd is not supported: ${errnoText(stolen)}`);
    const got = new TextDecoder().decode(readBytes(stolen, 16).bytes);
    return got === "1984"
      ? yes("pidfd_open and pidfd_getfd work")
      : no("pidfd_getfd returned a different file");
  } finally {
    closeAll(stolen, pidfd, ...(failed(pair) ? [] : pair));
  }
}

export function timerCrIds(): ProbeResult {
  const r = rawSyscall(NR.prctl, PR.TIMER_CREATE_RESTORE_IDS, PR.TIMER_CREATE_RESTORE_IDS_GET, 0, 0, 0);
  return !failed(r)
    ? yes("prctl(PR_TIMER_CREATE_RESTORE_IDS) exists")
    : no(`prctl(PR_TIMER_CREATE_RESTORE_IDS) is not supported: ${errnoText(r)}`);
}

// --- userfaultfd ---------------------------------------------------------------------------------

/** userfaultfd's answer to UFFDIO_API with no feature asked: what the kernel offers. */
function uffdFeatures(env: ProbeEnv): { r: Answer; features: bigint } {
  return env.once("uffd", () => userfaultfdApi(CLOEXEC | O.NONBLOCK, 0n));
}

export function uffd(env: ProbeEnv): ProbeResult {
  const { r, features } = uffdFeatures(env);
  return r === 0
    ? yes(`userfaultfd works (features 0x${features.toString(16)})`)
    : no(`UFFD is not supported: ${answerText(r)}`);
}

export function uffdNoncoop(env: ProbeEnv): ProbeResult {
  const { r, features } = uffdFeatures(env);
  if (r !== 0) return no(`UFFD is not supported: ${answerText(r)}`);
  const need = UFFD_FEATURE.EVENT_FORK | UFFD_FEATURE.EVENT_REMAP | UFFD_FEATURE.EVENT_REMOVE |
    UFFD_FEATURE.EVENT_UNMAP;
  return (features & need) === need
    ? yes("userfaultfd reports fork, remap, remove and unmap events")
    : no(`non-cooperative UFFD is not supported (features 0x${features.toString(16)})`);
}

// --- PAGEMAP_SCAN --------------------------------------------------------------------------------

/** One PAGEMAP_SCAN of our own address space asking for the first present page. */
function scanSelf(extraReturn: number): Answer {
  return withOpened(openPath("/proc/self/pagemap", O.RDONLY | CLOEXEC), (fd) => {
    const args: PagemapScanArgs = {
      start: 0n,
      end: (1n << 47n) - 4096n, // the top of the smallest x86_64 user address space
      flags: 0,
      categoryInverted: PAGE_IS.PFNZERO | PAGE_IS.FILE,
      categoryMask: PAGE_IS.PFNZERO | PAGE_IS.FILE,
      categoryAnyofMask: PAGE_IS.PRESENT | PAGE_IS.SWAPPED,
      returnMask: PAGE_IS.PRESENT | PAGE_IS.SWAPPED | PAGE_IS.SOFT_DIRTY | extraReturn,
      maxPages: 1,
    };
    return pagemapScan(fd, args, 1).r;
  }, (e) => e);
}

export function pagemapScanFeature(env: ProbeEnv): ProbeResult {
  const r = env.once("scan", () => scanSelf(0));
  return !failed(r)
    ? yes("ioctl(PAGEMAP_SCAN) on /proc/self/pagemap works")
    : no(`ioctl(PAGEMAP_SCAN) is not supported: ${errnoText(r)}`);
}

export function pagemapScanGuardPages(): ProbeResult {
  const r = scanSelf(PAGE_IS.GUARD);
  const guards = madviseScratchPage(MADV.GUARD_INSTALL) === 0;
  if (!failed(r)) return yes("PAGEMAP_SCAN reports guard regions (PAGE_IS_GUARD)");
  return no(
    `PAGEMAP_SCAN does not take PAGE_IS_GUARD (${errnoText(r)})` +
      (guards ? "; madvise(MADV_GUARD_INSTALL) works, so a task using guard regions cannot be dumped" : ""),
  );
}

// --- things criu-ts itself does not do -----------------------------------------------------------

export function notInCriuTs(what: string): () => ProbeResult {
  return () => no(what);
}

export function hasIptLegacy(): ProbeResult {
  const found: string[] = [];
  const names = exists("/proc/sys/net/ipv6") ? ["iptables", "ip6tables"] : ["iptables"];
  for (const base of names) {
    const bin = [`${base}-save`, `${base}-legacy-save`].find((b) => legacyBackend(b));
    if (!bin) {
      return no(`no ${base}-save or ${base}-legacy-save using the legacy (non-nf_tables) backend in PATH`);
    }
    found.push(bin);
  }
  return yes(`legacy iptables found: ${found.join(", ")}`);
}

function legacyBackend(bin: string): boolean {
  const dirs = (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":");
  const path = dirs.map((d) => `${d}/${bin}`).find((p) => accessPath(p, 1) === 0);
  if (!path) return false;
  try {
    const out = new Deno.Command(path, { args: ["-V"], stdout: "piped", stderr: "null" }).outputSync();
    return out.success && !new TextDecoder().decode(out.stdout).includes("nf_tables");
  } catch {
    return false;
  }
}

export function apparmorStacking(): ProbeResult {
  const dir = "/sys/kernel/security/apparmor/features/domain";
  let stack: string;
  let version: string;
  try {
    stack = Deno.readTextFileSync(`${dir}/stack`).trim();
    version = Deno.readTextFileSync(`${dir}/version`).trim();
  } catch {
    return no(`AppArmor is not active here (${dir} cannot be read)`);
  }
  if (stack !== "yes") {
    return no(`AppArmor stacking is disabled (${dir}/stack says ${JSON.stringify(stack)})`);
  }
  const [major, minor] = version.split(".").map(Number);
  const ok = (major ?? 0) > 1 || (major === 1 && (minor ?? 0) >= 2);
  return ok
    ? yes(`AppArmor stacking is on (domain version ${version})`)
    : no(`AppArmor domain version ${version} is older than 1.2`);
}

/** Whether AppArmor is one of the active LSMs (CRIU checks stacking only then). */
export function apparmorActive(): boolean {
  try {
    return Deno.readTextFileSync("/sys/kernel/security/lsm").split(",").includes("apparmor");
  } catch {
    return exists("/sys/kernel/security/apparmor");
  }
}
