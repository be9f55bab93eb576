/**
 * What the unix socket kind does to sockets from criu's own process: take a copy of a task's
 * socket (pidfd_getfd), read and set its options, read its receive queue without consuming it
 * (SO_PEEK_OFF + MSG_PEEK), and send bytes into a peer's queue. A copy is the task's own socket
 * (same open file description), so nothing here goes through the task's memory.
 *
 * Layouts: `struct timeval` is two i64 (sec, usec); `struct linger` two i32 (onoff, seconds).
 * The cmsghdr layout is structs.ts's.
 */
import { addressOf, callBig, cstr, lastErrno, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";
import { NR } from "./syscalls.ts";
import { SO } from "./sockopt.ts";
import {
  CMSG_HDR_SIZE,
  iovecs,
  msghdr,
  MSGHDR_NAMELEN_AT,
  SCM_RIGHTS,
  scmRights,
  SOL_SOCKET,
} from "./structs.ts";
import { SOCKADDR_UN_SIZE } from "./sockaddr.ts";

/** Where sun_path starts in struct sockaddr_un (after the u16 family). */
const SUN_PATH_AT = 2;

const SCM_CREDENTIALS = 2;
const MSG_PEEK = 0x2;
const MSG_TRUNC = 0x20;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const EINTR = 4;
const EAGAIN = 11;
/** Room for the control messages of one peeked message (CRIU takes 1 KiB too). */
const CONTROL_SIZE = 1024;
/** The first buffer a peek uses; datagrams larger than this grow it. */
const PEEK_CHUNK = 64 * 1024;

function sys(nr: number, ...args: (number | bigint)[]): bigint {
  const a = [...args.map(BigInt), 0n, 0n, 0n, 0n, 0n, 0n];
  return libc.syscall(BigInt(nr), a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!);
}

function getOption(fd: number, name: number, size: number): DataView {
  const buf = new Uint8Array(size);
  const len = new Uint32Array([size]);
  callBig(
    "getsockopt",
    sys(NR.getsockopt, fd, SOL_SOCKET, name, addressOf(buf), addressOf(len)),
    `option ${name}`,
  );
  return new DataView(buf.buffer);
}

function setOption(fd: number, name: number, value: Uint8Array<ArrayBuffer>): void {
  callBig(
    "setsockopt",
    sys(NR.setsockopt, fd, SOL_SOCKET, name, addressOf(value), value.length),
    `option ${name}`,
  );
}

export function getIntOption(fd: number, name: number): number {
  return getOption(fd, name, 4).getInt32(0, true);
}

export function setIntOption(fd: number, name: number, value: number): void {
  setOption(fd, name, new Uint8Array(new Int32Array([value]).buffer));
}

/** SO_SNDTIMEO / SO_RCVTIMEO as seconds and microseconds. */
export function getTimeout(fd: number, name: number): { sec: bigint; usec: bigint } {
  const v = getOption(fd, name, 16);
  return { sec: v.getBigInt64(0, true), usec: v.getBigInt64(8, true) };
}

export function setTimeout(fd: number, name: number, sec: bigint, usec: bigint): void {
  setOption(fd, name, new Uint8Array(new BigInt64Array([sec, usec]).buffer));
}

/** SO_LINGER: the seconds it lingers, or null when it does not. */
export function getLinger(fd: number): number | null {
  const v = getOption(fd, SO.LINGER, 8);
  return v.getInt32(0, true) ? v.getInt32(4, true) : null;
}

export function setLinger(fd: number, seconds: number): void {
  setOption(fd, SO.LINGER, new Uint8Array(new Int32Array([1, seconds]).buffer));
}

/** What came with a peeked message besides its bytes. */
export interface PeekedControl {
  /**
   * The fds in flight with it (SCM_RIGHTS): a peek installs copies in our process, which now
   * belong to the caller.
   */
  rights: number[];
  credentials: boolean;
  /** Any other control message (SCM_SECURITY, SCM_PIDFD...), or control data cut short. */
  other: boolean;
  /**
   * The name the sender was bound to when it sent (sun_path's bytes as the kernel keeps them: a
   * path with its NUL, an abstract name with its leading NUL); empty for an unnamed sender.
   */
  sender: Uint8Array<ArrayBuffer>;
}

const MSG_CTRUNC = 0x8;

function readControl(control: Uint8Array<ArrayBuffer>, len: number, msgFlags: number): PeekedControl {
  const v = new DataView(control.buffer);
  const seen: PeekedControl = {
    rights: [],
    credentials: false,
    other: (msgFlags & MSG_CTRUNC) !== 0,
    sender: new Uint8Array(0),
  };
  for (let off = 0; off + CMSG_HDR_SIZE <= len;) {
    const cmsgLen = Number(v.getBigUint64(off, true));
    if (cmsgLen < CMSG_HDR_SIZE) break;
    const level = v.getInt32(off + 8, true);
    const type = v.getInt32(off + 12, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let p = off + CMSG_HDR_SIZE; p + 4 <= off + cmsgLen; p += 4) seen.rights.push(v.getInt32(p, true));
    } else if (level === SOL_SOCKET && type === SCM_CREDENTIALS) {
      seen.credentials = true;
    } else {
      seen.other = true;
    }
    off += (cmsgLen + 7) & ~7;
  }
  return seen;
}

/**
 * Hands every message in the receive queue of socket `fd` to `each`, in order, without taking
 * any out: the socket's peek offset walks the queue and is put back as it was. A stream comes in
 * chunks of any size; a datagram or seqpacket socket gives one whole message per call (the buffer
 * grows for a large one). `each` sees a view into a reused buffer: it must use the bytes at once.
 * `endsAtEmpty`: a zero-length message means the end (a socket that can no longer receive);
 * otherwise a zero-length datagram is handed over and stops the walk (its peek offset cannot pass it).
 */
export function peekQueue(
  fd: number,
  datagrams: boolean,
  each: (bytes: Uint8Array<ArrayBuffer>, control: PeekedControl) => void,
): void {
  const saved = getIntOption(fd, SO.PEEK_OFF);
  setIntOption(fd, SO.PEEK_OFF, 0);
  try {
    let buf = new Uint8Array(PEEK_CHUNK);
    const control = new Uint8Array(CONTROL_SIZE);
    const name = new Uint8Array(SOCKADDR_UN_SIZE);
    let offset = 0;
    for (;;) {
      const iov = iovecs([{ base: addressOf(buf), len: buf.length }]);
      const msg = msghdr(
        1,
        addressOf(iov),
        { addr: addressOf(control), len: control.length },
        { addr: addressOf(name), len: name.length },
      );
      const flags = MSG_PEEK | MSG_DONTWAIT | (datagrams ? MSG_TRUNC : 0);
      const n = libc.recvmsg(fd, msg, flags);
      if (n < 0n) {
        const errno = lastErrno();
        if (errno === EINTR) continue;
        if (errno === EAGAIN) return;
        throw new SyscallError("recvmsg(MSG_PEEK)", errno);
      }
      const got = Number(n);
      const header = new DataView(msg.buffer);
      const seen = readControl(control, Number(header.getBigUint64(40, true)), header.getInt32(48, true));
      const nameLength = Math.min(header.getUint32(MSGHDR_NAMELEN_AT, true), name.length);
      if (nameLength > SUN_PATH_AT) seen.sender = name.slice(SUN_PATH_AT, nameLength);
      if (datagrams && got > buf.length) {
        for (const fd of seen.rights) libc.close(fd);
        // Truncated: walk back to its start and peek it again whole.
        setIntOption(fd, SO.PEEK_OFF, offset);
        buf = new Uint8Array(got);
        continue;
      }
      if (got === 0 && !datagrams) return;
      each(buf.subarray(0, got), seen);
      if (got === 0) return;
      offset += got;
    }
  } finally {
    setIntOption(fd, SO.PEEK_OFF, saved);
  }
}

/**
 * Sends `bytes` on socket `fd` (to `to` when given, a sockaddr; with the fds `rights` in flight),
 * without blocking; returns how many the kernel took (a stream may take part), 0 when the queue
 * is full.
 */
export function sendSome(
  fd: number,
  bytes: Uint8Array<ArrayBuffer>,
  to?: Uint8Array<ArrayBuffer>,
  rights: readonly number[] = [],
): number {
  const iov = iovecs([{ base: addressOf(bytes), len: bytes.length }]);
  const control = rights.length ? scmRights(rights) : null;
  const msg = msghdr(1, addressOf(iov), control ? { addr: addressOf(control), len: control.length } : null);
  if (to) {
    const v = new DataView(msg.buffer);
    v.setBigUint64(0, addressOf(to), true); // msg_name
    v.setUint32(8, to.length, true); // msg_namelen
  }
  for (;;) {
    const r = libc.sendmsg(fd, msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r >= 0n) return Number(r);
    const errno = lastErrno();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) return 0;
    throw new SyscallError("sendmsg", errno, `fd ${fd}`);
  }
}

/** SO_GET_FILTER and SO_ATTACH_FILTER are one number. */
const SO_FILTER = 26;
/** `struct sock_filter`: code u16, jt u8, jf u8, k u32. */
const SOCK_FILTER_SIZE = 8;

/**
 * The classic BPF program attached to the socket, one instruction per word as CRIU's images keep
 * it (code << 48 | jt << 40 | jf << 32 | k); empty when there is none.
 */
export function getFilter(fd: number): bigint[] {
  const len = new Uint32Array([0]);
  callBig("getsockopt(SO_GET_FILTER)", sys(NR.getsockopt, fd, SOL_SOCKET, SO_FILTER, 0, addressOf(len)));
  const count = len[0]!;
  if (count === 0) return [];
  const insns = new Uint8Array(count * SOCK_FILTER_SIZE);
  callBig(
    "getsockopt(SO_GET_FILTER)",
    sys(NR.getsockopt, fd, SOL_SOCKET, SO_FILTER, addressOf(insns), addressOf(len)),
  );
  const v = new DataView(insns.buffer);
  return Array.from({ length: count }, (_, i) => {
    const at = i * SOCK_FILTER_SIZE;
    return (BigInt(v.getUint16(at, true)) << 48n) | (BigInt(v.getUint8(at + 2)) << 40n) |
      (BigInt(v.getUint8(at + 3)) << 32n) | BigInt(v.getUint32(at + 4, true));
  });
}

/** Attaches the classic BPF program `words` (as getFilter gives it). */
export function setFilter(fd: number, words: readonly bigint[]): void {
  const insns = new Uint8Array(words.length * SOCK_FILTER_SIZE);
  const v = new DataView(insns.buffer);
  words.forEach((w, i) => {
    const at = i * SOCK_FILTER_SIZE;
    v.setUint16(at, Number((w >> 48n) & 0xffffn), true);
    v.setUint8(at + 2, Number((w >> 40n) & 0xffn));
    v.setUint8(at + 3, Number((w >> 32n) & 0xffn));
    v.setUint32(at + 4, Number(w & 0xffffffffn), true);
  });
  // struct sock_fprog: len u16, then the pointer at 8.
  const prog = new Uint8Array(16);
  const p = new DataView(prog.buffer);
  p.setUint16(0, words.length, true);
  p.setBigUint64(8, addressOf(insns), true);
  callBig("setsockopt(SO_ATTACH_FILTER)", sys(NR.setsockopt, fd, SOL_SOCKET, SO_FILTER, addressOf(prog), 16));
}

/** O_NONBLOCK on the open file (every fd of it, in every task). */
export function setNonblocking(fd: number): void {
  const F_GETFL = 3;
  const F_SETFL = 4;
  const O_NONBLOCK = 0o4000;
  const flags = callBig("fcntl(F_GETFL)", BigInt(libc.fcntl(fd, F_GETFL, 0n)), `fd ${fd}`);
  callBig("fcntl(F_SETFL)", BigInt(libc.fcntl(fd, F_SETFL, BigInt(flags | O_NONBLOCK))), `fd ${fd}`);
}

/** chmod and chown of a path, not following a last symlink. */
export function setFilePerms(path: string, mode: number, uid: number, gid: number): void {
  const p = cstr(path);
  const AT_FDCWD = -100;
  const AT_SYMLINK_NOFOLLOW = 0x100;
  callBig("fchownat", sys(NR.fchownat, AT_FDCWD, addressOf(p), uid, gid, AT_SYMLINK_NOFOLLOW), path);
  callBig("fchmodat", sys(NR.fchmodat, AT_FDCWD, addressOf(p), mode & 0o7777), path);
}

export { SO, socketProtocolName } from "./sockopt.ts";
