/**
 * Just enough netlink for the probes: build a request (header, fixed body, attributes), send it on
 * a netlink socket and collect the answers up to the kernel's ACK, error or end of dump.
 *
 * Layout (all little-endian on x86_64): a message is `struct nlmsghdr` {u32 len, u16 type,
 * u16 flags, u32 seq, u32 port} then the body, padded to 4 bytes; an attribute is {u16 len,
 * u16 type} then its payload, padded to 4 bytes.
 */
import { ERRNO, SyscallError } from "./errors.ts";
import {
  type Answer,
  closeFd,
  failed,
  netlinkAnswer,
  rawSyscall,
  recvBytes,
  sendBytes,
  setsockoptBytes,
} from "./probe.ts";
import { SOCK } from "./sockcall.ts";
import { NLMSG_DONE, NLMSG_ERROR, NLMSGHDR_SIZE } from "./sock_diag.ts";
import { SO } from "./sockopt.ts";
import { SOL_SOCKET, writeS64s } from "./structs.ts";
import { NR } from "./syscalls.ts";

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
const HDR = NLMSGHDR_SIZE;

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

/** rtnetlink message types and link attributes the probes use (<linux/rtnetlink.h>, <linux/if_link.h>). */
export const RTM = { NEWLINK: 16, GETLINK: 18 } as const;
export const IFLA = { IFNAME: 3, LINKINFO: 18, NET_NS_FD: 28, LINK_NETNSID: 37 } as const;
export const IFLA_INFO = { KIND: 1, DATA: 2 } as const;
/** <linux/veth.h>: the peer's attributes in a veth's IFLA_INFO_DATA. */
export const VETH_INFO_PEER = 1;

const SOCK_DIAG_BY_FAMILY = 20;
const IPPROTO_RAW = 255;
const NDIAG_PROTO_ALL = 255;
/** `struct inet_diag_req_v2`, `unix_diag_req` and `packet_diag_req`/`netlink_diag_req` sizes. */
const INET_DIAG_REQ_V2_SIZE = 56;
const UNIX_DIAG_REQ_SIZE = 24;
const PACKET_DIAG_REQ_SIZE = 20;
const EVERY_STATE = 0xffffffff;

/** A sock_diag dump request for every socket of one family (and protocol, for inet). */
export function sockDiagDumpRequest(family: number, protocol: number): Uint8Array<ArrayBuffer> {
  let body: Uint8Array<ArrayBuffer>;
  if (family === AF.INET || family === AF.INET6) {
    body = new Uint8Array(INET_DIAG_REQ_V2_SIZE);
    body.set([family, protocol, 0, protocol === IPPROTO_RAW ? IPPROTO_RAW : 0]);
    new DataView(body.buffer).setUint32(4, EVERY_STATE, true);
  } else if (family === AF.UNIX) {
    body = new Uint8Array(UNIX_DIAG_REQ_SIZE);
    body[0] = family;
    new DataView(body.buffer).setUint32(4, EVERY_STATE, true);
  } else {
    body = new Uint8Array(PACKET_DIAG_REQ_SIZE);
    body.set([family, family === AF.NETLINK ? NDIAG_PROTO_ALL : 0]);
  }
  return request(SOCK_DIAG_BY_FAMILY, NLM_F.REQUEST | NLM_F.DUMP, body);
}

/** Bounds every wait for an answer on `fd` to one second: a missing answer is an error, not a hang. */
export function setReceiveTimeout(fd: number): void {
  setsockoptBytes(fd, SOL_SOCKET, SO.RCVTIMEO, writeS64s([1, 0])); // struct timeval: one second
}

/** A netlink socket of `protocol` with a receive timeout, or the failure. */
export function openNetlink(protocol: number): Answer {
  const fd = rawSyscall(NR.socket, AF.NETLINK, SOCK.RAW | SOCK.CLOEXEC, protocol);
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
