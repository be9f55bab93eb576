/**
 * Just enough netlink for the probes: build a request (header, fixed body, attributes), send it on
 * a netlink socket and collect the answers up to the kernel's ACK, error or end of dump.
 *
 * Layout (all little-endian on x86_64): a message is `struct nlmsghdr` {u32 len, u16 type,
 * u16 flags, u32 seq, u32 port} then the body, padded to 4 bytes; an attribute is {u16 len,
 * u16 type} then its payload, padded to 4 bytes.
 */
import { ERRNO, SyscallError } from "../../ffi/errors.ts";
import {
  type Answer,
  closeFd,
  failed,
  netlinkAnswer,
  rawSyscall,
  recvBytes,
  sendBytes,
  setsockoptBytes,
} from "../../ffi/probe.ts";
import { NR } from "../../ffi/syscalls.ts";

export const AF = { UNSPEC: 0, UNIX: 1, INET: 2, INET6: 10, NETLINK: 16, PACKET: 17 } as const;
export const NETLINK = { ROUTE: 0, SOCK_DIAG: 4 } as const;
export const NLM_F = {
  REQUEST: 1,
  MULTI: 2,
  ACK: 4,
  ROOT: 0x100,
  MATCH: 0x200,
  DUMP: 0x300,
  CREATE: 0x400,
} as const;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const HDR = 16;

const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;

function pad4(n: number): number {
  return (n + 3) & ~3;
}

function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** One attribute: header, payload, padding. */
export function attr(type: number, payload: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(pad4(4 + payload.length));
  const v = new DataView(out.buffer);
  v.setUint16(0, 4 + payload.length, true);
  v.setUint16(2, type, true);
  out.set(payload, 4);
  return out;
}

export function attrNested(type: number, children: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  return attr(type, concat(children));
}

export function attrS32(type: number, value: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, value, true);
  return attr(type, b);
}

export function attrString(type: number, s: string): Uint8Array<ArrayBuffer> {
  const text = new TextEncoder().encode(s);
  const b = new Uint8Array(text.length + 1);
  b.set(text);
  return attr(type, b);
}

/** A request: header, then `body` padded to 4, then the attributes. */
export function request(
  type: number,
  flags: number,
  body: Uint8Array,
  attrs: readonly Uint8Array[] = [],
): Uint8Array<ArrayBuffer> {
  const padded = new Uint8Array(pad4(body.length));
  padded.set(body);
  const msg = concat([new Uint8Array(HDR), padded, ...attrs]);
  const v = new DataView(msg.buffer);
  v.setUint32(0, msg.length, true);
  v.setUint16(4, type, true);
  v.setUint16(6, flags, true);
  v.setUint32(8, 1, true); // sequence number: one request at a time
  return msg;
}

/** One answer: its type and its payload (what follows the header). */
export interface Reply {
  type: number;
  payload: Uint8Array<ArrayBuffer>;
}

/** The attributes after a fixed body of `bodyLen` bytes, by type (nested ones left as bytes). */
export function parseAttrs(
  payload: Uint8Array<ArrayBuffer>,
  bodyLen: number,
): Map<number, Uint8Array<ArrayBuffer>> {
  const out = new Map<number, Uint8Array<ArrayBuffer>>();
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  let off = pad4(bodyLen);
  while (off + 4 <= payload.length) {
    const len = v.getUint16(off, true);
    if (len < 4 || off + len > payload.length) break;
    out.set(v.getUint16(off + 2, true) & 0x3fff, payload.slice(off + 4, off + len));
    off += pad4(len);
  }
  return out;
}

/** Bounds every wait for an answer on `fd` to one second: a missing answer is an error, not a hang. */
export function setReceiveTimeout(fd: number): void {
  const timeout = new BigInt64Array([1n, 0n]); // struct timeval
  setsockoptBytes(fd, SOL_SOCKET, SO_RCVTIMEO, new Uint8Array(timeout.buffer));
}

/** A netlink socket of `protocol` with a receive timeout, or the failure. */
export function openNetlink(protocol: number): Answer {
  const fd = rawSyscall(NR.socket, AF.NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
  if (!failed(fd)) setReceiveTimeout(fd);
  return fd;
}

/**
 * Sends `msg` and reads answers until the kernel's ACK or error (NLMSG_ERROR) or the end of a dump
 * (NLMSG_DONE). `error` is 0 or the failure, from the kernel's answer or from send/recv themselves.
 */
export function exchange(fd: number, msg: Uint8Array<ArrayBuffer>): { error: Answer; replies: Reply[] } {
  const replies: Reply[] = [];
  const sent = sendBytes(fd, msg);
  if (failed(sent)) return { error: sent, replies };
  for (;;) {
    const { r, bytes } = recvBytes(fd, 64 * 1024);
    if (failed(r)) return { error: r, replies };
    if (r === 0) return { error: new SyscallError("recvfrom(netlink)", ERRNO.ECONNRESET), replies }; // the kernel closed on us
    const v = new DataView(bytes.buffer);
    for (let off = 0; off + HDR <= bytes.length;) {
      const len = v.getUint32(off, true);
      const type = v.getUint16(off + 4, true);
      if (len < HDR || off + len > bytes.length) {
        return { error: new SyscallError("recvfrom(netlink)", ERRNO.EPROTO, "truncated message"), replies };
      }
      const payload = bytes.slice(off + HDR, off + len);
      if (type === NLMSG_ERROR || type === NLMSG_DONE) {
        return { error: netlinkAnswer("netlink", payload), replies };
      }
      replies.push({ type, payload });
      off += pad4(len);
    }
  }
}

/** Opens a netlink socket, runs one exchange, closes the socket. */
export function ask(protocol: number, msg: Uint8Array<ArrayBuffer>): { error: Answer; replies: Reply[] } {
  const fd = openNetlink(protocol);
  if (failed(fd)) return { error: fd, replies: [] };
  try {
    return exchange(fd, msg);
  } finally {
    closeFd(fd);
  }
}
