/**
 * One TCP segment written by hand and sent through a raw socket, as if the peer of a connection
 * had sent it. A connection restored with TCP_REPAIR comes back established; the FIN the peer had
 * sent (CLOSE_WAIT, LAST_ACK, CLOSING) and the ACK of our own FIN (FIN_WAIT2) can only be replayed
 * by delivering such a segment to it, which is how CRIU's libsoccr does it.
 *
 * The segment carries the mark the network lock lets through (0xC114, CRIU's SOCCR_MARK), so it
 * reaches the connection while everything else of it is still dropped. The raw socket is
 * IPPROTO_RAW: we write the IP header ourselves (IPv4: the kernel fills in the header checksum and
 * total length; IPv6: nothing), and the TCP checksum over the pseudo-header.
 *
 * Layouts: IPv4 header 20 bytes (version/IHL, TOS, total length, id, fragment, TTL, protocol,
 * checksum, source, destination); IPv6 header 40 bytes (version/class/flow, payload length, next
 * header, hop limit, source, destination); TCP header 20 bytes without options (ports, seq, ack,
 * data offset in the high nibble, flags, window, checksum, urgent pointer). All big-endian.
 */
import { addressOf, lastErrno, libc } from "./libc.ts";
import { ERRNO, SyscallError } from "./errors.ts";
import { NR } from "./syscalls.ts";
import { AF, encodeSockaddr, type InetAddress, parseIP } from "./sockaddr.ts";
import { SO, SOL } from "./sockopt.ts";

const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_RAW = 255;
const IPPROTO_TCP = 6;
const IPV4_HEADER = 20;
const IPV6_HEADER = 40;
const TCP_HEADER = 20;
const TTL = 64;
/** The mark of packets the network lock lets through (CRIU's SOCCR_MARK). */
const PASS_MARK = 0xc114;

/** TCP header flags. */
export const TCP_FLAG = { FIN: 0x01, ACK: 0x10 } as const;

/** What the segment says: its sequence and acknowledgement numbers, flags and window field. */
export interface Segment {
  seq: number;
  ack: number;
  flags: number;
  window: number;
}

function sys(nr: number, ...args: (number | bigint)[]): bigint {
  const a = [...args.map(BigInt), 0n, 0n, 0n, 0n, 0n, 0n];
  return libc.syscall(BigInt(nr), a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!);
}

function checked(name: string, f: () => bigint, detail: string): number {
  for (;;) {
    const r = f();
    if (r !== -1n) return Number(r);
    const errno = lastErrno();
    if (errno !== ERRNO.EINTR) throw new SyscallError(name, errno, detail);
  }
}

/** An address as IPv4 when it is an IPv4-mapped IPv6 one (the packet goes on the wire as IPv4). */
function wireAddress(a: InetAddress): { family: 4 | 6; ip: Uint8Array<ArrayBuffer> } {
  if (a.family === AF.INET) return { family: 4, ip: parseIP(a.address, AF.INET) };
  const ip = parseIP(a.address, AF.INET6);
  const mapped = ip.subarray(0, 10).every((b) => b === 0) && ip[10] === 0xff && ip[11] === 0xff;
  return mapped ? { family: 4, ip: ip.slice(12) } : { family: 6, ip };
}

/** The ones' complement sum of `parts`, folded to 16 bits and inverted. */
function internetChecksum(parts: readonly Uint8Array[]): number {
  let sum = 0;
  for (const p of parts) {
    for (let i = 0; i < p.length; i += 2) sum += (p[i]! << 8) | (p[i + 1] ?? 0);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function tcpHeader(from: InetAddress, to: InetAddress, s: Segment): Uint8Array<ArrayBuffer> {
  const h = new Uint8Array(TCP_HEADER);
  const v = new DataView(h.buffer);
  v.setUint16(0, from.port);
  v.setUint16(2, to.port);
  v.setUint32(4, s.seq >>> 0);
  v.setUint32(8, s.ack >>> 0);
  h[12] = (TCP_HEADER / 4) << 4;
  h[13] = s.flags;
  v.setUint16(14, Math.min(s.window, 0xffff));
  return h;
}

function pseudoHeader(family: 4 | 6, src: Uint8Array, dst: Uint8Array, length: number): Uint8Array {
  if (family === 4) {
    const p = new Uint8Array(12);
    p.set(src, 0);
    p.set(dst, 4);
    p[9] = IPPROTO_TCP;
    new DataView(p.buffer).setUint16(10, length);
    return p;
  }
  const p = new Uint8Array(40);
  p.set(src, 0);
  p.set(dst, 16);
  new DataView(p.buffer).setUint32(32, length);
  p[39] = IPPROTO_TCP;
  return p;
}

function ipHeader(family: 4 | 6, src: Uint8Array, dst: Uint8Array, payload: number): Uint8Array {
  if (family === 4) {
    const h = new Uint8Array(IPV4_HEADER);
    h[0] = 0x45;
    new DataView(h.buffer).setUint16(2, IPV4_HEADER + payload);
    h[8] = TTL;
    h[9] = IPPROTO_TCP;
    h.set(src, 12);
    h.set(dst, 16);
    return h;
  }
  const h = new Uint8Array(IPV6_HEADER);
  h[0] = 0x60;
  new DataView(h.buffer).setUint16(4, payload);
  h[6] = IPPROTO_TCP;
  h[7] = TTL;
  h.set(src, 8);
  h.set(dst, 24);
  return h;
}

/** The whole packet from `from` to `to`, checksummed. */
export function buildSegment(
  from: InetAddress,
  to: InetAddress,
  s: Segment,
): { family: 4 | 6; packet: Uint8Array<ArrayBuffer> } {
  const src = wireAddress(from);
  const dst = wireAddress(to);
  const tcp = tcpHeader(from, to, s);
  const sum = internetChecksum([pseudoHeader(src.family, src.ip, dst.ip, tcp.length), tcp]);
  new DataView(tcp.buffer).setUint16(16, sum);
  const ip = ipHeader(src.family, src.ip, dst.ip, tcp.length);
  const packet = new Uint8Array(ip.length + tcp.length);
  packet.set(ip, 0);
  packet.set(tcp, ip.length);
  return { family: src.family, packet };
}

/** The raw socket a segment between these addresses needs: socket(domain, type, protocol). */
export function rawSocketFor(from: InetAddress): { domain: number; type: number; protocol: number } {
  return {
    domain: wireAddress(from).family === 4 ? AF.INET : AF.INET6,
    type: SOCK_RAW | SOCK_CLOEXEC,
    protocol: IPPROTO_RAW,
  };
}

/**
 * Sends segment `s` from `from` to `to` with the lock's pass mark, through `raw`, a socket made as
 * rawSocketFor says in the network namespace of the connection.
 */
export function injectSegment(raw: number, from: InetAddress, to: InetAddress, s: Segment): void {
  const { family, packet } = buildSegment(from, to, s);
  const what = `a segment from ${from.address}:${from.port} to ${to.address}:${to.port}`;
  const mark = new Int32Array([PASS_MARK]);
  checked(
    "setsockopt(SO_MARK)",
    () => sys(NR.setsockopt, raw, SOL.SOCKET, SO.MARK, addressOf(mark), 4),
    what,
  );
  const dest: InetAddress = family === 4
    ? { family: AF.INET, address: ipv4Text(packet.subarray(16, 20)), port: 0, scopeId: 0, flowinfo: 0 }
    : { ...to, family: AF.INET6, port: 0, flowinfo: 0 };
  const { bytes, len } = encodeSockaddr(dest);
  const sent = checked(
    "sendto",
    () => sys(NR.sendto, raw, addressOf(packet), packet.length, 0, addressOf(bytes), len),
    what,
  );
  if (sent !== packet.length) {
    throw new SyscallError("sendto", ERRNO.EIO, `${what}: ${sent} of ${packet.length} bytes`);
  }
}

function ipv4Text(b: Uint8Array): string {
  return Array.from(b).join(".");
}
