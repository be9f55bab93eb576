/**
 * Raw kernel calls for `criu check`, made from our own process. This file is unsafe work: it hands
 * the kernel addresses of our buffers. Everything above it sees plain numbers and bytes.
 *
 * A probe wants to know what the kernel answered, not to fail, so these wrappers do not throw on a
 * failed call: each returns an `Answer`, the kernel's non-negative result or the failure as a
 * `SyscallError` naming the call and the errno. Nothing above ffi/ sees -errno. They never keep an fd or a mapping: whatever a wrapper opens or maps it closes or unmaps before returning,
 * unless returning the fd is its purpose (then the caller closes it with `closeFd`).
 */
import { addressOf, cstr, lastErrno, libc } from "./libc.ts";
import { AT_FDCWD, NR } from "./syscalls.ts";
import { SyscallError } from "./errors.ts";

const PTRACE_POKEUSER = 6;

/** What a probe call answers: the kernel's non-negative result, or the failure named. */
export type Answer = number | SyscallError;

/** The kernel's `-errno` convention turned into an Answer naming `call`. */
function answer(call: string, r: number): Answer {
  return r < 0 ? new SyscallError(call, -r) : r;
}

/** Did a probe call fail (whatever the errno)? */
export function failed(r: Answer | [number, number]): r is SyscallError {
  return r instanceof SyscallError;
}

/**
 * The errno name of a probe call's answer when it failed ("EINVAL"), undefined when it succeeded:
 * probes above ffi/ name what the kernel said through this, never by its number.
 */
export function failureName(r: Answer): string | undefined {
  return r instanceof SyscallError ? r.code : undefined;
}

/** Did a probe call fail with errno `code` (e.g. "ENOSYS")? */
export function failedWith(r: Answer, code: string): boolean {
  return failureName(r) === code;
}

/** One syscall through libc; the result, or -errno. Addresses are passed as bigints. */
function sys(nr: number, ...args: (number | bigint)[]): number {
  const a = (i: number) => BigInt(args[i] ?? 0);
  const r = libc.syscall(BigInt(nr), a(0), a(1), a(2), a(3), a(4), a(5));
  return r === -1n ? -lastErrno() : Number(r);
}

/** A syscall whose arguments are all plain integers (no pointers): the result or the failure. */
export function rawSyscall(nr: number, ...args: number[]): Answer {
  return answer(`syscall ${nr}`, sys(nr, ...args));
}

import { closeFd } from "./fd.ts";
export { closeFd };

/** open(2): the fd or the failure. */
export function openPath(path: string, flags: number, mode = 0): Answer {
  const fd = libc.open(cstr(path), flags, mode);
  return fd === -1 ? new SyscallError(`open(${path})`, lastErrno()) : fd;
}

/** access(2)'s modes: the file exists, or may be executed, written, read. */
export const ACCESS = { F_OK: 0, X_OK: 1, W_OK: 2, R_OK: 4 } as const;

/** access(2) with a mode of ACCESS. */
export function accessPath(path: string, mode: number): Answer {
  const p = cstr(path);
  return answer(`access(${path})`, sys(NR.access, addressOf(p), mode));
}

/** write(2) of a whole string. */
export function writeString(fd: number, text: string): Answer {
  const b = new TextEncoder().encode(text);
  const buf = new Uint8Array(b.length);
  buf.set(b);
  return answer("write", sys(NR.write, fd, addressOf(buf), buf.length));
}

export function setsockoptInt(fd: number, level: number, name: number, value: number): Answer {
  const v = new Int32Array([value]);
  const r = sys(NR.setsockopt, fd, level, name, addressOf(new Uint8Array(v.buffer)), 4);
  return answer(`setsockopt(${level}, ${name})`, r);
}

export function setsockoptBytes(
  fd: number,
  level: number,
  name: number,
  value: Uint8Array<ArrayBuffer>,
): Answer {
  return answer(
    `setsockopt(${level}, ${name})`,
    sys(NR.setsockopt, fd, level, name, addressOf(value), value.byteLength),
  );
}

/**
 * getsockopt(2) into a buffer of `size` bytes; with size 0 the option value pointer is NULL.
 * Returns the result, the bytes and the length the kernel reported.
 */
export function getsockoptBytes(
  fd: number,
  level: number,
  name: number,
  size: number,
): { r: Answer; bytes: Uint8Array<ArrayBuffer>; len: number } {
  const bytes = new Uint8Array(size);
  const len = new Uint32Array([size]);
  const r = sys(
    NR.getsockopt,
    fd,
    level,
    name,
    size ? addressOf(bytes) : 0n,
    addressOf(new Uint8Array(len.buffer)),
  );
  return { r: answer(`getsockopt(${level}, ${name})`, r), bytes, len: len[0]! };
}

/** socketpair(2): the two fds, or the failure. */
export function socketpair(
  domain: number,
  type: number,
  protocol: number,
): [number, number] | SyscallError {
  const fds = new Int32Array(2);
  const r = libc.socketpair(domain, type, protocol, new Uint8Array(fds.buffer));
  return r === -1 ? new SyscallError("socketpair", lastErrno()) : [fds[0]!, fds[1]!];
}

/** getsockname(2): the result and the address bytes. */
export function getsockname(fd: number): { r: Answer; addr: Uint8Array<ArrayBuffer> } {
  const addr = new Uint8Array(128);
  const len = new Uint32Array([addr.length]);
  const r = sys(NR.getsockname, fd, addressOf(addr), addressOf(new Uint8Array(len.buffer)));
  return { r: answer("getsockname", r), addr: addr.slice(0, len[0]!) };
}

export function bindTo(fd: number, addr: Uint8Array<ArrayBuffer>): Answer {
  return libc.bind(fd, addr, addr.byteLength) === -1 ? new SyscallError("bind", lastErrno()) : 0;
}

export function connectTo(fd: number, addr: Uint8Array<ArrayBuffer>): Answer {
  return libc.connect(fd, addr, addr.byteLength) === -1 ? new SyscallError("connect", lastErrno()) : 0;
}

/** sendto(2) with no destination address (netlink: the kernel). */
export function sendBytes(fd: number, bytes: Uint8Array<ArrayBuffer>): Answer {
  return answer("sendto", sys(NR.sendto, fd, addressOf(bytes), bytes.byteLength, 0, 0, 0));
}

/** recvfrom(2) into a fresh buffer of `size` bytes: the result and the bytes received. */
export function recvBytes(fd: number, size: number): { r: Answer; bytes: Uint8Array<ArrayBuffer> } {
  const buf = new Uint8Array(size);
  const r = sys(NR.recvfrom, fd, addressOf(buf), size, 0, 0, 0);
  return { r: answer("recvfrom", r), bytes: r > 0 ? buf.slice(0, r) : new Uint8Array(0) };
}

/**
 * The kernel's answer in the body of a netlink NLMSG_ERROR or NLMSG_DONE message (`struct nlmsgerr`
 * or the dump's final int, both starting with an s32 that is 0 or -errno): 0, or the failure
 * named after `call`. A body too short to hold it counts as 0, as the kernel sends none then.
 */
export function netlinkAnswer(call: string, body: Uint8Array<ArrayBuffer>): Answer {
  const code = body.length >= 4 ? new DataView(body.buffer, body.byteOffset).getInt32(0, true) : 0;
  return code < 0 ? new SyscallError(call, -code) : 0;
}

export function readBytes(fd: number, size: number): { r: Answer; bytes: Uint8Array<ArrayBuffer> } {
  const buf = new Uint8Array(size);
  const r = sys(NR.read, fd, addressOf(buf), size);
  return { r: answer("read", r), bytes: r > 0 ? buf.slice(0, r) : new Uint8Array(0) };
}

/** ioctl(2) with no argument (0). */
export function ioctlNone(fd: number, request: number): Answer {
  return answer(`ioctl(0x${request.toString(16)})`, sys(NR.ioctl, fd, request, 0));
}

/** ioctl(2) whose argument points at one int: the result and the int afterwards. */
export function ioctlInt(fd: number, request: number, value: number): { r: Answer; value: number } {
  const v = new Int32Array([value]);
  const r = sys(NR.ioctl, fd, request, addressOf(new Uint8Array(v.buffer)));
  return { r: answer(`ioctl(0x${request.toString(16)})`, r), value: v[0]! };
}

/** ioctl(2) whose argument points at `bytes` (read and written in place). */
export function ioctlBytes(fd: number, request: number, bytes: Uint8Array<ArrayBuffer>): number {
  return sys(NR.ioctl, fd, request, addressOf(bytes));
}

/** pipe2(2): [read end, write end], or the failure. */
export function pipe2(flags: number): [number, number] | SyscallError {
  const fds = new Int32Array(2);
  const r = sys(NR.pipe2, addressOf(new Uint8Array(fds.buffer)), flags);
  return r < 0 ? new SyscallError("pipe2", -r) : [fds[0]!, fds[1]!];
}

/** vmsplice(2) of one byte from a stack-like buffer at an unaligned address into a pipe. */
export function vmspliceOneByte(fd: number, flags: number): Answer {
  const buf = new Uint8Array(16);
  const iov = new BigUint64Array([addressOf(buf) + 3n, 1n]);
  return answer("vmsplice", sys(NR.vmsplice, fd, addressOf(iov), 1, flags));
}

/** epoll_ctl(2) with a struct epoll_event {u32 events; u64 data} (packed, 12 bytes). */
export function epollCtl(epfd: number, op: number, fd: number, events: number): Answer {
  const ev = new Uint8Array(12);
  const v = new DataView(ev.buffer);
  v.setUint32(0, events, true);
  v.setBigUint64(4, BigInt(fd), true);
  return answer("epoll_ctl", sys(NR.epoll_ctl, epfd, op, fd, addressOf(ev)));
}

/** signalfd4(2) creating a new signalfd for `mask`. */
export function signalfd(mask: bigint, flags: number): Answer {
  const m = new BigUint64Array([mask]);
  return answer("signalfd4", sys(NR.signalfd4, -1, addressOf(m), 8, flags));
}

export function inotifyAddWatch(fd: number, path: string, mask: number): Answer {
  const p = cstr(path);
  return answer(`inotify_add_watch(${path})`, sys(NR.inotify_add_watch, fd, addressOf(p), mask));
}

/** memfd_create(2); a null name passes a NULL pointer (the kernel answers EFAULT when it has the call). */
export function memfdCreate(name: string | null, flags: number): Answer {
  const p = name === null ? null : cstr(name);
  return answer("memfd_create", sys(NR.memfd_create, p ? addressOf(p) : 0n, flags));
}

/** openat2(AT_FDCWD, ".", NULL, 0): ENOSYS without the call, some other error with it. */
export function openat2WithoutHow(): Answer {
  const dot = cstr(".");
  return answer("openat2", sys(NR.openat2, AT_FDCWD, addressOf(dot), 0, 0));
}

/** kcmp(pid, pid, KCMP_EPOLL_TFD, fd, &{efd, tfd, toff}). */
export function kcmpEpollTfd(pid: number, fd: number, efd: number, tfd: number, toff: number): Answer {
  const slot = new Uint32Array([efd, tfd, toff]);
  return answer(
    "kcmp(KCMP_EPOLL_TFD)",
    sys(NR.kcmp, pid, pid, 7, fd, addressOf(new Uint8Array(slot.buffer))),
  );
}

/** prctl(PR_GET_TID_ADDRESS, &addr): the result and the address. */
export function prctlGetTidAddress(): { r: Answer; address: bigint } {
  const out = new BigUint64Array(1);
  const r = sys(NR.prctl, 40, addressOf(out));
  return { r: answer("prctl(PR_GET_TID_ADDRESS)", r), address: out[0]! };
}

/** prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, &size): the result and the struct size the kernel expects. */
export function prctlMmMapSize(): { r: Answer; size: number } {
  const out = new Uint32Array(1);
  const r = sys(NR.prctl, 35, 15, addressOf(new Uint8Array(out.buffer)), 0, 0);
  return { r: answer("prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)", r), size: out[0]! };
}

/** fcntl(fd, F_GETOWNER_UIDS, u32[2]). */
export function fcntlGetOwnerUids(fd: number): { r: Answer; uids: [number, number] } {
  const out = new Uint32Array(2);
  const r = sys(NR.fcntl, fd, 17, addressOf(new Uint8Array(out.buffer)));
  return { r: answer("fcntl(F_GETOWNER_UIDS)", r), uids: [out[0]!, out[1]!] };
}

/** UFFD_FEATURE_* bits of struct uffdio_api (the ones criu check asks about). */
export const UFFD_FEATURE = {
  EVENT_FORK: 1n << 1n,
  EVENT_REMAP: 1n << 2n,
  EVENT_REMOVE: 1n << 3n,
  EVENT_UNMAP: 1n << 6n,
  WP_UNPOPULATED: 1n << 13n,
  WP_ASYNC: 1n << 15n,
} as const;

/** userfaultfd(2) then UFFDIO_API asking for `features`; the fd is closed before returning. */
export function userfaultfdApi(
  flags: number,
  features: bigint,
): { r: Answer; features: bigint; ioctls: bigint } {
  const fd = sys(NR.userfaultfd, flags);
  if (fd < 0) return { r: answer("userfaultfd", fd), features: 0n, ioctls: 0n };
  try {
    const api = new BigUint64Array([0xaan, features, 0n]);
    const r = sys(NR.ioctl, fd, UFFDIO_API, addressOf(api));
    return { r: answer("ioctl(UFFDIO_API)", r), features: api[1]!, ioctls: api[2]! };
  } finally {
    closeFd(fd);
  }
}

export const UFFDIO_API = 0xc018aa3f;
export const UFFDIO_REGISTER = 0xc020aa00;
export const PAGEMAP_SCAN = 0xc0606610;

/** The arguments of ioctl(PAGEMAP_SCAN) besides the output vector. */
export interface PagemapScanArgs {
  start: bigint;
  end: bigint;
  flags: number;
  categoryInverted: number;
  categoryMask: number;
  categoryAnyofMask: number;
  returnMask: number;
  /** 0: no limit. */
  maxPages?: number;
}

/** One `struct page_region` of a PAGEMAP_SCAN answer. */
export interface PageRegion {
  start: bigint;
  end: bigint;
  categories: number;
}

/** PAGEMAP_SCAN categories (PAGE_IS_*) and flags (PM_SCAN_*). */
export const PAGE_IS = {
  WPALLOWED: 1 << 0,
  WRITTEN: 1 << 1,
  FILE: 1 << 2,
  PRESENT: 1 << 3,
  SWAPPED: 1 << 4,
  PFNZERO: 1 << 5,
  SOFT_DIRTY: 1 << 7,
  GUARD: 1 << 8,
} as const;
export const PM_SCAN = { WP_MATCHING: 1, CHECK_WPASYNC: 2 } as const;

/**
 * ioctl(PAGEMAP_SCAN) on an open /proc/PID/pagemap fd, with room for `vecLen` regions (0: none,
 * the kernel then only walks). Returns the result (the number of regions filled) and the regions.
 */
export function pagemapScan(
  fd: number,
  a: PagemapScanArgs,
  vecLen: number,
): { r: Answer; regions: PageRegion[] } {
  const vec = new BigUint64Array(Math.max(vecLen, 1) * 3);
  const arg = new BigUint64Array([
    96n, // size of struct pm_scan_arg
    BigInt(a.flags),
    a.start,
    a.end,
    0n, // walk_end, filled by the kernel
    vecLen ? addressOf(vec) : 0n,
    BigInt(vecLen),
    BigInt(a.maxPages ?? 0),
    BigInt(a.categoryInverted),
    BigInt(a.categoryMask),
    BigInt(a.categoryAnyofMask),
    BigInt(a.returnMask),
  ]);
  const r = sys(NR.ioctl, fd, PAGEMAP_SCAN, addressOf(arg));
  const regions: PageRegion[] = [];
  for (let i = 0; i < r && i < vecLen; i++) {
    regions.push({ start: vec[3 * i]!, end: vec[3 * i + 1]!, categories: Number(vec[3 * i + 2]!) });
  }
  return { r: answer("ioctl(PAGEMAP_SCAN)", r), regions };
}

/**
 * Maps one private anonymous page in our own process, runs madvise(advice) on it and unmaps it:
 * the madvise result.
 */
export function madviseScratchPage(advice: number): Answer {
  const len = 4096;
  const addr = libc.syscall(BigInt(NR.mmap), 0n, BigInt(len), 3n, 0x22n, -1n, 0n); // rw, private|anon
  if (addr === -1n) return new SyscallError("mmap", lastErrno());
  try {
    return answer("madvise", sys(NR.madvise, addr, len, advice));
  } finally {
    sys(NR.munmap, addr, len);
  }
}

/** ptrace(PTRACE_POKEUSER): writes one word of a stopped tracee's `struct user` (debug registers). */
export function pokeUser(pid: number, offset: number, value: bigint): Answer {
  const r = libc.ptrace(PTRACE_POKEUSER, pid, BigInt(offset), value);
  return r === -1n ? new SyscallError("ptrace(PTRACE_POKEUSER)", lastErrno()) : 0;
}
