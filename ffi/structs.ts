/**
 * Kernel struct layouts for x86_64, as byte builders and readers. Sizes and offsets are pinned by
 * tests (ffi/structs_test.ts) against the kernel ABI.
 */
import { xstateComponentPlaces } from "./cpuid.ts";

/** Field order of `struct user_regs_struct` (NT_PRSTATUS), 27 u64 slots. */
export const REG_NAMES = [
  "r15",
  "r14",
  "r13",
  "r12",
  "bp",
  "bx",
  "r11",
  "r10",
  "r9",
  "r8",
  "ax",
  "cx",
  "dx",
  "si",
  "di",
  "orig_ax",
  "ip",
  "cs",
  "flags",
  "sp",
  "ss",
  "fs_base",
  "gs_base",
  "ds",
  "es",
  "fs",
  "gs",
] as const;
export type RegName = typeof REG_NAMES[number];
export const USER_REGS_SIZE = REG_NAMES.length * 8; // 216

const REG_INDEX = Object.fromEntries(REG_NAMES.map((n, i) => [n, i])) as Record<RegName, number>;

/** General registers of one thread, as the kernel lays them out. */
export class Regs {
  readonly raw: BigUint64Array<ArrayBuffer>;
  constructor(raw?: BigUint64Array<ArrayBuffer>) {
    this.raw = raw ?? new BigUint64Array(REG_NAMES.length);
  }
  get(name: RegName): bigint {
    return this.raw[REG_INDEX[name]]!;
  }
  /** The register as a signed value (syscall results, orig_ax = -1). */
  getSigned(name: RegName): bigint {
    return BigInt.asIntN(64, this.get(name));
  }
  set(name: RegName, value: bigint | number): void {
    this.raw[REG_INDEX[name]] = BigInt.asUintN(64, BigInt(value));
  }
  clone(): Regs {
    return new Regs(this.raw.slice());
  }
  bytes(): Uint8Array<ArrayBuffer> {
    return new Uint8Array(this.raw.buffer, this.raw.byteOffset, this.raw.byteLength);
  }
}

/** `struct iovec { void *base; size_t len; }`, 16 bytes each. */
export const IOVEC_SIZE = 16;
export function iovecs(
  entries: readonly { base: bigint; len: number | bigint }[],
): BigUint64Array<ArrayBuffer> {
  const out = new BigUint64Array(entries.length * 2);
  entries.forEach((e, i) => {
    out[2 * i] = e.base;
    out[2 * i + 1] = BigInt(e.len);
  });
  return out;
}

/** `siginfo_t` is always 128 bytes; si_signo at 0, si_errno at 4, si_code at 8. */
export const SIGINFO_SIZE = 128;

/** `struct clone_args` (clone3), version with set_tid and cgroup: 88 bytes. */
export const CLONE_ARGS_SIZE = 88;
export interface CloneArgs {
  flags: bigint;
  pidfd?: bigint;
  childTid?: bigint;
  parentTid?: bigint;
  exitSignal: number;
  stack?: bigint;
  stackSize?: bigint;
  tls?: bigint;
  setTid?: bigint; // address of a pid_t array in the caller
  setTidSize?: number;
  cgroup?: bigint;
}
export function cloneArgs(a: CloneArgs): Uint8Array<ArrayBuffer> {
  const b = new BigUint64Array(CLONE_ARGS_SIZE / 8);
  b[0] = a.flags;
  b[1] = a.pidfd ?? 0n;
  b[2] = a.childTid ?? 0n;
  b[3] = a.parentTid ?? 0n;
  b[4] = BigInt(a.exitSignal);
  b[5] = a.stack ?? 0n;
  b[6] = a.stackSize ?? 0n;
  b[7] = a.tls ?? 0n;
  b[8] = a.setTid ?? 0n;
  b[9] = BigInt(a.setTidSize ?? 0);
  b[10] = a.cgroup ?? 0n;
  return new Uint8Array(b.buffer);
}

/** `struct prctl_mm_map` for PR_SET_MM_MAP: 11 u64 fields, auxv pointer, u32 auxv_size, u32 exe_fd. */
export const PRCTL_MM_MAP_SIZE = 104;
export interface MmMap {
  startCode: bigint;
  endCode: bigint;
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
  brk: bigint;
  startStack: bigint;
  argStart: bigint;
  argEnd: bigint;
  envStart: bigint;
  envEnd: bigint;
  auxv: bigint; // address in the task that runs the prctl
  auxvSize: number; // bytes
  exeFd: number; // -1 keeps the current exe link
}
export function prctlMmMap(m: MmMap): Uint8Array<ArrayBuffer> {
  const buf = new ArrayBuffer(PRCTL_MM_MAP_SIZE);
  const v = new DataView(buf);
  const u64 = [
    m.startCode,
    m.endCode,
    m.startData,
    m.endData,
    m.startBrk,
    m.brk,
    m.startStack,
    m.argStart,
    m.argEnd,
    m.envStart,
    m.envEnd,
    m.auxv,
  ];
  u64.forEach((x, i) => v.setBigUint64(i * 8, x, true));
  v.setUint32(96, m.auxvSize, true);
  v.setInt32(100, m.exeFd, true);
  return new Uint8Array(buf);
}

/** `struct sockaddr_un`: sa_family (u16) then a 108-byte path; returns the bytes and the length to pass. */
export const SOCKADDR_UN_SIZE = 110;
export function sockaddrUn(path: string): { addr: Uint8Array<ArrayBuffer>; len: number } {
  const bytes = new TextEncoder().encode(path);
  const abstract = path.startsWith("\0");
  if (bytes.length > (abstract ? 108 : 107)) {
    throw new RangeError(`Unix socket path is ${bytes.length} bytes; at most 107 fit in sockaddr_un`);
  }
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(addr.buffer).setUint16(0, 1, true); // AF_UNIX
  addr.set(bytes, 2);
  return { addr, len: 2 + bytes.length + (abstract ? 0 : 1) };
}

/** `struct msghdr`: 56 bytes. `struct cmsghdr`: len (u64), level (i32), type (i32), then data. */
export const MSGHDR_SIZE = 56;
export const CMSG_HDR_SIZE = 16;
export const SOL_SOCKET = 1;
export const SCM_RIGHTS = 1;
export function cmsgSpace(dataLen: number): number {
  return CMSG_HDR_SIZE + ((dataLen + 7) & ~7);
}
/** msg_namelen in struct msghdr: how much of msg_name the kernel filled. */
export const MSGHDR_NAMELEN_AT = 8;

export function msghdr(
  iovCount: number,
  iovAddr: bigint,
  control: { addr: bigint; len: number } | null,
  name: { addr: bigint; len: number } | null = null,
): Uint8Array<ArrayBuffer> {
  const buf = new ArrayBuffer(MSGHDR_SIZE);
  const v = new DataView(buf);
  v.setBigUint64(0, name?.addr ?? 0n, true); // msg_name
  v.setUint32(8, name?.len ?? 0, true); // msg_namelen
  v.setBigUint64(16, iovAddr, true); // msg_iov
  v.setBigUint64(24, BigInt(iovCount), true); // msg_iovlen
  v.setBigUint64(32, control?.addr ?? 0n, true); // msg_control
  v.setBigUint64(40, BigInt(control?.len ?? 0), true); // msg_controllen
  v.setInt32(48, 0, true); // msg_flags
  return new Uint8Array(buf);
}
/** A control buffer carrying `fds` with SCM_RIGHTS. */
export function scmRights(fds: readonly number[]): Uint8Array<ArrayBuffer> {
  const data = fds.length * 4;
  const out = new Uint8Array(cmsgSpace(data));
  const v = new DataView(out.buffer);
  v.setBigUint64(0, BigInt(CMSG_HDR_SIZE + data), true);
  v.setInt32(8, SOL_SOCKET, true);
  v.setInt32(12, SCM_RIGHTS, true);
  fds.forEach((fd, i) => v.setInt32(CMSG_HDR_SIZE + 4 * i, fd, true));
  return out;
}
/** The fds of every SCM_RIGHTS message in a received control buffer of `len` bytes. */
export function parseScmRights(control: Uint8Array<ArrayBuffer>, len: number): number[] {
  const v = new DataView(control.buffer, control.byteOffset, control.byteLength);
  const fds: number[] = [];
  let off = 0;
  while (off + CMSG_HDR_SIZE <= len) {
    const cmsgLen = Number(v.getBigUint64(off, true));
    if (cmsgLen < CMSG_HDR_SIZE) break;
    if (v.getInt32(off + 8, true) === SOL_SOCKET && v.getInt32(off + 12, true) === SCM_RIGHTS) {
      for (let p = off + CMSG_HDR_SIZE; p + 4 <= off + cmsgLen; p += 4) fds.push(v.getInt32(p, true));
    }
    off += (cmsgLen + 7) & ~7;
  }
  return fds;
}

/** `struct rseq_configuration` from PTRACE_GET_RSEQ_CONFIGURATION: 24 bytes. */
export const RSEQ_CONFIG_SIZE = 24;
export interface RseqConfig {
  abiPointer: bigint;
  abiSize: number;
  signature: number;
  flags: number;
}
export function parseRseqConfig(b: Uint8Array<ArrayBuffer>): RseqConfig {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    abiPointer: v.getBigUint64(0, true),
    abiSize: v.getUint32(8, true),
    signature: v.getUint32(12, true),
    flags: v.getUint32(16, true),
  };
}

/** `struct __ptrace_peeksiginfo_args { u64 off; u32 flags; s32 nr; }` */
export function peeksiginfoArgs(off: number, shared: boolean, nr: number): Uint8Array<ArrayBuffer> {
  const buf = new ArrayBuffer(16);
  const v = new DataView(buf);
  v.setBigUint64(0, BigInt(off), true);
  v.setUint32(8, shared ? 1 : 0, true);
  v.setInt32(12, nr, true);
  return new Uint8Array(buf);
}

/** `struct timespec` / `struct timeval`: two s64. `struct itimerval`/`itimerspec`: two of them. */
export function readPairs(b: Uint8Array<ArrayBuffer>, count: number): bigint[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return Array.from({ length: count }, (_, i) => v.getBigInt64(i * 8, true));
}
export function writeS64s(values: readonly (bigint | number)[]): Uint8Array<ArrayBuffer> {
  const buf = new ArrayBuffer(values.length * 8);
  const v = new DataView(buf);
  values.forEach((x, i) => v.setBigInt64(i * 8, BigInt(x), true));
  return new Uint8Array(buf);
}

/**
 * `struct itimerspec` (timer_settime, timerfd_settime) and `struct itimerval` (setitimer): the
 * interval, then the value, each as seconds and a fraction (nano- or microseconds), s64 each.
 */
export const ITIMER_SIZE = 32;
export interface Itimer {
  intervalSec: bigint;
  intervalFrac: bigint;
  valueSec: bigint;
  valueFrac: bigint;
}
export function itimer(t: Itimer): Uint8Array<ArrayBuffer> {
  return writeS64s([t.intervalSec, t.intervalFrac, t.valueSec, t.valueFrac]);
}
export function parseItimer(b: Uint8Array<ArrayBuffer>): Itimer {
  const [intervalSec, intervalFrac, valueSec, valueFrac] = readPairs(b, 4) as [
    bigint,
    bigint,
    bigint,
    bigint,
  ];
  return { intervalSec, intervalFrac, valueSec, valueFrac };
}

/** `struct __user_cap_header_struct { u32 version; int pid; }`, version 3 (64-bit sets). */
export const CAP_HEADER_SIZE = 8;
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
export function capHeader(pid: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new Uint32Array([LINUX_CAPABILITY_VERSION_3, pid]).buffer);
}
/**
 * The two `struct __user_cap_data_struct { u32 effective, permitted, inheritable; }` of version
 * 3: the low words of the three sets, then their high words.
 */
export const CAP_DATA_SIZE = 24;
export function capData(
  sets: { effective: readonly number[]; permitted: readonly number[]; inheritable: readonly number[] },
): Uint8Array<ArrayBuffer> {
  const word = (set: readonly number[], i: number) => set[i] ?? 0;
  const { effective: e, permitted: p, inheritable: h } = sets;
  return new Uint8Array(
    new Uint32Array([word(e, 0), word(p, 0), word(h, 0), word(e, 1), word(p, 1), word(h, 1)]).buffer,
  );
}

/** An `int` the kernel reads or fills through a pointer (a pid for set_tid, a group, a timer id). */
export const INT_SIZE = 4;
export function int32Bytes(n: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new Int32Array([n]).buffer);
}
/** Native-endian 32-bit integers in a row (clone3's set_tid array). */
export function int32ArrayBytes(values: readonly number[]): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new Int32Array(values).buffer);
}
export function readInt32(b: Uint8Array, at = 0): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getInt32(at, true);
}
/** A 64-bit word the kernel fills through a pointer (an address, an aio_context_t). */
export function readU64(b: Uint8Array, at = 0): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(at, true);
}
/** `int fds[2]`, as pipe2 and socketpair fill it. */
export const FD_PAIR_SIZE = 8;
export function parseFdPair(b: Uint8Array): [number, number] {
  return [readInt32(b, 0), readInt32(b, 4)];
}

/** `struct kernel_sigaction` on x86_64: handler, flags, restorer, mask (u64 each). */
export const KSIGACTION_SIZE = 32;
export interface KernelSigaction {
  handler: bigint;
  flags: bigint;
  restorer: bigint;
  mask: bigint;
}
export function kernelSigaction(a: KernelSigaction): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new BigUint64Array([a.handler, a.flags, a.restorer, a.mask]).buffer);
}
export function parseKernelSigaction(b: Uint8Array): KernelSigaction {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    handler: v.getBigUint64(0, true),
    flags: v.getBigUint64(8, true),
    restorer: v.getBigUint64(16, true),
    mask: v.getBigUint64(24, true),
  };
}

/** The kernel's sigset_t: one u64, bit N-1 for signal N (the size rt_sigaction and friends take). */
export const KERNEL_SIGSET_SIZE = 8;
export function kernelSigset(mask: bigint): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new BigUint64Array([BigInt.asUintN(64, mask)]).buffer);
}

/** `stack_t { void *ss_sp; int ss_flags; size_t ss_size; }` (sigaltstack): 24 bytes. */
export const STACK_T_SIZE = 24;
export interface StackT {
  sp: bigint;
  flags: number;
  size: bigint;
}
export function stackT(s: StackT): Uint8Array<ArrayBuffer> {
  const v = new DataView(new ArrayBuffer(STACK_T_SIZE));
  v.setBigUint64(0, s.sp, true);
  v.setUint32(8, s.flags >>> 0, true);
  v.setBigUint64(16, s.size, true);
  return new Uint8Array(v.buffer);
}
export function parseStackT(b: Uint8Array): StackT {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { sp: v.getBigUint64(0, true), flags: v.getUint32(8, true), size: v.getBigUint64(16, true) };
}

/** siginfo_t begins with si_signo, si_errno and si_code (s32 each); see SIGINFO_SIZE. */
export function siginfoSigno(b: Uint8Array): number {
  return readInt32(b);
}
/** A siginfo_t with only its signal and code set (the rest zero). */
export function siginfo(signo: number, code: number): Uint8Array<ArrayBuffer> {
  const v = new DataView(new ArrayBuffer(SIGINFO_SIZE));
  v.setInt32(0, signo, true);
  v.setInt32(8, code, true);
  return new Uint8Array(v.buffer);
}

/** `struct sched_param { int sched_priority; }`. */
export const SCHED_PARAM_SIZE = 4;
export function schedParam(priority: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new Int32Array([priority]).buffer);
}

/** `struct timespec`: seconds and nanoseconds, s64 each; here as nanoseconds in all. */
export const TIMESPEC_SIZE = 16;
const NS_PER_SEC = 1_000_000_000n;
export function timespec(ns: bigint): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new BigInt64Array([ns / NS_PER_SEC, ns % NS_PER_SEC]).buffer);
}
export function parseTimespec(b: Uint8Array): bigint {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return v.getBigInt64(0, true) * NS_PER_SEC + v.getBigInt64(8, true);
}

/**
 * `struct sigevent` (timer_create): sigev_value, sigev_signo, sigev_notify, then a union whose
 * first member is the thread id of SIGEV_THREAD_ID; 64 bytes.
 */
export const SIGEVENT_SIZE = 64;
export interface Sigevent {
  value: bigint;
  signo: number;
  notify: number;
  threadId: number;
}
export function sigevent(e: Sigevent): Uint8Array<ArrayBuffer> {
  const v = new DataView(new ArrayBuffer(SIGEVENT_SIZE));
  v.setBigUint64(0, e.value, true);
  v.setInt32(8, e.signo, true);
  v.setInt32(12, e.notify, true);
  v.setInt32(16, e.threadId, true);
  return new Uint8Array(v.buffer);
}

/** struct epoll_event, packed on x86_64: u32 events, then u64 data. */
export const EPOLL_EVENT_SIZE = 12;
export function epollEvent(events: number, data: bigint): Uint8Array<ArrayBuffer> {
  const v = new DataView(new ArrayBuffer(EPOLL_EVENT_SIZE));
  v.setUint32(0, events, true);
  v.setBigUint64(4, data, true);
  return new Uint8Array(v.buffer);
}

/** The kernel's struct termios (TCGETS): four flag words, c_line, then 19 control characters. */
export const KERNEL_TERMIOS_SIZE = 36;
export interface KernelTermios {
  iflag: number;
  oflag: number;
  cflag: number;
  lflag: number;
  line: number;
  /** The control characters, c_cc[0..18]. */
  cc: Uint8Array;
}
export function parseKernelTermios(b: Uint8Array): KernelTermios {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    iflag: v.getUint32(0, true),
    oflag: v.getUint32(4, true),
    cflag: v.getUint32(8, true),
    lflag: v.getUint32(12, true),
    line: b[16]!,
    cc: b.slice(17, KERNEL_TERMIOS_SIZE),
  };
}

/** struct winsize (TIOCGWINSZ): rows, columns, then the pixel sizes, u16 each. */
export const WINSIZE_SIZE = 8;
export function parseWinsize(b: Uint8Array): { row: number; col: number; xpixel: number; ypixel: number } {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    row: v.getUint16(0, true),
    col: v.getUint16(2, true),
    xpixel: v.getUint16(4, true),
    ypixel: v.getUint16(6, true),
  };
}

/** The kernel's struct termios (TCSETS) from its parts; `cc` beyond 19 bytes is dropped. */
export function kernelTermios(k: KernelTermios): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(KERNEL_TERMIOS_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, k.iflag, true);
  v.setUint32(4, k.oflag, true);
  v.setUint32(8, k.cflag, true);
  v.setUint32(12, k.lflag, true);
  b[16] = k.line;
  b.set(k.cc.subarray(0, KERNEL_TERMIOS_SIZE - 17), 17);
  return b;
}

/** struct winsize (TIOCSWINSZ) from its parts. */
export function winsize(
  w: { row: number; col: number; xpixel: number; ypixel: number },
): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(WINSIZE_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(0, w.row, true);
  v.setUint16(2, w.col, true);
  v.setUint16(4, w.xpixel, true);
  v.setUint16(6, w.ypixel, true);
  return b;
}

/**
 * The XSAVE area as PTRACE_GETREGSET(NT_X86_XSTATE) returns it, in the standard (non-compacted)
 * layout: the legacy FXSAVE region (x87 and SSE state), xstate_bv in the header at 512, then the
 * extended components, each at the offset CPUID leaf 0xD gives on this CPU (xsaveOffset).
 */
const FXSAVE = {
  cwd: 0,
  swd: 2,
  twd: 4,
  fop: 6,
  rip: 8,
  rdp: 16,
  mxcsr: 24,
  mxcsrMask: 28,
  st: 32,
  xmm: 160,
  pad: 416,
} as const;
const XSTATE_BV_OFFSET = 512;
/** x87 and SSE: their xstate_bv bits, always in the legacy region. */
const XSTATE_LEGACY_BITS = 0x3n;

/** The legacy region: control words, then 32 x87 words, 64 SSE words and 12 words of padding. */
export interface Fxsave {
  cwd: number;
  swd: number;
  twd: number;
  fop: number;
  rip: bigint;
  rdp: bigint;
  mxcsr: number;
  mxcsrMask: number;
  stSpace: number[];
  xmmSpace: number[];
  padding: number[];
}

/**
 * The extended components: word size, word count and xstate_bv bit (the component number) of
 * each. Where each sits in the area differs between CPUs (an Intel CPU with MPX puts opmask at
 * 1088, an AMD EPYC without it at 832): xsaveOffset() asks this CPU.
 */
export const XSAVE_COMPONENTS = {
  ymmh: { wordSize: 4, words: 64, bit: 2 },
  bndregs: { wordSize: 8, words: 8, bit: 3 },
  bndcsr: { wordSize: 8, words: 2, bit: 4 },
  opmask: { wordSize: 8, words: 8, bit: 5 },
  zmmUpper: { wordSize: 8, words: 64, bit: 6 },
  hi16Zmm: { wordSize: 8, words: 128, bit: 7 },
  pkru: { wordSize: 4, words: 2, bit: 9 },
} as const;
export type XsaveComponent = keyof typeof XSAVE_COMPONENTS;
const COMPONENT_NAMES = Object.keys(XSAVE_COMPONENTS) as XsaveComponent[];

/**
 * The offset of component `name` in this CPU's standard-format XSAVE area (what
 * PTRACE_GETREGSET(NT_X86_XSTATE) gives and takes), from CPUID leaf 0xD; undefined when the CPU
 * does not have the component (or says it has another size than the image's fields hold).
 */
export function xsaveOffset(name: XsaveComponent): number | undefined {
  const { wordSize, words, bit } = XSAVE_COMPONENTS[name];
  const place = xstateComponentPlaces().get(bit);
  return place && place.size === wordSize * words && place.offset > 0 ? place.offset : undefined;
}

/** An XSAVE area: the legacy region, and past it (a buffer longer than 512 bytes) the rest. */
export interface Xsave {
  fx: Fxsave;
  extended?: {
    xstateBv: bigint;
    /** The components the buffer has room for and xstate_bv marks live. */
    components: Partial<Record<XsaveComponent, (number | bigint)[]>>;
  };
}

function u32Words(v: DataView, off: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => v.getUint32(off + 4 * i, true));
}
function u64Words(v: DataView, off: number, n: number): bigint[] {
  return Array.from({ length: n }, (_, i) => v.getBigUint64(off + 8 * i, true));
}

export function parseXsave(b: Uint8Array): Xsave {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const fx: Fxsave = {
    cwd: v.getUint16(FXSAVE.cwd, true),
    swd: v.getUint16(FXSAVE.swd, true),
    twd: v.getUint16(FXSAVE.twd, true),
    fop: v.getUint16(FXSAVE.fop, true),
    rip: v.getBigUint64(FXSAVE.rip, true),
    rdp: v.getBigUint64(FXSAVE.rdp, true),
    mxcsr: v.getUint32(FXSAVE.mxcsr, true),
    mxcsrMask: v.getUint32(FXSAVE.mxcsrMask, true),
    stSpace: u32Words(v, FXSAVE.st, 32),
    xmmSpace: u32Words(v, FXSAVE.xmm, 64),
    padding: u32Words(v, FXSAVE.pad, 12),
  };
  if (b.byteLength <= XSTATE_BV_OFFSET) return { fx };
  const xstateBv = v.getBigUint64(XSTATE_BV_OFFSET, true);
  const components: Partial<Record<XsaveComponent, (number | bigint)[]>> = {};
  for (const name of COMPONENT_NAMES) {
    const { wordSize, words, bit } = XSAVE_COMPONENTS[name];
    const offset = xsaveOffset(name);
    if (offset === undefined || b.byteLength < offset + wordSize * words) continue;
    if (!(xstateBv & (1n << BigInt(bit)))) continue;
    components[name] = wordSize === 4 ? u32Words(v, offset, words) : u64Words(v, offset, words);
  }
  return { fx, extended: { xstateBv, components } };
}

/**
 * `template` (an XSAVE buffer of this CPU) with the given state written over it. The legacy
 * region's padding is left as it is. Of the extended components, those with words that the buffer
 * has room for are written, and xstate_bv marks live the legacy state and those of them that
 * `xstateBv` marks live.
 */
export function writeXsave(
  template: Uint8Array<ArrayBuffer>,
  fx: Omit<Fxsave, "padding">,
  extended?: { xstateBv: bigint; components: Partial<Record<XsaveComponent, readonly (number | bigint)[]>> },
): Uint8Array<ArrayBuffer> {
  const out = template.slice();
  const v = new DataView(out.buffer);
  v.setUint16(FXSAVE.cwd, fx.cwd, true);
  v.setUint16(FXSAVE.swd, fx.swd, true);
  v.setUint16(FXSAVE.twd, fx.twd, true);
  v.setUint16(FXSAVE.fop, fx.fop, true);
  v.setBigUint64(FXSAVE.rip, fx.rip, true);
  v.setBigUint64(FXSAVE.rdp, fx.rdp, true);
  v.setUint32(FXSAVE.mxcsr, fx.mxcsr, true);
  v.setUint32(FXSAVE.mxcsrMask, fx.mxcsrMask, true);
  fx.stSpace.forEach((w, i) => v.setUint32(FXSAVE.st + 4 * i, w, true));
  fx.xmmSpace.forEach((w, i) => v.setUint32(FXSAVE.xmm + 4 * i, w, true));
  if (!extended || out.byteLength <= XSTATE_BV_OFFSET) return out;
  let bv = extended.xstateBv & XSTATE_LEGACY_BITS;
  for (const name of COMPONENT_NAMES) {
    const { wordSize, words: count, bit } = XSAVE_COMPONENTS[name];
    const offset = xsaveOffset(name);
    const words = extended.components[name] ?? [];
    if (words.length === 0 || offset === undefined || out.byteLength < offset + wordSize * count) continue;
    words.forEach((w, j) => {
      if (wordSize === 4) v.setUint32(offset + 4 * j, Number(w), true);
      else v.setBigUint64(offset + 8 * j, BigInt(w), true);
    });
    bv |= extended.xstateBv & (1n << BigInt(bit));
  }
  v.setBigUint64(XSTATE_BV_OFFSET, bv, true);
  return out;
}

/** struct sock_filter, one classic BPF instruction: code (u16), jt, jf (u8), k (u32). */
export const SOCK_FILTER_SIZE = 8;
/** BPF_RET | BPF_K: return the constant k. */
export const BPF_RET_K = 0x06;
/** What a seccomp filter returns to let a call through. */
export const SECCOMP_RET_ALLOW = 0x7fff0000;
/** seccomp(2) operation installing a filter. */
export const SECCOMP_SET_MODE_FILTER = 1;
export function sockFilter(code: number, jt: number, jf: number, k: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(SOCK_FILTER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(0, code, true);
  v.setUint8(2, jt);
  v.setUint8(3, jf);
  v.setUint32(4, k, true);
  return b;
}

/** struct sock_fprog: the instruction count (u16, padded to 8), then the instructions' address. */
export const SOCK_FPROG_SIZE = 16;
export function sockFprog(count: number, filter: bigint): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(SOCK_FPROG_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(0, count, true);
  v.setBigUint64(8, filter, true);
  return b;
}

/** struct uffdio_api: api, features, ioctls (u64 each); the kernel fills the last two. */
export const UFFDIO_API_SIZE = 24;
/** The userfaultfd API version UFFDIO_API asks for. */
export const UFFD_API = 0xaan;
export function uffdioApi(features: bigint): Uint8Array<ArrayBuffer> {
  return writeS64s([UFFD_API, features, 0n]);
}

/** struct uffdio_register: a range (start, len), the mode, and the ioctls the kernel fills (u64 each). */
export const UFFDIO_REGISTER_SIZE = 32;
export const UFFDIO_REGISTER_MODE = { MISSING: 1n, WP: 2n } as const;
export function uffdioRegister(start: bigint, len: bigint, mode: bigint): Uint8Array<ArrayBuffer> {
  return writeS64s([start, len, mode, 0n]);
}
