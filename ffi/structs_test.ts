import assert from "node:assert/strict";
import {
  BPF_RET_K,
  CAP_DATA_SIZE,
  CAP_HEADER_SIZE,
  capData,
  capHeader,
  CLONE_ARGS_SIZE,
  cloneArgs,
  CMSG_HDR_SIZE,
  cmsgSpace,
  EPOLL_EVENT_SIZE,
  epollEvent,
  FD_PAIR_SIZE,
  int32Bytes,
  INT_SIZE,
  IOVEC_SIZE,
  iovecs,
  itimer,
  ITIMER_SIZE,
  KERNEL_SIGSET_SIZE,
  KERNEL_TERMIOS_SIZE,
  kernelSigaction,
  kernelSigset,
  KSIGACTION_SIZE,
  msghdr,
  MSGHDR_SIZE,
  parseFdPair,
  parseItimer,
  parseKernelSigaction,
  parseKernelTermios,
  parseScmRights,
  parseStackT,
  parseTimespec,
  parseWinsize,
  parseXsave,
  PRCTL_MM_MAP_SIZE,
  prctlMmMap,
  readInt32,
  readU64,
  REG_NAMES,
  Regs,
  SCHED_PARAM_SIZE,
  schedParam,
  SCM_RIGHTS,
  scmRights,
  SECCOMP_RET_ALLOW,
  SECCOMP_SET_MODE_FILTER,
  sigevent,
  SIGEVENT_SIZE,
  siginfo,
  SIGINFO_SIZE,
  siginfoSigno,
  SOCK_FILTER_SIZE,
  SOCK_FPROG_SIZE,
  SOCKADDR_UN_SIZE,
  sockaddrUn,
  sockFilter,
  sockFprog,
  STACK_T_SIZE,
  stackT,
  timespec,
  TIMESPEC_SIZE,
  UFFD_API,
  UFFDIO_API_SIZE,
  UFFDIO_REGISTER_MODE,
  UFFDIO_REGISTER_SIZE,
  uffdioApi,
  uffdioRegister,
  USER_REGS_SIZE,
  WINSIZE_SIZE,
  writeXsave,
  XSAVE_COMPONENTS,
  type XsaveComponent,
  xsaveOffset,
} from "./structs.ts";
import { FD_CLOEXEC, PR, PRIO_PROCESS, RLIMIT, SCHED, SIG, SS } from "./syscalls.ts";
import { cFacts } from "../tests/lib/cfacts.ts";
import { AF, IFLA, IFLA_INFO, RTM, sockDiagDumpRequest, VETH_INFO_PEER } from "./netlink.ts";
import { MSG, SOCK } from "./sockcall.ts";
import { AF as ADDRESS_FAMILY } from "./sockaddr.ts";
import { IPPROTO } from "./sock_diag.ts";
import { TCP_STATE } from "./inet_sock.ts";
import { TCP_REPAIR_MODE } from "./sockopt.ts";
import { TTY_IOCTL } from "./pty.ts";
import { F_ADD_SEALS, F_SEAL_SEAL, MFD } from "./memfd.ts";
import { FAN_MARK, FAN_NONBLOCK } from "./fanotify.ts";
import { SIOC_SOCKET } from "./sockopt.ts";
import { TUN } from "./tun.ts";

Deno.test("user_regs_struct is 27 slots with orig_ax at 15, ip at 16, fs_base at 21", () => {
  assert.equal(USER_REGS_SIZE, 216);
  assert.equal(REG_NAMES.indexOf("orig_ax"), 15);
  assert.equal(REG_NAMES.indexOf("ip"), 16);
  assert.equal(REG_NAMES.indexOf("fs_base"), 21);
  const r = new Regs();
  r.set("orig_ax", -1);
  assert.equal(r.getSigned("orig_ax"), -1n);
  assert.equal(new DataView(r.bytes().buffer).getBigUint64(15 * 8, true), 0xffffffffffffffffn);
});

Deno.test("iovec is 16 bytes: base then length", () => {
  assert.equal(IOVEC_SIZE, 16);
  const v = iovecs([{ base: 0x1000n, len: 7 }]);
  assert.deepEqual([...v], [0x1000n, 7n]);
});

Deno.test("clone_args is 88 bytes with set_tid at 64 and set_tid_size at 72", () => {
  assert.equal(CLONE_ARGS_SIZE, 88);
  const b = cloneArgs({ flags: 0x8000n, exitSignal: 17, setTid: 0xabcn, setTidSize: 1 });
  const v = new DataView(b.buffer);
  assert.equal(b.byteLength, 88);
  assert.equal(v.getBigUint64(0, true), 0x8000n);
  assert.equal(v.getBigUint64(32, true), 17n);
  assert.equal(v.getBigUint64(64, true), 0xabcn);
  assert.equal(v.getBigUint64(72, true), 1n);
});

Deno.test("prctl_mm_map is 104 bytes with auxv_size at 96 and exe_fd at 100", () => {
  assert.equal(PRCTL_MM_MAP_SIZE, 104);
  const z = 0n;
  const b = prctlMmMap({
    startCode: 1n,
    endCode: z,
    startData: z,
    endData: z,
    startBrk: z,
    brk: z,
    startStack: z,
    argStart: z,
    argEnd: z,
    envStart: z,
    envEnd: 11n,
    auxv: 0x55n,
    auxvSize: 48,
    exeFd: -1,
  });
  const v = new DataView(b.buffer);
  assert.equal(v.getBigUint64(0, true), 1n);
  assert.equal(v.getBigUint64(80, true), 11n);
  assert.equal(v.getBigUint64(88, true), 0x55n);
  assert.equal(v.getUint32(96, true), 48);
  assert.equal(v.getInt32(100, true), -1);
});

Deno.test("siginfo is 128 bytes and kernel sigaction 32", () => {
  assert.equal(SIGINFO_SIZE, 128);
  assert.equal(KSIGACTION_SIZE, 32);
});

Deno.test("sockaddr_un holds family 1 and a NUL-terminated path", () => {
  assert.equal(SOCKADDR_UN_SIZE, 110);
  const { addr, len } = sockaddrUn("/run/x.sock");
  assert.equal(new DataView(addr.buffer).getUint16(0, true), 1);
  assert.equal(len, 2 + 11 + 1);
  assert.throws(() => sockaddrUn("/" + "x".repeat(200)), /at most 107/);
});

Deno.test("msghdr is 56 bytes and SCM_RIGHTS round-trips fds", () => {
  assert.equal(MSGHDR_SIZE, 56);
  assert.equal(CMSG_HDR_SIZE, 16);
  assert.equal(cmsgSpace(4), 24);
  const m = msghdr(1, 0x1000n, { addr: 0x2000n, len: 24 });
  const v = new DataView(m.buffer);
  assert.equal(v.getBigUint64(16, true), 0x1000n);
  assert.equal(v.getBigUint64(24, true), 1n);
  assert.equal(v.getBigUint64(32, true), 0x2000n);
  const c = scmRights([5, 9]);
  assert.deepEqual(parseScmRights(c, c.byteLength), [5, 9]);
});

Deno.test("epoll_event is 12 packed bytes: events at 0, data at 4", () => {
  assert.equal(EPOLL_EVENT_SIZE, 12);
  const v = new DataView(epollEvent(0x80000001, 0x1122334455667788n).buffer);
  assert.equal(v.byteLength, 12);
  assert.equal(v.getUint32(0, true), 0x80000001);
  assert.equal(v.getBigUint64(4, true), 0x1122334455667788n);
});

Deno.test("kernel termios is 36 bytes: four flag words, c_line at 16, 19 control characters from 17", () => {
  assert.equal(KERNEL_TERMIOS_SIZE, 36);
  const b = new Uint8Array(36);
  const v = new DataView(b.buffer);
  [1, 2, 3, 4].forEach((x, i) => v.setUint32(4 * i, x, true));
  b[16] = 9;
  for (let i = 0; i < 19; i++) b[17 + i] = 100 + i;
  const t = parseKernelTermios(b);
  assert.deepEqual([t.iflag, t.oflag, t.cflag, t.lflag, t.line], [1, 2, 3, 4, 9]);
  assert.equal(t.cc.length, 19);
  assert.equal(t.cc[18], 118);
});

Deno.test("winsize is four u16: rows, columns, x and y pixels", () => {
  assert.equal(WINSIZE_SIZE, 8);
  const b = new Uint8Array(new Uint16Array([24, 80, 640, 480]).buffer);
  assert.deepEqual(parseWinsize(b), { row: 24, col: 80, xpixel: 640, ypixel: 480 });
});

Deno.test("kernel sigaction, sigset, stack_t and siginfo lay out as the headers say", async () => {
  const f = await cFacts(["signal.h"], {
    stack: "sizeof(stack_t)",
    stackFlags: "offsetof(stack_t, ss_flags)",
    stackSize: "offsetof(stack_t, ss_size)",
    siginfo: "sizeof(siginfo_t)",
    siginfoCode: "offsetof(siginfo_t, si_code)",
    SS_ONSTACK: "SS_ONSTACK",
    SS_DISABLE: "SS_DISABLE",
    SIGUSR1: "SIGUSR1",
  });
  assert.equal(STACK_T_SIZE, f.stack);
  assert.equal(SIGINFO_SIZE, f.siginfo);
  assert.deepEqual([SS.ONSTACK, SS.DISABLE], [f.SS_ONSTACK, f.SS_DISABLE]);
  assert.equal(SIG.USR1, f.SIGUSR1);
  const s = stackT({ sp: 0x7000n, flags: SS.AUTODISARM, size: 0x2000n });
  const v = new DataView(s.buffer);
  assert.equal(v.getUint32(f.stackFlags!, true), 0x80000000);
  assert.equal(v.getBigUint64(f.stackSize!, true), 0x2000n);
  assert.deepEqual(parseStackT(s), { sp: 0x7000n, flags: 0x80000000, size: 0x2000n });
  const info = siginfo(SIG.USR1, -6);
  assert.equal(siginfoSigno(info), SIG.USR1);
  assert.equal(new DataView(info.buffer).getInt32(f.siginfoCode!, true), -6);
  const act = { handler: 1n, flags: 0x4000000n, restorer: 3n, mask: 1n << 63n };
  assert.equal(kernelSigaction(act).byteLength, KSIGACTION_SIZE);
  assert.deepEqual(parseKernelSigaction(kernelSigaction(act)), act);
  assert.equal(KERNEL_SIGSET_SIZE, 8);
  assert.equal(new DataView(kernelSigset(-1n).buffer).getBigUint64(0, true), 0xffffffffffffffffn);
});

Deno.test("sched_param, timespec and sigevent lay out as the headers say", async () => {
  const f = await cFacts(["sched.h", "time.h", "signal.h", "sys/resource.h", "fcntl.h"], {
    schedParam: "sizeof(struct sched_param)",
    timespec: "sizeof(struct timespec)",
    nsec: "offsetof(struct timespec, tv_nsec)",
    sigevent: "sizeof(struct sigevent)",
    signo: "offsetof(struct sigevent, sigev_signo)",
    notify: "offsetof(struct sigevent, sigev_notify)",
    tid: "offsetof(struct sigevent, _sigev_un._tid)",
    OTHER: "SCHED_OTHER",
    FIFO: "SCHED_FIFO",
    RR: "SCHED_RR",
    BATCH: "SCHED_BATCH",
    IDLE: "SCHED_IDLE",
    RESET_ON_FORK: "SCHED_RESET_ON_FORK",
    PRIO_PROCESS: "PRIO_PROCESS",
    RLIMIT_NOFILE: "RLIMIT_NOFILE",
    FD_CLOEXEC: "FD_CLOEXEC",
  });
  assert.equal(SCHED_PARAM_SIZE, f.schedParam);
  assert.deepEqual([...schedParam(42)], [...new Uint8Array(new Int32Array([42]).buffer)]);
  assert.equal(TIMESPEC_SIZE, f.timespec);
  const t = timespec(3_000_000_007n);
  assert.equal(new DataView(t.buffer).getBigInt64(0, true), 3n);
  assert.equal(new DataView(t.buffer).getBigInt64(f.nsec!, true), 7n);
  assert.equal(parseTimespec(t), 3_000_000_007n);
  assert.equal(SIGEVENT_SIZE, f.sigevent);
  const e = new DataView(sigevent({ value: 0x55n, signo: 10, notify: 4, threadId: 1234 }).buffer);
  assert.equal(e.getBigUint64(0, true), 0x55n);
  assert.equal(e.getInt32(f.signo!, true), 10);
  assert.equal(e.getInt32(f.notify!, true), 4);
  assert.equal(e.getInt32(f.tid!, true), 1234);
  const { DEADLINE: _, ...settable } = SCHED;
  assert.deepEqual(settable, {
    OTHER: f.OTHER,
    FIFO: f.FIFO,
    RR: f.RR,
    BATCH: f.BATCH,
    IDLE: f.IDLE,
    RESET_ON_FORK: f.RESET_ON_FORK,
  });
  assert.equal(PRIO_PROCESS, f.PRIO_PROCESS);
  assert.equal(RLIMIT.NOFILE, f.RLIMIT_NOFILE);
  assert.equal(FD_CLOEXEC, f.FD_CLOEXEC);
});

Deno.test("itimerspec, itimerval, the capability header and data, and int fds[2] lay out as the headers say", async () => {
  const f = await cFacts(["time.h", "sys/time.h", "linux/capability.h"], {
    itimerspec: "sizeof(struct itimerspec)",
    itimerspecValue: "offsetof(struct itimerspec, it_value)",
    itimerval: "sizeof(struct itimerval)",
    itimervalValue: "offsetof(struct itimerval, it_value)",
    capHeader: "sizeof(struct __user_cap_header_struct)",
    capPid: "offsetof(struct __user_cap_header_struct, pid)",
    capData: "2 * sizeof(struct __user_cap_data_struct)",
    capPermitted: "offsetof(struct __user_cap_data_struct, permitted)",
    version3: "_LINUX_CAPABILITY_VERSION_3",
  });
  assert.deepEqual([ITIMER_SIZE, ITIMER_SIZE], [f.itimerspec, f.itimerval]);
  const t = { intervalSec: 1n, intervalFrac: 2n, valueSec: 3n, valueFrac: 4n };
  const b = itimer(t);
  assert.equal(new DataView(b.buffer).getBigInt64(f.itimerspecValue!, true), 3n);
  assert.equal(f.itimervalValue, f.itimerspecValue);
  assert.deepEqual(parseItimer(b), t);
  assert.deepEqual([CAP_HEADER_SIZE, CAP_DATA_SIZE], [f.capHeader, f.capData]);
  const h = new DataView(capHeader(77).buffer);
  assert.equal(h.getUint32(0, true), f.version3);
  assert.equal(h.getInt32(f.capPid!, true), 77);
  const d = new DataView(capData({ effective: [1, 2], permitted: [3, 4], inheritable: [5] }).buffer);
  assert.equal(d.getUint32(f.capPermitted!, true), 3);
  assert.equal(d.getUint32(12 + f.capPermitted!, true), 4, "the high words follow in a second struct");
  assert.equal(d.getUint32(20, true), 0, "a missing word is 0");
  assert.equal(readInt32(int32Bytes(-5)), -5);
  assert.equal(INT_SIZE, 4);
  assert.deepEqual(parseFdPair(new Uint8Array(new Int32Array([7, 9]).buffer)), [7, 9]);
  assert.equal(FD_PAIR_SIZE, 8);
  assert.equal(readU64(new Uint8Array(new BigUint64Array([1n << 63n]).buffer)), 1n << 63n);
});

Deno.test("the XSAVE legacy region is user_fpregs_struct: control words, x87, SSE, padding", async () => {
  const f = await cFacts(["sys/user.h"], {
    cwd: "offsetof(struct user_fpregs_struct, cwd)",
    fop: "offsetof(struct user_fpregs_struct, fop)",
    rdp: "offsetof(struct user_fpregs_struct, rdp)",
    mxcrMask: "offsetof(struct user_fpregs_struct, mxcr_mask)",
    st: "offsetof(struct user_fpregs_struct, st_space)",
    xmm: "offsetof(struct user_fpregs_struct, xmm_space)",
    padding: "offsetof(struct user_fpregs_struct, padding)",
    legacy: "sizeof(struct user_fpregs_struct)",
  });
  assert.equal(f.legacy, 512);
  const b = new Uint8Array(1024);
  const v = new DataView(b.buffer);
  v.setUint16(f.cwd!, 0x37f, true);
  v.setUint16(f.fop!, 7, true);
  v.setBigUint64(f.rdp!, 0x1234n, true);
  v.setUint32(f.mxcrMask!, 0xffff, true);
  v.setUint32(f.st!, 11, true);
  v.setUint32(f.xmm!, 22, true);
  v.setUint32(f.padding!, 33, true);
  const x = parseXsave(b);
  assert.deepEqual([x.fx.cwd, x.fx.fop, x.fx.rdp, x.fx.mxcsrMask], [0x37f, 7, 0x1234n, 0xffff]);
  assert.deepEqual([x.fx.stSpace[0], x.fx.xmmSpace[0], x.fx.padding[0]], [11, 22, 33]);
  const back = writeXsave(new Uint8Array(1024), x.fx);
  assert.deepEqual(back.subarray(0, f.padding!), b.subarray(0, f.padding!));
});

// The standard-format offset of each XSAVE component is what CPUID leaf 0xD says, which differs
// between CPUs (an AMD EPYC without MPX: opmask at 832, ZMM_Hi256 at 896, Hi16_ZMM at 1408).
Deno.test("each XSAVE component sits where CPUID leaf 0xD puts it on this CPU", async () => {
  const cpuid = (bit: number, reg: "a" | "b") =>
    `({ unsigned a, b, c, d; __cpuid_count(0xd, ${bit}, a, b, c, d); ${reg}; })`;
  const facts: Record<string, string> = {};
  for (const [name, c] of Object.entries(XSAVE_COMPONENTS)) {
    facts[`${name}Size`] = cpuid(c.bit, "a");
    facts[`${name}Offset`] = cpuid(c.bit, "b");
  }
  const f = await cFacts(["cpuid.h"], facts);
  let checked = 0;
  for (const [name, c] of Object.entries(XSAVE_COMPONENTS)) {
    const offset = xsaveOffset(name as XsaveComponent);
    if (f[`${name}Size`] === 0) { // a component this CPU does not have
      assert.equal(offset, undefined, `${name} is absent`);
      continue;
    }
    assert.equal(offset, f[`${name}Offset`], `${name} offset`);
    assert.equal(c.wordSize * c.words, f[`${name}Size`], `${name} size`);
    checked++;
  }
  assert.ok(checked > 0, "this CPU told of no XSAVE component at all");
});

Deno.test("parseXsave() and writeXsave() put each component at this CPU's offset", () => {
  const opmask = xsaveOffset("opmask");
  if (opmask === undefined) return; // no AVX-512 here: nothing beyond AVX to place
  const area = new Uint8Array(opmask + 64);
  const v = new DataView(area.buffer);
  v.setBigUint64(512, 0x23n, true); // xstate_bv: x87, SSE, opmask
  for (let i = 0; i < 8; i++) v.setBigUint64(opmask + 8 * i, BigInt(0x100 + i), true);
  const x = parseXsave(area);
  assert.deepEqual(x.extended?.components.opmask, Array.from({ length: 8 }, (_, i) => BigInt(0x100 + i)));
  const back = writeXsave(new Uint8Array(area.length), x.fx, x.extended);
  assert.deepEqual([...back.subarray(512)], [...area.subarray(512)]);
});

Deno.test("sock_filter and sock_fprog are laid out as <linux/filter.h> says, with the seccomp constants", async () => {
  const f = await cFacts(["linux/filter.h", "linux/seccomp.h"], {
    filter: "sizeof(struct sock_filter)",
    jt: "offsetof(struct sock_filter, jt)",
    jf: "offsetof(struct sock_filter, jf)",
    k: "offsetof(struct sock_filter, k)",
    fprog: "sizeof(struct sock_fprog)",
    progFilter: "offsetof(struct sock_fprog, filter)",
    retK: "BPF_RET | BPF_K",
    allow: "SECCOMP_RET_ALLOW",
    setFilter: "SECCOMP_SET_MODE_FILTER",
  });
  assert.deepEqual([SOCK_FILTER_SIZE, SOCK_FPROG_SIZE], [f.filter, f.fprog]);
  assert.deepEqual([BPF_RET_K, SECCOMP_RET_ALLOW, SECCOMP_SET_MODE_FILTER], [f.retK, f.allow, f.setFilter]);
  const insn = new DataView(sockFilter(0x15, 1, 2, 0xabcdef).buffer);
  assert.deepEqual(
    [insn.getUint16(0, true), insn.getUint8(f.jt!), insn.getUint8(f.jf!), insn.getUint32(f.k!, true)],
    [0x15, 1, 2, 0xabcdef],
  );
  const prog = new DataView(sockFprog(3, 0x7f0000001000n).buffer);
  assert.deepEqual([prog.getUint16(0, true), prog.getBigUint64(f.progFilter!, true)], [3, 0x7f0000001000n]);
});

Deno.test("uffdio_api and uffdio_register are laid out as <linux/userfaultfd.h> says", async () => {
  const f = await cFacts(["linux/userfaultfd.h"], {
    api: "sizeof(struct uffdio_api)",
    features: "offsetof(struct uffdio_api, features)",
    register: "sizeof(struct uffdio_register)",
    len: "offsetof(struct uffdio_register, range.len)",
    mode: "offsetof(struct uffdio_register, mode)",
    version: "UFFD_API",
    missing: "UFFDIO_REGISTER_MODE_MISSING",
    wp: "UFFDIO_REGISTER_MODE_WP",
  });
  assert.deepEqual([UFFDIO_API_SIZE, UFFDIO_REGISTER_SIZE], [f.api, f.register]);
  assert.deepEqual([UFFD_API, UFFDIO_REGISTER_MODE.MISSING, UFFDIO_REGISTER_MODE.WP].map(Number), [
    f.version,
    f.missing,
    f.wp,
  ]);
  const api = new DataView(uffdioApi(0x8000n).buffer);
  assert.deepEqual([api.getBigUint64(0, true), api.getBigUint64(f.features!, true)], [UFFD_API, 0x8000n]);
  const reg = new DataView(uffdioRegister(0x1000n, 0x4000n, UFFDIO_REGISTER_MODE.WP).buffer);
  assert.deepEqual(
    [reg.getBigUint64(0, true), reg.getBigUint64(f.len!, true), reg.getBigUint64(f.mode!, true)],
    [0x1000n, 0x4000n, 2n],
  );
});

Deno.test("the probes' netlink requests are laid out as <linux/netlink.h> and the diag headers say", async () => {
  const f = await cFacts(
    [
      "sys/socket.h",
      "linux/netlink.h",
      "linux/sock_diag.h",
      "linux/inet_diag.h",
      "linux/unix_diag.h",
      "linux/packet_diag.h",
      "linux/netlink_diag.h",
    ],
    {
      hdr: "sizeof(struct nlmsghdr)",
      type: "offsetof(struct nlmsghdr, nlmsg_type)",
      flags: "offsetof(struct nlmsghdr, nlmsg_flags)",
      seq: "offsetof(struct nlmsghdr, nlmsg_seq)",
      inet: "sizeof(struct inet_diag_req_v2)",
      inetStates: "offsetof(struct inet_diag_req_v2, idiag_states)",
      unix: "sizeof(struct unix_diag_req)",
      unixStates: "offsetof(struct unix_diag_req, udiag_states)",
      packet: "sizeof(struct packet_diag_req)",
      netlink: "sizeof(struct netlink_diag_req)",
      protoAll: "NDIAG_PROTO_ALL",
      byFamily: "SOCK_DIAG_BY_FAMILY",
      dump: "NLM_F_REQUEST | NLM_F_DUMP",
      cmsgCloexec: "MSG_CMSG_CLOEXEC",
    },
  );
  const header = (m: Uint8Array<ArrayBuffer>) => {
    const v = new DataView(m.buffer);
    return [
      v.getUint32(0, true),
      v.getUint16(f.type!, true),
      v.getUint16(f.flags!, true),
      v.getUint32(f.seq!, true),
    ];
  };
  const inet = sockDiagDumpRequest(AF.INET, 6);
  assert.deepEqual(header(inet), [f.hdr! + f.inet!, f.byFamily, f.dump, 1]);
  assert.equal(new DataView(inet.buffer).getUint32(f.hdr! + f.inetStates!, true), 0xffffffff);
  const unix = sockDiagDumpRequest(AF.UNIX, 0);
  assert.deepEqual(header(unix), [f.hdr! + f.unix!, f.byFamily, f.dump, 1]);
  assert.equal(new DataView(unix.buffer).getUint32(f.hdr! + f.unixStates!, true), 0xffffffff);
  assert.equal(f.packet, f.netlink);
  const netlink = sockDiagDumpRequest(AF.NETLINK, 0);
  assert.deepEqual(header(netlink), [f.hdr! + f.netlink!, f.byFamily, f.dump, 1]);
  assert.deepEqual([...netlink.subarray(f.hdr!, f.hdr! + 2)], [AF.NETLINK, f.protoAll]);
  assert.equal(MSG.CMSG_CLOEXEC, f.cmsgCloexec);
});

Deno.test("memfd, terminal ioctl, prctl and fanotify constants are the headers'", async () => {
  const tty = Object.keys(TTY_IOCTL) as (keyof typeof TTY_IOCTL)[];
  const f = await cFacts(
    ["sys/mman.h", "fcntl.h", "sys/ioctl.h", "termios.h", "sys/prctl.h", "sys/fanotify.h"],
    {
      ...Object.fromEntries(tty.map((n) => [n, n])),
      MFD_CLOEXEC: "MFD_CLOEXEC",
      MFD_ALLOW_SEALING: "MFD_ALLOW_SEALING",
      MFD_HUGETLB: "MFD_HUGETLB",
      F_SEAL_SEAL: "F_SEAL_SEAL",
      F_ADD_SEALS: "F_ADD_SEALS",
      PR_CAPBSET_DROP: "PR_CAPBSET_DROP",
      PR_CAP_AMBIENT: "PR_CAP_AMBIENT",
      PR_CAP_AMBIENT_RAISE: "PR_CAP_AMBIENT_RAISE",
      FAN_NONBLOCK: "FAN_NONBLOCK",
      FAN_MARK_ADD: "FAN_MARK_ADD",
      FAN_MARK_MOUNT: "FAN_MARK_MOUNT",
      FAN_MARK_IGNORED_MASK: "FAN_MARK_IGNORED_MASK",
    },
  );
  for (const n of tty) assert.equal(TTY_IOCTL[n], f[n], n);
  assert.deepEqual([MFD.CLOEXEC, MFD.ALLOW_SEALING, MFD.HUGETLB], [
    f.MFD_CLOEXEC,
    f.MFD_ALLOW_SEALING,
    f.MFD_HUGETLB,
  ]);
  assert.deepEqual([F_SEAL_SEAL, F_ADD_SEALS], [f.F_SEAL_SEAL, f.F_ADD_SEALS]);
  assert.deepEqual([PR.CAPBSET_DROP, PR.CAP_AMBIENT, PR.CAP_AMBIENT_RAISE], [
    f.PR_CAPBSET_DROP,
    f.PR_CAP_AMBIENT,
    f.PR_CAP_AMBIENT_RAISE,
  ]);
  assert.deepEqual([FAN_NONBLOCK, FAN_MARK.ADD, FAN_MARK.MOUNT, FAN_MARK.IGNORED_MASK], [
    f.FAN_NONBLOCK,
    f.FAN_MARK_ADD,
    f.FAN_MARK_MOUNT,
    f.FAN_MARK_IGNORED_MASK,
  ]);
});

Deno.test("rtnetlink, socket and tun ioctl constants of the probes are the headers'", async () => {
  const f = await cFacts(
    [
      "linux/rtnetlink.h",
      "linux/if_link.h",
      "linux/veth.h",
      "linux/sockios.h",
      "linux/un.h",
      "linux/if_tun.h",
    ],
    {
      RTM_NEWLINK: "RTM_NEWLINK",
      RTM_GETLINK: "RTM_GETLINK",
      IFLA_IFNAME: "IFLA_IFNAME",
      IFLA_LINKINFO: "IFLA_LINKINFO",
      IFLA_NET_NS_FD: "IFLA_NET_NS_FD",
      IFLA_LINK_NETNSID: "IFLA_LINK_NETNSID",
      IFLA_INFO_KIND: "IFLA_INFO_KIND",
      IFLA_INFO_DATA: "IFLA_INFO_DATA",
      VETH_INFO_PEER: "VETH_INFO_PEER",
      SIOCGSKNS: "SIOCGSKNS",
      SIOCUNIXFILE: "SIOCUNIXFILE",
    },
  );
  assert.deepEqual([RTM.NEWLINK, RTM.GETLINK], [f.RTM_NEWLINK, f.RTM_GETLINK]);
  assert.deepEqual([IFLA.IFNAME, IFLA.LINKINFO, IFLA.NET_NS_FD, IFLA.LINK_NETNSID], [
    f.IFLA_IFNAME,
    f.IFLA_LINKINFO,
    f.IFLA_NET_NS_FD,
    f.IFLA_LINK_NETNSID,
  ]);
  assert.deepEqual([IFLA_INFO.KIND, IFLA_INFO.DATA, VETH_INFO_PEER], [
    f.IFLA_INFO_KIND,
    f.IFLA_INFO_DATA,
    f.VETH_INFO_PEER,
  ]);
  assert.deepEqual([SIOC_SOCKET.GSKNS, SIOC_SOCKET.UNIXFILE], [f.SIOCGSKNS, f.SIOCUNIXFILE]);
  // TUNSETIFINDEX is _IOW('T', 218, unsigned int): write direction, a 4-byte argument, type 'T', number 218.
  const iow = (type: string, nr: number, size: number) =>
    ((1 << 30) | (size << 16) | (type.charCodeAt(0) << 8) | nr) >>> 0;
  assert.equal(TUN.SETIFINDEX, iow("T", 218, 4));
});

Deno.test("socket family, type, protocol, state and repair numbers of the socket objects are the headers'", async () => {
  const f = await cFacts(["sys/socket.h", "netinet/in.h", "netinet/tcp.h"], {
    AF_UNIX: "AF_UNIX",
    SOCK_STREAM: "SOCK_STREAM",
    SOCK_DGRAM: "SOCK_DGRAM",
    SOCK_SEQPACKET: "SOCK_SEQPACKET",
    SCM_RIGHTS: "SCM_RIGHTS",
    IPPROTO_TCP: "IPPROTO_TCP",
    IPPROTO_UDP: "IPPROTO_UDP",
    TCP_ESTABLISHED: "TCP_ESTABLISHED",
    TCP_CLOSE: "TCP_CLOSE",
    TCP_LISTEN: "TCP_LISTEN",
    TCP_REPAIR_ON: "TCP_REPAIR_ON",
    TCP_REPAIR_OFF: "TCP_REPAIR_OFF",
  });
  assert.deepEqual([ADDRESS_FAMILY.UNIX, AF.UNIX], [f.AF_UNIX, f.AF_UNIX]);
  assert.deepEqual([SOCK.STREAM, SOCK.DGRAM, SOCK.SEQPACKET], [
    f.SOCK_STREAM,
    f.SOCK_DGRAM,
    f.SOCK_SEQPACKET,
  ]);
  assert.equal(SCM_RIGHTS, f.SCM_RIGHTS);
  assert.deepEqual([IPPROTO.TCP, IPPROTO.UDP], [f.IPPROTO_TCP, f.IPPROTO_UDP]);
  assert.deepEqual([TCP_STATE.ESTABLISHED, TCP_STATE.CLOSE, TCP_STATE.LISTEN], [
    f.TCP_ESTABLISHED,
    f.TCP_CLOSE,
    f.TCP_LISTEN,
  ]);
  assert.deepEqual([TCP_REPAIR_MODE.ON, TCP_REPAIR_MODE.OFF], [f.TCP_REPAIR_ON, f.TCP_REPAIR_OFF]);
});
