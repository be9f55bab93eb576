/**
 * Calls on IPv4/IPv6 TCP and UDP sockets of our own process: a copy of another task's socket
 * (pidfd_getfd), socket options, names, queue sizes, TCP_INFO and the TCP_REPAIR family, and the
 * repair-mode reads and writes of a connection's queues. The inet socket kind (dump and restore)
 * works on such copies: a copy is the same socket, so what is set on it holds for the task's fd.
 *
 * Layouts (x86_64): `struct tcp_info` starts with u8 state, ca_state, retransmits, probes, backoff,
 * options, then a byte of snd_wscale (low nibble) and rcv_wscale (high nibble), then u32 rto, ato,
 * snd_mss, rcv_mss, unacked (24), sacked (28). A listener reports the connections waiting to be
 * accepted in `unacked` and its backlog in `sacked`. `struct tcp_repair_window` is five u32:
 * snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup. `struct tcp_repair_opt` is u32 code, u32 value.
 * `struct timeval` is two i64; `struct linger` two i32.
 */
import { addressOf, cstr, lastErrno, libc } from "./libc.ts";
import { ERRNO, SyscallError } from "./errors.ts";
import { NR } from "./syscalls.ts";
import { SO, SOL, TCP } from "./sockopt.ts";
import { decodeSockaddr, encodeSockaddr, SOCKADDR_STORAGE_SIZE, type SocketAddress } from "./sockaddr.ts";

/** The kernel's TCP states (include/net/tcp_states.h). */
export const TCP_STATE = {
  ESTABLISHED: 1,
  SYN_SENT: 2,
  SYN_RECV: 3,
  FIN_WAIT1: 4,
  FIN_WAIT2: 5,
  TIME_WAIT: 6,
  CLOSE: 7,
  CLOSE_WAIT: 8,
  LAST_ACK: 9,
  LISTEN: 10,
  CLOSING: 11,
} as const;

const SIOCINQ = 0x541b;
const SIOCOUTQ = 0x5411;
const SIOCOUTQNSD = 0x894b;
const MSG_PEEK = 0x2;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const F_GETFL = 3;
const F_SETFL = 4;
const ENOTCONN = 107;
const ENOPROTOOPT = 92;

/** A raw syscall: the result, or -1 with errno set. */
function sys(nr: number, ...args: (number | bigint)[]): bigint {
  const a = [...args.map(BigInt), 0n, 0n, 0n, 0n, 0n, 0n];
  return libc.syscall(BigInt(nr), a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!);
}

/** Runs a call, repeating it when a signal interrupted it; failures become SyscallErrors. */
function checked(name: string, f: () => bigint, detail?: string): number {
  for (;;) {
    const r = f();
    if (r !== -1n) return Number(r);
    const errno = lastErrno();
    if (errno !== ERRNO.EINTR) throw new SyscallError(name, errno, detail);
  }
}

/** getsockopt into a buffer of `size` bytes; returns the bytes the kernel filled in. */
export function getOption(fd: number, level: number, name: number, size: number): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(Math.max(size, 1));
  const len = new Uint32Array([size]);
  checked(
    "getsockopt",
    () => sys(NR.getsockopt, fd, level, name, addressOf(buf), addressOf(len)),
    `level ${level}, option ${name}`,
  );
  return buf.slice(0, Math.min(len[0]!, size));
}

/** An int socket option. */
export function getIntOption(fd: number, level: number, name: number): number {
  const b = getOption(fd, level, name, 4);
  return b.length >= 4 ? new DataView(b.buffer).getInt32(0, true) : 0;
}

/** An int socket option, or undefined when this kernel or this kind of socket does not have it. */
export function getIntOptionIfAny(fd: number, level: number, name: number): number | undefined {
  try {
    return getIntOption(fd, level, name);
  } catch (e) {
    const absent = [ENOPROTOOPT, ERRNO.EINVAL, ERRNO.EOPNOTSUPP];
    if (e instanceof SyscallError && absent.includes(e.errno)) return undefined;
    throw e;
  }
}

export function setOption(fd: number, level: number, name: number, value: Uint8Array<ArrayBuffer>): void {
  checked(
    "setsockopt",
    () => sys(NR.setsockopt, fd, level, name, addressOf(value), value.length),
    `level ${level}, option ${name}`,
  );
}

export function setIntOption(fd: number, level: number, name: number, value: number): void {
  setOption(fd, level, name, new Uint8Array(new Int32Array([value]).buffer));
}

/** SO_SNDTIMEO/SO_RCVTIMEO as seconds and microseconds. */
export function getTimeout(fd: number, name: number): { sec: bigint; usec: bigint } {
  const b = getOption(fd, SOL.SOCKET, name, 16);
  const v = new DataView(b.buffer);
  return { sec: v.getBigInt64(0, true), usec: v.getBigInt64(8, true) };
}

export function setTimeout(fd: number, name: number, sec: bigint, usec: bigint): void {
  setOption(fd, SOL.SOCKET, name, new Uint8Array(new BigInt64Array([sec, usec]).buffer));
}

/** SO_LINGER: the linger time in seconds when lingering is on, else undefined. */
export function getLinger(fd: number): number | undefined {
  const v = new DataView(getOption(fd, SOL.SOCKET, SO.LINGER, 8).buffer);
  return v.getInt32(0, true) ? v.getInt32(4, true) : undefined;
}

export function setLinger(fd: number, seconds: number): void {
  setOption(fd, SOL.SOCKET, SO.LINGER, new Uint8Array(new Int32Array([1, seconds]).buffer));
}

/** SO_BINDTODEVICE: the interface the socket is bound to, or "" for none. */
export function getBoundDevice(fd: number): string {
  const b = getOption(fd, SOL.SOCKET, SO.BINDTODEVICE, 16);
  const nul = b.indexOf(0);
  return new TextDecoder().decode(nul >= 0 ? b.subarray(0, nul) : b);
}

export function setBoundDevice(fd: number, name: string): void {
  setOption(fd, SOL.SOCKET, SO.BINDTODEVICE, cstr(name));
}

/** How many instructions the attached classic-BPF filter has (0: none). */
export function filterLength(fd: number): number {
  const len = new Uint32Array([0]);
  checked(
    "getsockopt(SO_GET_FILTER)",
    () => sys(NR.getsockopt, fd, SOL.SOCKET, SO.GET_FILTER, 0, addressOf(len)),
  );
  return len[0]!;
}

function nameOf(nr: number, what: string, fd: number): SocketAddress | null {
  const buf = new Uint8Array(SOCKADDR_STORAGE_SIZE);
  const len = new Uint32Array([SOCKADDR_STORAGE_SIZE]);
  const r = sys(nr, fd, addressOf(buf), addressOf(len));
  if (r === -1n) {
    const errno = lastErrno();
    if (errno === ENOTCONN) return null;
    throw new SyscallError(what, errno, `fd ${fd}`);
  }
  return decodeSockaddr(buf, Math.min(len[0]!, SOCKADDR_STORAGE_SIZE));
}

/** The address the socket is bound to. */
export function localName(fd: number): SocketAddress {
  return nameOf(NR.getsockname, "getsockname", fd)!;
}

/** The address of the connected peer, or null when the socket is not connected. */
export function remoteName(fd: number): SocketAddress | null {
  return nameOf(NR.getpeername, "getpeername", fd);
}

function addressText(addr: SocketAddress): string {
  if (addr.family === 1) return "unix socket";
  if (addr.family === 16) return "netlink socket";
  return addr.family === 10 ? `[${addr.address}]:${addr.port}` : `${addr.address}:${addr.port}`;
}

export function bindTo(fd: number, addr: SocketAddress): void {
  const { bytes, len } = encodeSockaddr(addr);
  checked("bind", () => BigInt(libc.bind(fd, bytes, len)), addressText(addr));
}

export function listenOn(fd: number, backlog: number): void {
  checked("listen", () => BigInt(libc.listen(fd, backlog)), `fd ${fd}`);
}

/** connect() that completes at once: a UDP socket, or a TCP socket in repair mode. */
export function connectTo(fd: number, addr: SocketAddress): void {
  const { bytes, len } = encodeSockaddr(addr);
  checked("connect", () => BigInt(libc.connect(fd, bytes, len)), addressText(addr));
}

/** Sets or clears O_NONBLOCK on the open file. */
export function setNonBlocking(fd: number, on: boolean): void {
  const flags = checked("fcntl(F_GETFL)", () => sys(NR.fcntl, fd, F_GETFL));
  const want = on ? flags | 0o4000 : flags & ~0o4000;
  if (want !== flags) checked("fcntl(F_SETFL)", () => sys(NR.fcntl, fd, F_SETFL, want));
}

function ioctlInt(fd: number, request: number, name: string): number {
  const v = new Int32Array(1);
  checked(name, () => sys(NR.ioctl, fd, request, addressOf(v)), `fd ${fd}`);
  return v[0]!;
}

/** The bytes in a TCP socket's queues: received and unread, unacknowledged (sent or not), unsent. */
export function queueLengths(fd: number): { inq: number; outq: number; unsent: number } {
  return {
    inq: ioctlInt(fd, SIOCINQ, "ioctl(SIOCINQ)"),
    outq: ioctlInt(fd, SIOCOUTQ, "ioctl(SIOCOUTQ)"),
    unsent: ioctlInt(fd, SIOCOUTQNSD, "ioctl(SIOCOUTQNSD)"),
  };
}

export interface TcpInfo {
  state: number;
  /** TCPI_OPT_* bits. */
  options: number;
  sndWscale: number;
  rcvWscale: number;
  /** A listener: the connections waiting to be accepted. */
  unacked: number;
  /** A listener: its backlog. */
  sacked: number;
}

export function tcpInfo(fd: number): TcpInfo {
  const b = getOption(fd, SOL.TCP, TCP.INFO, 104);
  const v = new DataView(b.buffer);
  return {
    state: b[0]!,
    options: b[5]!,
    sndWscale: b[6]! & 0xf,
    rcvWscale: b[6]! >> 4,
    unacked: v.getUint32(24, true),
    sacked: v.getUint32(28, true),
  };
}

export interface RepairWindow {
  sndWl1: number;
  sndWnd: number;
  maxWindow: number;
  rcvWnd: number;
  rcvWup: number;
}

export function getRepairWindow(fd: number): RepairWindow {
  const v = new DataView(getOption(fd, SOL.TCP, TCP.REPAIR_WINDOW, 20).buffer);
  const u = (i: number) => v.getUint32(4 * i, true);
  return { sndWl1: u(0), sndWnd: u(1), maxWindow: u(2), rcvWnd: u(3), rcvWup: u(4) };
}

export function setRepairWindow(fd: number, w: RepairWindow): void {
  const words = new Uint32Array([w.sndWl1, w.sndWnd, w.maxWindow, w.rcvWnd, w.rcvWup]);
  setOption(fd, SOL.TCP, TCP.REPAIR_WINDOW, new Uint8Array(words.buffer));
}

/** TCP_REPAIR_OPTIONS: option code and value pairs, as the handshake would have agreed them. */
export function setRepairOptions(fd: number, opts: readonly [number, number][]): void {
  if (opts.length === 0) return;
  setOption(fd, SOL.TCP, TCP.REPAIR_OPTIONS, new Uint8Array(new Uint32Array(opts.flat()).buffer));
}

/** The sequence number of the selected queue's end (TCP_QUEUE_SEQ), as an unsigned 32-bit value. */
export function getQueueSeq(fd: number): number {
  return getIntOption(fd, SOL.TCP, TCP.QUEUE_SEQ) >>> 0;
}

export function setQueueSeq(fd: number, seq: number): void {
  setIntOption(fd, SOL.TCP, TCP.QUEUE_SEQ, seq | 0);
}

/**
 * Copies the selected queue's first `into.length` bytes (repair mode, MSG_PEEK: nothing is taken
 * off the queue). The send queue can only be read whole.
 */
export function peekQueue(fd: number, into: Uint8Array<ArrayBuffer>, what: string): number {
  if (into.length === 0) return 0;
  return checked(
    "recv(MSG_PEEK)",
    () => sys(NR.recvfrom, fd, addressOf(into), into.length, MSG_PEEK | MSG_DONTWAIT, 0, 0),
    what,
  );
}

/**
 * Queues `bytes` with send(): in repair mode straight into the selected queue, else as ordinary
 * data. A chunk the kernel has no memory for is halved and tried again, as the kernel takes a
 * repair-mode chunk whole or not at all. Throws when the socket's buffer has no room left.
 */
export function queueAll(fd: number, bytes: Uint8Array<ArrayBuffer>, what: string): void {
  let chunk = bytes.length;
  for (let off = 0; off < bytes.length;) {
    const part = bytes.subarray(off, off + Math.min(chunk, bytes.length - off));
    // Never waits: nothing would free room while the connection is locked and in repair.
    const r = sys(NR.sendto, fd, addressOf(part), part.length, MSG_NOSIGNAL | MSG_DONTWAIT, 0, 0);
    if (r >= 0n) {
      off += Number(r);
      continue;
    }
    const errno = lastErrno();
    if (errno === ERRNO.EINTR) continue;
    if ((errno === ERRNO.ENOMEM || errno === ERRNO.EAGAIN) && chunk > 1024) {
      chunk = Math.floor(chunk / 2);
      continue;
    }
    throw new SyscallError("send", errno, what);
  }
}

export { copyFdOf } from "./process.ts";
export { IP, IPV6, SO, SOL, TCP, TCP_QUEUE, TCPI_OPT, TCPOPT } from "./sockopt.ts";
export { socketProtocolName } from "./sockopt.ts";

/** shutdown(SHUT_WR): in repair mode this puts our FIN in the send queue without a packet. */
export function shutdownWrite(fd: number): void {
  const SHUT_WR = 1;
  checked("shutdown(SHUT_WR)", () => sys(NR.shutdown, fd, SHUT_WR), `fd ${fd}`);
}
