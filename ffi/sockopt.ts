/**
 * Socket options, queue-size ioctls and TCP repair, on an fd of our own process (a dump takes the
 * target's socket with pidfd_getfd first: `takeFd`). The options are those CRIU keeps in
 * sk-opts.proto (sk_opts_entry), ip_opts_entry and tcp_opts_entry; TCP repair is the kernel's
 * TCP_REPAIR interface through which an established connection's sequence numbers, windows, options
 * and queued bytes are read and written back.
 *
 * Layouts: `struct timeval` is two s64 (16 bytes); `struct linger { int onoff; int linger; }` 8;
 * `struct tcp_repair_opt { u32 code; u32 val; }` 8; `struct tcp_repair_window` five u32 (20);
 * `struct tcp_info` starts with seven u8 (state, ca_state, retransmits, probes, backoff, options, and
 * snd_wscale:4 | rcv_wscale:4 in one byte), one more u8, then u32 fields from offset 8.
 */
import { addressOf, callBig, cstr, lastErrno, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";
import { NR } from "./syscalls.ts";
import { bindSocket, connectSocket, MSG } from "./sockcall.ts";
import type { InetAddress } from "./sockaddr.ts";

export const SOL = { SOCKET: 1, IP: 0, TCP: 6, UDP: 17, IPV6: 41 } as const;

/** SOL_SOCKET option names (x86_64; SO_*TIMEO and SO_TIMESTAMP are the timeval-of-two-longs kinds). */
export const SO = {
  DEBUG: 1,
  REUSEADDR: 2,
  TYPE: 3,
  ERROR: 4,
  DONTROUTE: 5,
  BROADCAST: 6,
  SNDBUF: 7,
  RCVBUF: 8,
  KEEPALIVE: 9,
  OOBINLINE: 10,
  NO_CHECK: 11,
  PRIORITY: 12,
  LINGER: 13,
  REUSEPORT: 15,
  PASSCRED: 16,
  PEERCRED: 17,
  RCVLOWAT: 18,
  SNDLOWAT: 19,
  RCVTIMEO: 20,
  SNDTIMEO: 21,
  BINDTODEVICE: 25,
  ATTACH_FILTER: 26,
  GET_FILTER: 26,
  DETACH_FILTER: 27,
  PEERNAME: 28,
  TIMESTAMP: 29,
  ACCEPTCONN: 30,
  SNDBUFFORCE: 32,
  RCVBUFFORCE: 33,
  PASSSEC: 34,
  TIMESTAMPNS: 35,
  MARK: 36,
  PROTOCOL: 38,
  DOMAIN: 39,
  PEEK_OFF: 42,
  BUF_LOCK: 72,
} as const;

export const TCP = {
  NODELAY: 1,
  MAXSEG: 2,
  CORK: 3,
  KEEPIDLE: 4,
  KEEPINTVL: 5,
  KEEPCNT: 6,
  INFO: 11,
  REPAIR: 19,
  REPAIR_QUEUE: 20,
  QUEUE_SEQ: 21,
  REPAIR_OPTIONS: 22,
  TIMESTAMP: 24,
  REPAIR_WINDOW: 29,
} as const;
export const IP = {
  TOS: 1,
  TTL: 2,
  HDRINCL: 3,
  PKTINFO: 8,
  FREEBIND: 15,
  TRANSPARENT: 19,
  NODEFRAG: 22,
} as const;
export const IPV6 = { V6ONLY: 26, RECVPKTINFO: 49, TCLASS: 67, FREEBIND: 78 } as const;
export const UDP_CORK = 1;

/** Values of TCP_REPAIR. OFF_NO_WP leaves repair without sending a window probe. */
export const TCP_REPAIR_MODE = { OFF: 0, ON: 1, OFF_NO_WP: -1 } as const;
/** Values of TCP_REPAIR_QUEUE. */
export const TCP_QUEUE = { NONE: 0, RECV: 1, SEND: 2 } as const;
/** Option codes of TCP_REPAIR_OPTIONS. A window option's value is snd_wscale | rcv_wscale << 16. */
export const TCPOPT = { MSS: 2, WINDOW: 3, SACK_PERM: 4, TIMESTAMP: 8 } as const;
/** tcpi_options bits. */
export const TCPI_OPT = { TIMESTAMPS: 1, SACK: 2, WSCALE: 4, ECN: 8, ECN_SEEN: 16, SYN_DATA: 32 } as const;

/** The queue-size ioctls (SIOCINQ = FIONREAD, SIOCOUTQ = TIOCOUTQ). */
export const SIOC = { INQ: 0x541b, OUTQ: 0x5411, OUTQNSD: 0x894b } as const;
/** Socket ioctls of criu check's probes: the socket's network namespace, a unix socket's file. */
export const SIOC_SOCKET = { GSKNS: 0x894c, UNIXFILE: 0x89e0 } as const;

export const TIMEVAL_SIZE = 16;
export const LINGER_SIZE = 8;
export const TCP_REPAIR_OPT_SIZE = 8;
export const TCP_REPAIR_WINDOW_SIZE = 20;
/** As much of `struct tcp_info` as we ask for; the kernel copies min(ours, its own). */
export const TCP_INFO_SIZE = 256;
/** Interface names are at most 15 bytes and a NUL (IFNAMSIZ). */
const IFNAMSIZ = 16;

function sys(nr: number, ...args: (number | bigint)[]): bigint {
  const a = [...args.map(BigInt), 0n, 0n, 0n, 0n, 0n, 0n];
  return libc.syscall(BigInt(nr), a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!);
}

function optName(level: number, name: number): string {
  const table = level === SOL.SOCKET
    ? SO
    : level === SOL.TCP
    ? TCP
    : level === SOL.IP
    ? IP
    : level === SOL.IPV6
    ? IPV6
    : {};
  const prefix = level === SOL.SOCKET
    ? "SO_"
    : level === SOL.TCP
    ? "TCP_"
    : level === SOL.IP
    ? "IP_"
    : "IPV6_";
  const known = Object.entries(table).find(([, n]) => n === name);
  return known ? prefix + known[0] : `option ${level}/${name}`;
}

/** getsockopt into a buffer of `size` bytes; returns the bytes the kernel filled. */
export function getOptionBytes(
  fd: number,
  level: number,
  name: number,
  size: number,
): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(Math.max(size, 1));
  const len = new Uint32Array([size]);
  const rc = libc.getsockopt(fd, level, name, buf, new Uint8Array(len.buffer));
  if (rc === -1) throw new SyscallError(`getsockopt(${optName(level, name)})`, lastErrno(), `fd ${fd}`);
  return buf.slice(0, Math.min(len[0]!, size));
}

export function setOptionBytes(
  fd: number,
  level: number,
  name: number,
  value: Uint8Array<ArrayBuffer>,
): void {
  callBig(
    `setsockopt(${optName(level, name)})`,
    sys(NR.setsockopt, fd, level, name, addressOf(value), value.length),
    `fd ${fd}`,
  );
}

/** An int option. */
export function getIntOption(fd: number, level: number, name: number): number {
  const b = getOptionBytes(fd, level, name, 4);
  if (b.length === 1) return b[0]!; // a few IP options answer with one byte
  return new DataView(b.buffer).getInt32(0, true);
}

export function setIntOption(fd: number, level: number, name: number, value: number): void {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, value, true);
  setOptionBytes(fd, level, name, b);
}

export function getBoolOption(fd: number, level: number, name: number): boolean {
  return getIntOption(fd, level, name) !== 0;
}

export function setBoolOption(fd: number, level: number, name: number, value: boolean): void {
  setIntOption(fd, level, name, value ? 1 : 0);
}

/** A socket timeout; the kernel keeps it in jiffies, so it reads back rounded up to the tick (4 ms here). */
export interface Timeval {
  sec: number;
  usec: number;
}

export function getTimeval(fd: number, name: typeof SO.SNDTIMEO | typeof SO.RCVTIMEO): Timeval {
  const v = new DataView(getOptionBytes(fd, SOL.SOCKET, name, TIMEVAL_SIZE).buffer);
  return { sec: Number(v.getBigInt64(0, true)), usec: Number(v.getBigInt64(8, true)) };
}

export function setTimeval(fd: number, name: typeof SO.SNDTIMEO | typeof SO.RCVTIMEO, t: Timeval): void {
  const b = new Uint8Array(TIMEVAL_SIZE);
  const v = new DataView(b.buffer);
  v.setBigInt64(0, BigInt(t.sec), true);
  v.setBigInt64(8, BigInt(t.usec), true);
  setOptionBytes(fd, SOL.SOCKET, name, b);
}

export interface Linger {
  on: boolean;
  seconds: number;
}

export function getLinger(fd: number): Linger {
  const v = new DataView(getOptionBytes(fd, SOL.SOCKET, SO.LINGER, LINGER_SIZE).buffer);
  return { on: v.getInt32(0, true) !== 0, seconds: v.getInt32(4, true) };
}

export function setLinger(fd: number, l: Linger): void {
  const b = new Uint8Array(LINGER_SIZE);
  const v = new DataView(b.buffer);
  v.setInt32(0, l.on ? 1 : 0, true);
  v.setInt32(4, l.seconds, true);
  setOptionBytes(fd, SOL.SOCKET, SO.LINGER, b);
}

/** SO_BINDTODEVICE: the interface name, "" when the socket is not bound to one. */
export function getBoundDevice(fd: number): string {
  const b = getOptionBytes(fd, SOL.SOCKET, SO.BINDTODEVICE, IFNAMSIZ);
  const nul = b.indexOf(0);
  return new TextDecoder().decode(nul >= 0 ? b.subarray(0, nul) : b);
}

/** Binds the socket to interface `name`; "" unbinds it. */
export function setBoundDevice(fd: number, name: string): void {
  const bytes = new TextEncoder().encode(name);
  if (bytes.length >= IFNAMSIZ) throw new RangeError(`Interface name ${name} is longer than 15 bytes`);
  const b = new Uint8Array(bytes.length + 1);
  b.set(bytes);
  setOptionBytes(fd, SOL.SOCKET, SO.BINDTODEVICE, b);
}

/** One classic BPF instruction, `struct sock_filter` (8 bytes): u16 code, u8 jt, u8 jf, u32 k. */
export interface BpfInstruction {
  code: number;
  jt: number;
  jf: number;
  k: number;
}
export const SOCK_FILTER_SIZE = 8;
/** `struct sock_fprog`: u16 len, padding, then the pointer at 8 (16 bytes). */
export const SOCK_FPROG_SIZE = 16;

/** An instruction as CRIU's images keep it (sk_opts_entry.so_filter): code<<48 | jt<<40 | jf<<32 | k. */
export function encodeBpf(i: BpfInstruction): bigint {
  return (BigInt(i.code) << 48n) | (BigInt(i.jt) << 40n) | (BigInt(i.jf) << 32n) | BigInt(i.k >>> 0);
}

export function decodeBpf(v: bigint): BpfInstruction {
  return {
    code: Number((v >> 48n) & 0xffffn),
    jt: Number((v >> 40n) & 0xffn),
    jf: Number((v >> 32n) & 0xffn),
    k: Number(v & 0xffffffffn),
  };
}

/**
 * The classic BPF filter attached to the socket (SO_ATTACH_FILTER), empty when none. SO_GET_FILTER
 * counts its length in instructions, not bytes: asked with length 0 it answers how many there are.
 */
export function getSocketFilter(fd: number): BpfInstruction[] {
  const len = new Uint32Array([0]);
  const lenBytes = new Uint8Array(len.buffer);
  if (libc.getsockopt(fd, SOL.SOCKET, SO.GET_FILTER, null, lenBytes) === -1) {
    throw new SyscallError("getsockopt(SO_GET_FILTER)", lastErrno(), `fd ${fd}`);
  }
  const count = len[0]!;
  if (count === 0) return [];
  const buf = new Uint8Array(count * SOCK_FILTER_SIZE);
  if (libc.getsockopt(fd, SOL.SOCKET, SO.GET_FILTER, buf, lenBytes) === -1) {
    throw new SyscallError("getsockopt(SO_GET_FILTER)", lastErrno(), `fd ${fd}`);
  }
  const v = new DataView(buf.buffer);
  return Array.from({ length: Math.min(len[0]!, count) }, (_, i) => ({
    code: v.getUint16(i * 8, true),
    jt: v.getUint8(i * 8 + 2),
    jf: v.getUint8(i * 8 + 3),
    k: v.getUint32(i * 8 + 4, true),
  }));
}

/** Attaches a classic BPF filter (SO_ATTACH_FILTER). */
export function setSocketFilter(fd: number, program: readonly BpfInstruction[]): void {
  const insns = new Uint8Array(program.length * SOCK_FILTER_SIZE);
  const v = new DataView(insns.buffer);
  program.forEach((p, i) => {
    v.setUint16(i * 8, p.code, true);
    v.setUint8(i * 8 + 2, p.jt);
    v.setUint8(i * 8 + 3, p.jf);
    v.setUint32(i * 8 + 4, p.k >>> 0, true);
  });
  const fprog = new Uint8Array(SOCK_FPROG_SIZE);
  const f = new DataView(fprog.buffer);
  f.setUint16(0, program.length, true);
  f.setBigUint64(8, addressOf(insns), true);
  setOptionBytes(fd, SOL.SOCKET, SO.ATTACH_FILTER, fprog);
}

/** SO_DOMAIN, SO_TYPE and SO_PROTOCOL: what socket() made this socket with. */
export function socketKind(fd: number): { family: number; type: number; protocol: number } {
  return {
    family: getIntOption(fd, SOL.SOCKET, SO.DOMAIN),
    type: getIntOption(fd, SOL.SOCKET, SO.TYPE),
    protocol: getIntOption(fd, SOL.SOCKET, SO.PROTOCOL),
  };
}

/** The socket-level options of sk_opts_entry, as read from the kernel. */
export interface SocketOptions {
  sndbuf: number;
  rcvbuf: number;
  /** SO_BUF_LOCK: bit 0 SNDBUF, bit 1 RCVBUF set explicitly (so the kernel does not tune them). */
  bufLock: number;
  sndTimeout: Timeval;
  rcvTimeout: Timeval;
  reuseaddr: boolean;
  reuseport: boolean;
  /** Unix and netlink sockets only (CRIU keeps them there). */
  passcred?: boolean;
  passsec?: boolean;
  keepalive: boolean;
  priority: number;
  rcvlowat: number;
  mark: number;
  linger: Linger;
  /** "" when not bound to a device. */
  boundDevice: string;
  /** -1 when peeking does not use an offset (the default); unix sockets only. */
  peekOff?: number;
  broadcast: boolean;
  oobinline: boolean;
  timestamp: boolean;
  noCheck: boolean;
  dontroute: boolean;
  /** The attached classic BPF filter, empty when none (sk_opts_entry.so_filter, see `encodeBpf`). */
  filter: BpfInstruction[];
}

const AF_UNIX = 1;
const AF_NETLINK = 16;

/** Reads every option of SocketOptions from `fd`, whose family is `family`. */
export function readSocketOptions(fd: number, family: number): SocketOptions {
  const flag = (name: number) => getBoolOption(fd, SOL.SOCKET, name);
  const int = (name: number) => getIntOption(fd, SOL.SOCKET, name);
  const out: SocketOptions = {
    sndbuf: int(SO.SNDBUF),
    rcvbuf: int(SO.RCVBUF),
    bufLock: int(SO.BUF_LOCK),
    sndTimeout: getTimeval(fd, SO.SNDTIMEO),
    rcvTimeout: getTimeval(fd, SO.RCVTIMEO),
    reuseaddr: flag(SO.REUSEADDR),
    reuseport: flag(SO.REUSEPORT),
    keepalive: flag(SO.KEEPALIVE),
    priority: int(SO.PRIORITY),
    rcvlowat: int(SO.RCVLOWAT),
    mark: int(SO.MARK),
    linger: getLinger(fd),
    boundDevice: getBoundDevice(fd),
    broadcast: flag(SO.BROADCAST),
    oobinline: flag(SO.OOBINLINE),
    timestamp: flag(SO.TIMESTAMP),
    noCheck: flag(SO.NO_CHECK),
    dontroute: flag(SO.DONTROUTE),
    filter: getSocketFilter(fd),
  };
  if (family === AF_UNIX || family === AF_NETLINK) {
    out.passcred = flag(SO.PASSCRED);
    out.passsec = flag(SO.PASSSEC);
  }
  if (family === AF_UNIX) out.peekOff = int(SO.PEEK_OFF);
  return out;
}

/**
 * Writes the given options back. SO_SNDBUF/SO_RCVBUF take half the value the kernel reports (it
 * doubles what it is given), and go through the *FORCE variants so a root restore is not capped by
 * net.core.[rw]mem_max. Set the buffer sizes before bufLock: setting a size sets its lock bit.
 */
export function writeSocketOptions(fd: number, o: Partial<SocketOptions>): void {
  const flag = (name: number, v: boolean | undefined) =>
    v !== undefined && setBoolOption(fd, SOL.SOCKET, name, v);
  const int = (name: number, v: number | undefined) =>
    v !== undefined && setIntOption(fd, SOL.SOCKET, name, v);
  int(SO.SNDBUFFORCE, o.sndbuf === undefined ? undefined : Math.floor(o.sndbuf / 2));
  int(SO.RCVBUFFORCE, o.rcvbuf === undefined ? undefined : Math.floor(o.rcvbuf / 2));
  int(SO.BUF_LOCK, o.bufLock);
  if (o.sndTimeout) setTimeval(fd, SO.SNDTIMEO, o.sndTimeout);
  if (o.rcvTimeout) setTimeval(fd, SO.RCVTIMEO, o.rcvTimeout);
  flag(SO.REUSEADDR, o.reuseaddr);
  flag(SO.REUSEPORT, o.reuseport);
  flag(SO.PASSCRED, o.passcred);
  flag(SO.PASSSEC, o.passsec);
  flag(SO.KEEPALIVE, o.keepalive);
  int(SO.PRIORITY, o.priority);
  int(SO.RCVLOWAT, o.rcvlowat);
  if (o.mark) int(SO.MARK, o.mark); // needs CAP_NET_ADMIN; a 0 mark is the default anyway
  if (o.linger) setLinger(fd, o.linger);
  if (o.boundDevice) setBoundDevice(fd, o.boundDevice);
  int(SO.PEEK_OFF, o.peekOff);
  flag(SO.BROADCAST, o.broadcast);
  flag(SO.OOBINLINE, o.oobinline);
  flag(SO.TIMESTAMP, o.timestamp);
  flag(SO.NO_CHECK, o.noCheck);
  flag(SO.DONTROUTE, o.dontroute);
  if (o.filter?.length) setSocketFilter(fd, o.filter);
}

/** tcp_opts_entry: TCP-level options of a TCP socket. */
export interface TcpOptions {
  nodelay: boolean;
  cork: boolean;
  keepidle: number;
  keepintvl: number;
  keepcnt: number;
}

export function readTcpOptions(fd: number): TcpOptions {
  return {
    nodelay: getBoolOption(fd, SOL.TCP, TCP.NODELAY),
    cork: getBoolOption(fd, SOL.TCP, TCP.CORK),
    keepidle: getIntOption(fd, SOL.TCP, TCP.KEEPIDLE),
    keepintvl: getIntOption(fd, SOL.TCP, TCP.KEEPINTVL),
    keepcnt: getIntOption(fd, SOL.TCP, TCP.KEEPCNT),
  };
}

export function writeTcpOptions(fd: number, o: Partial<TcpOptions>): void {
  if (o.nodelay !== undefined) setBoolOption(fd, SOL.TCP, TCP.NODELAY, o.nodelay);
  if (o.cork !== undefined) setBoolOption(fd, SOL.TCP, TCP.CORK, o.cork);
  if (o.keepidle !== undefined) setIntOption(fd, SOL.TCP, TCP.KEEPIDLE, o.keepidle);
  if (o.keepintvl !== undefined) setIntOption(fd, SOL.TCP, TCP.KEEPINTVL, o.keepintvl);
  if (o.keepcnt !== undefined) setIntOption(fd, SOL.TCP, TCP.KEEPCNT, o.keepcnt);
}

/** ip_opts_entry (without the raw-socket part): IP-level options of an inet socket. */
export interface IpOptions {
  freebind: boolean;
  pktinfo: boolean;
  /** AF_INET only. */
  tos?: number;
  ttl?: number;
  /** AF_INET6 only. */
  v6only?: boolean;
}

export function readIpOptions(fd: number, family: number): IpOptions {
  if (family === 10) {
    return {
      freebind: getBoolOption(fd, SOL.IPV6, IPV6.FREEBIND),
      pktinfo: getBoolOption(fd, SOL.IPV6, IPV6.RECVPKTINFO),
      v6only: getBoolOption(fd, SOL.IPV6, IPV6.V6ONLY),
    };
  }
  return {
    freebind: getBoolOption(fd, SOL.IP, IP.FREEBIND),
    pktinfo: getBoolOption(fd, SOL.IP, IP.PKTINFO),
    tos: getIntOption(fd, SOL.IP, IP.TOS),
    ttl: getIntOption(fd, SOL.IP, IP.TTL),
  };
}

export function writeIpOptions(fd: number, family: number, o: Partial<IpOptions>): void {
  const v6 = family === 10;
  if (o.freebind !== undefined) {
    setBoolOption(fd, v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.FREEBIND : IP.FREEBIND, o.freebind);
  }
  if (o.pktinfo !== undefined) {
    setBoolOption(fd, v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.RECVPKTINFO : IP.PKTINFO, o.pktinfo);
  }
  if (o.v6only !== undefined && v6) setBoolOption(fd, SOL.IPV6, IPV6.V6ONLY, o.v6only);
  if (o.tos !== undefined && !v6) setIntOption(fd, SOL.IP, IP.TOS, o.tos);
  if (o.ttl !== undefined && !v6) setIntOption(fd, SOL.IP, IP.TTL, o.ttl);
}

/** An int-returning ioctl. */
function ioctlInt(fd: number, request: number, name: string): number {
  const out = new Int32Array(1);
  if (libc.ioctl(fd, BigInt(request), new Uint8Array(out.buffer)) === -1) {
    throw new SyscallError(`ioctl(${name})`, lastErrno(), `fd ${fd}`);
  }
  return out[0]!;
}

/**
 * What waits in a socket's queues. TCP: `inq` unread bytes (rcv_nxt - copied_seq), `outq` bytes not
 * yet acknowledged (write_seq - snd_una), `outqNotSent` bytes not yet sent at all. UDP: `inq` is the
 * size of the first datagram. Unix: `inq` unread bytes (stream) or the first datagram's size, `outq`
 * the memory (not bytes) of what the peer has not read. SIOCOUTQNSD is TCP only (0 elsewhere).
 */
export function queueSizes(fd: number, tcp: boolean): { inq: number; outq: number; outqNotSent: number } {
  return {
    inq: ioctlInt(fd, SIOC.INQ, "SIOCINQ"),
    outq: ioctlInt(fd, SIOC.OUTQ, "SIOCOUTQ"),
    outqNotSent: tcp ? ioctlInt(fd, SIOC.OUTQNSD, "SIOCOUTQNSD") : 0,
  };
}

/** The fields of `struct tcp_info` that a dump reads. */
export interface TcpInfo {
  state: number;
  caState: number;
  retransmits: number;
  probes: number;
  backoff: number;
  /** TCPI_OPT bits: which options the connection negotiated. */
  options: number;
  sndWscale: number;
  rcvWscale: number;
  rto: number;
  ato: number;
  sndMss: number;
  rcvMss: number;
  unacked: number;
  lost: number;
  retrans: number;
  pmtu: number;
  rtt: number;
  sndCwnd: number;
  advmss: number;
  totalRetrans: number;
}

export function tcpInfo(fd: number): TcpInfo {
  const b = getOptionBytes(fd, SOL.TCP, TCP.INFO, TCP_INFO_SIZE);
  if (b.length < 104) throw new SyscallError("getsockopt(TCP_INFO)", 22, `only ${b.length} bytes came back`);
  const v = new DataView(b.buffer);
  const u32 = (off: number) => v.getUint32(off, true);
  return {
    state: b[0]!,
    caState: b[1]!,
    retransmits: b[2]!,
    probes: b[3]!,
    backoff: b[4]!,
    options: b[5]!,
    sndWscale: b[6]! & 0xf,
    rcvWscale: b[6]! >> 4,
    rto: u32(8),
    ato: u32(12),
    sndMss: u32(16),
    rcvMss: u32(20),
    unacked: u32(24),
    lost: u32(32),
    retrans: u32(36),
    pmtu: u32(60),
    rtt: u32(68),
    sndCwnd: u32(80),
    advmss: u32(84),
    totalRetrans: u32(100),
  };
}

/** TCP_REPAIR on or off. In repair mode nothing is sent to the peer: no FIN on close, no SYN on connect. */
export function setTcpRepair(fd: number, mode: number): void {
  setIntOption(fd, SOL.TCP, TCP.REPAIR, mode);
}

/** Which queue TCP_QUEUE_SEQ, recv with MSG_PEEK and send act on in repair mode. */
export function selectRepairQueue(fd: number, queue: number): void {
  setIntOption(fd, SOL.TCP, TCP.REPAIR_QUEUE, queue);
}

/** The selected queue's sequence number: rcv_nxt for RECV, write_seq for SEND. */
export function getQueueSeq(fd: number): number {
  return getIntOption(fd, SOL.TCP, TCP.QUEUE_SEQ) >>> 0;
}

/** Sets the selected queue's sequence number (only before the socket is connected in repair mode). */
export function setQueueSeq(fd: number, seq: number): void {
  setIntOption(fd, SOL.TCP, TCP.QUEUE_SEQ, seq | 0);
}

/** Sets the options negotiated at the handshake (repair mode, after connect). */
export function setRepairOptions(fd: number, options: readonly { code: number; value: number }[]): void {
  const b = new Uint8Array(options.length * TCP_REPAIR_OPT_SIZE);
  const v = new DataView(b.buffer);
  options.forEach((o, i) => {
    v.setUint32(i * 8, o.code, true);
    v.setUint32(i * 8 + 4, o.value >>> 0, true);
  });
  setOptionBytes(fd, SOL.TCP, TCP.REPAIR_OPTIONS, b);
}

export interface TcpRepairWindow {
  sndWl1: number;
  sndWnd: number;
  maxWindow: number;
  rcvWnd: number;
  rcvWup: number;
}

export function getRepairWindow(fd: number): TcpRepairWindow {
  const v = new DataView(getOptionBytes(fd, SOL.TCP, TCP.REPAIR_WINDOW, TCP_REPAIR_WINDOW_SIZE).buffer);
  const u32 = (i: number) => v.getUint32(4 * i, true);
  return { sndWl1: u32(0), sndWnd: u32(1), maxWindow: u32(2), rcvWnd: u32(3), rcvWup: u32(4) };
}

export function setRepairWindow(fd: number, w: TcpRepairWindow): void {
  const b = new Uint8Array(TCP_REPAIR_WINDOW_SIZE);
  const v = new DataView(b.buffer);
  [w.sndWl1, w.sndWnd, w.maxWindow, w.rcvWnd, w.rcvWup].forEach((x, i) => v.setUint32(4 * i, x >>> 0, true));
  setOptionBytes(fd, SOL.TCP, TCP.REPAIR_WINDOW, b);
}

/**
 * Everything of an established TCP connection that TCP repair shows (what CRIU's tcp_stream_entry
 * keeps), with the bytes of both queues. The socket must be in repair mode; the selected queue is
 * left at NONE.
 */
export interface TcpStreamState {
  state: number;
  /** Unread received bytes and the sequence number after them (rcv_nxt). */
  inqLen: number;
  inqSeq: number;
  /** Bytes sent or to be sent and not acknowledged, and the sequence number after them (write_seq). */
  outqLen: number;
  outqSeq: number;
  /** Of outqLen, bytes not sent at all yet. */
  unsentLen: number;
  /** TCPI_OPT bits. */
  optMask: number;
  sndWscale: number;
  rcvWscale: number;
  mssClamp: number;
  /** TCP_TIMESTAMP's value, when timestamps were negotiated. */
  timestamp?: number;
  window: TcpRepairWindow;
  inq: Uint8Array<ArrayBuffer>;
  outq: Uint8Array<ArrayBuffer>;
}

/** Reads a repair-mode socket's queue `queue` of exactly `len` bytes (peeked: the queue stays). */
function peekQueue(fd: number, queue: number, len: number): { seq: number; bytes: Uint8Array<ArrayBuffer> } {
  selectRepairQueue(fd, queue);
  const seq = getQueueSeq(fd);
  if (len === 0) return { seq, bytes: new Uint8Array(0) };
  // Ask for one byte more than expected, to be sure the queue holds exactly `len`.
  const buf = new Uint8Array(len + 1);
  const n = callBig(
    "recv(MSG_PEEK) in TCP repair",
    sys(NR.recvfrom, fd, addressOf(buf), len + 1, MSG.PEEK | MSG.DONTWAIT, 0, 0),
    `fd ${fd}`,
  );
  if (n !== len) {
    throw new SyscallError(
      "recv(MSG_PEEK) in TCP repair",
      5,
      `the ${queue === TCP_QUEUE.RECV ? "receive" : "send"} queue holds ${n} bytes, expected ${len}`,
    );
  }
  return { seq, bytes: buf.slice(0, len) };
}

/** libsoccr_save's reading, on a socket already in repair mode. */
export function readTcpStream(fd: number): TcpStreamState {
  if (getIntOption(fd, SOL.TCP, TCP.REPAIR) !== TCP_REPAIR_MODE.ON) {
    throw new SyscallError("readTcpStream", 22, `fd ${fd} is not in TCP repair mode`);
  }
  const info = tcpInfo(fd);
  let { inq, outq, outqNotSent } = queueSizes(fd, true);
  // A FIN sent or to be sent counts in the send queue but is no data.
  const FIN_IN_SEND_QUEUE = [4, 9, 11]; // FIN_WAIT1, LAST_ACK, CLOSING
  if (FIN_IN_SEND_QUEUE.includes(info.state)) {
    if (outq > 0) outq--;
    if (outqNotSent > 0) outqNotSent--;
  }
  if (info.state === 7) [outq, outqNotSent] = [0, 0]; // CLOSE: a reset connection's queue cannot be read
  const recv = peekQueue(fd, TCP_QUEUE.RECV, inq);
  const send = peekQueue(fd, TCP_QUEUE.SEND, outq);
  selectRepairQueue(fd, TCP_QUEUE.NONE);
  const out: TcpStreamState = {
    state: info.state,
    inqLen: inq,
    inqSeq: recv.seq,
    outqLen: outq,
    outqSeq: send.seq,
    unsentLen: outqNotSent,
    optMask: info.options,
    sndWscale: info.options & TCPI_OPT.WSCALE ? info.sndWscale : 0,
    rcvWscale: info.options & TCPI_OPT.WSCALE ? info.rcvWscale : 0,
    mssClamp: getIntOption(fd, SOL.TCP, TCP.MAXSEG),
    window: getRepairWindow(fd),
    inq: recv.bytes,
    outq: send.bytes,
  };
  if (info.options & TCPI_OPT.TIMESTAMPS) out.timestamp = getIntOption(fd, SOL.TCP, TCP.TIMESTAMP) >>> 0;
  return out;
}

/**
 * In repair mode, appends `data` to queue `queue` without sending anything. The kernel builds one
 * linear buffer per call in repair mode and may refuse a large one (ENOMEM): chunks are halved then.
 */
export function fillRepairQueue(fd: number, queue: number, data: Uint8Array<ArrayBuffer>): void {
  selectRepairQueue(fd, queue);
  sendAll(fd, data, "send in TCP repair");
  selectRepairQueue(fd, TCP_QUEUE.NONE);
}

function sendAll(fd: number, data: Uint8Array<ArrayBuffer>, what: string): void {
  let done = 0;
  let chunkMax = data.length;
  while (done < data.length) {
    const chunk = data.subarray(done, done + chunkMax);
    const n = sys(NR.sendto, fd, addressOf(chunk), chunk.length, MSG.NOSIGNAL, 0, 0);
    if (n > 0n) {
      done += Number(n);
      continue;
    }
    const errno = n === 0n ? 0 : lastErrno();
    if (errno === 4) continue; // EINTR
    if (chunkMax > 1024) {
      chunkMax >>= 1;
      continue;
    }
    throw new SyscallError(what, errno || 5, `fd ${fd}, ${data.length - done} of ${data.length} bytes left`);
  }
}

/** The TCP_REPAIR_OPTIONS that bring back what `s` negotiated (as libsoccr sets them). */
export function repairOptionsOf(s: TcpStreamState): { code: number; value: number }[] {
  const out: { code: number; value: number }[] = [];
  if (s.optMask & TCPI_OPT.SACK) out.push({ code: TCPOPT.SACK_PERM, value: 0 });
  if (s.optMask & TCPI_OPT.WSCALE) {
    out.push({ code: TCPOPT.WINDOW, value: s.sndWscale + (s.rcvWscale << 16) });
  }
  if (s.optMask & TCPI_OPT.TIMESTAMPS) out.push({ code: TCPOPT.TIMESTAMP, value: 0 });
  out.push({ code: TCPOPT.MSS, value: s.mssClamp });
  return out;
}

/**
 * Rebuilds an established connection in a fresh TCP socket `fd` of the right family: repair mode on,
 * bind to `local`, sequence numbers, connect to `remote` (no SYN is sent), the negotiated options,
 * the timestamp, both queues (the part of the send queue never sent goes out normally, as libsoccr
 * does), and the windows. The socket is left in repair mode: the caller turns it off
 * (`setTcpRepair(fd, TCP_REPAIR_MODE.OFF)`) once the network may see it. Only ESTABLISHED is handled;
 * half-closed states need a FIN forged on the wire, which this does not do.
 */
export function restoreTcpStream(
  fd: number,
  s: TcpStreamState,
  local: InetAddress,
  remote: InetAddress,
): void {
  if (s.state !== 1) {
    throw new SyscallError(
      "restoreTcpStream",
      22,
      `TCP state ${s.state} cannot be restored, only ESTABLISHED (1)`,
    );
  }
  setTcpRepair(fd, TCP_REPAIR_MODE.ON);
  setBoolOption(fd, SOL.SOCKET, SO.REUSEADDR, true);
  bindSocket(fd, local);
  selectRepairQueue(fd, TCP_QUEUE.RECV);
  setQueueSeq(fd, (s.inqSeq - s.inqLen) >>> 0);
  selectRepairQueue(fd, TCP_QUEUE.SEND);
  setQueueSeq(fd, (s.outqSeq - s.outqLen) >>> 0);
  selectRepairQueue(fd, TCP_QUEUE.NONE);
  connectSocket(fd, remote);
  setRepairOptions(fd, repairOptionsOf(s));
  if (s.timestamp !== undefined) setIntOption(fd, SOL.TCP, TCP.TIMESTAMP, s.timestamp | 0);
  if (s.inqLen > 0) fillRepairQueue(fd, TCP_QUEUE.RECV, s.inq);
  const sentLen = s.outqLen - s.unsentLen;
  if (sentLen > 0) fillRepairQueue(fd, TCP_QUEUE.SEND, s.outq.subarray(0, sentLen));
  if (s.unsentLen > 0) {
    setTcpRepair(fd, TCP_REPAIR_MODE.OFF);
    sendAll(fd, s.outq.subarray(sentLen), "send of the unsent queue");
    setTcpRepair(fd, TCP_REPAIR_MODE.ON);
  }
  setRepairWindow(fd, s.window);
}

/**
 * The protocol name the kernel gives the socket behind `/proc/PID/fd/N` ("TCP", "UDPv6", "UNIX",
 * ...: the socket's `system.sockprotoname` attribute), or null when it cannot be read.
 */
export function socketProtocolName(path: string): string | null {
  const buf = new Uint8Array(64);
  const p = cstr(path);
  const name = cstr("system.sockprotoname");
  const n = sys(NR.getxattr, addressOf(p), addressOf(name), addressOf(buf), buf.length);
  if (n < 0n) return null;
  const len = Number(n);
  return new TextDecoder().decode(buf.subarray(0, buf[len - 1] === 0 ? len - 1 : len));
}
