/**
 * The plain socket calls on fds of our own process, with addresses of every family: what a restore
 * needs to rebuild a socket (socket, bind, listen, connect, shutdown, queue data back with send) and
 * what tests need to make the sockets they inspect. Every fd made here is close-on-exec. Calls that
 * libc.ts does not bind go through syscall(2).
 */
import { addressOf, call, callBig, lastErrno, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";
import { NR } from "./syscalls.ts";
import { decodeSockaddr, encodeSockaddr, SOCKADDR_STORAGE_SIZE, type SocketAddress } from "./sockaddr.ts";

export const SOCK = {
  STREAM: 1,
  DGRAM: 2,
  RAW: 3,
  SEQPACKET: 5,
  NONBLOCK: 0o4000,
  CLOEXEC: 0o2000000,
} as const;
export const SHUT = { RD: 0, WR: 1, RDWR: 2 } as const;
export const MSG = {
  OOB: 0x1,
  PEEK: 0x2,
  DONTROUTE: 0x4,
  TRUNC: 0x20,
  DONTWAIT: 0x40,
  NOSIGNAL: 0x4000,
  CMSG_CLOEXEC: 0x40000000,
} as const;

const EINTR = 4;

/** A raw syscall through libc's syscall(): -1 and errno on failure, as libc wrappers do. */
function sys(nr: number, ...args: (number | bigint)[]): bigint {
  const a = [...args.map(BigInt), 0n, 0n, 0n, 0n, 0n, 0n];
  return libc.syscall(BigInt(nr), a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!);
}

/** Repeats a call interrupted by a signal. */
function retrying(name: string, f: () => bigint, detail?: string): number {
  for (;;) {
    const r = f();
    if (r !== -1n) return Number(r);
    const errno = lastErrno();
    if (errno !== EINTR) throw new SyscallError(name, errno, detail);
  }
}

/** socket(family, type | SOCK_CLOEXEC, protocol). */
export function makeSocket(family: number, type: number, protocol = 0): number {
  return call("socket", libc.socket(family, type | SOCK.CLOEXEC, protocol), `family ${family}, type ${type}`);
}

/** socketpair(AF_UNIX, type | SOCK_CLOEXEC). */
export function makeSocketPair(type: number): [number, number] {
  const fds = new Int32Array(2);
  call("socketpair", libc.socketpair(1, type | SOCK.CLOEXEC, 0, new Uint8Array(fds.buffer)), `type ${type}`);
  return [fds[0]!, fds[1]!];
}

function addressText(addr: SocketAddress): string {
  if (addr.family === 1) return new TextDecoder().decode(addr.name).replace(/^\0/, "@");
  if (addr.family === 16) return `netlink port ${addr.portid} groups 0x${addr.groups.toString(16)}`;
  return addr.family === 10 ? `[${addr.address}]:${addr.port}` : `${addr.address}:${addr.port}`;
}

export function bindSocket(fd: number, addr: SocketAddress): void {
  const { bytes, len } = encodeSockaddr(addr);
  call("bind", libc.bind(fd, bytes, len), addressText(addr));
}

export function listenSocket(fd: number, backlog: number): void {
  call("listen", libc.listen(fd, backlog), `fd ${fd}`);
}

/**
 * connect(); on a non-blocking socket EINPROGRESS is not an error (the connection completes later).
 * Returns false in that case.
 */
export function connectSocket(fd: number, addr: SocketAddress): boolean {
  const { bytes, len } = encodeSockaddr(addr);
  for (;;) {
    if (libc.connect(fd, bytes, len) === 0) return true;
    const errno = lastErrno();
    if (errno === EINTR) continue;
    if (errno === 115) return false; // EINPROGRESS
    throw new SyscallError("connect", errno, addressText(addr));
  }
}

/** accept4 with SOCK_CLOEXEC. */
export function acceptSocket(fd: number): number {
  return retrying("accept4", () => BigInt(libc.accept4(fd, null, null, SOCK.CLOEXEC)), `fd ${fd}`);
}

export function shutdownSocket(fd: number, how: number): void {
  callBig("shutdown", sys(NR.shutdown, fd, how), `fd ${fd}`);
}

/** send(); returns how many bytes the kernel took. */
export function sendBytes(fd: number, data: Uint8Array<ArrayBuffer>, flags: number = MSG.NOSIGNAL): number {
  return retrying("sendto", () => sys(NR.sendto, fd, addressOf(data), data.length, flags, 0, 0), `fd ${fd}`);
}

/** recv() into a new buffer of `max` bytes; returns what came (empty at end of stream). */
export function receiveBytes(fd: number, max: number, flags = 0): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(Math.max(max, 1));
  const n = retrying("recvfrom", () => sys(NR.recvfrom, fd, addressOf(buf), max, flags, 0, 0), `fd ${fd}`);
  return buf.slice(0, Math.min(n, max));
}

function nameOf(nr: number, call: string, fd: number): SocketAddress {
  const buf = new Uint8Array(SOCKADDR_STORAGE_SIZE);
  const len = new Uint32Array([SOCKADDR_STORAGE_SIZE]);
  callBig(call, sys(nr, fd, addressOf(buf), addressOf(len)), `fd ${fd}`);
  return decodeSockaddr(buf, Math.min(len[0]!, SOCKADDR_STORAGE_SIZE));
}

/** getsockname(): the address the socket is bound to. */
export function socketName(fd: number): SocketAddress {
  return nameOf(NR.getsockname, "getsockname", fd);
}

/** getpeername(): the address of the connected peer (ENOTCONN when there is none). */
export function peerName(fd: number): SocketAddress {
  return nameOf(NR.getpeername, "getpeername", fd);
}

/** The inode number of a socket fd of ours, as /proc shows it ("socket:[INO]"). */
export function socketInode(fd: number): number {
  const link = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  const m = /^socket:\[(\d+)\]$/.exec(link);
  if (!m) throw new Error(`fd ${fd} is not a socket: it is ${link}`);
  return Number(m[1]);
}

export function closeSocket(fd: number): void {
  if (fd >= 0) libc.close(fd);
}
