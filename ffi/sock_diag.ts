/**
 * sock_diag over netlink (NETLINK_SOCK_DIAG): the kernel's own list of the sockets of one network
 * namespace, with what a dump needs and cannot learn from the fd alone: a unix socket's peer and the
 * connections waiting in a listener's backlog, queue lengths, shutdown state, the bound name and the
 * inode of the file a socket is bound to; an inet socket's addresses, ports and state; netlink and
 * packet sockets' ids. Sockets are keyed by inode number, the number /proc/PID/fd shows as
 * "socket:[INO]".
 *
 * A request is one `nlmsghdr` (16 bytes) followed by the family's request struct; the kernel answers
 * with a multipart series of `nlmsghdr` + the family's message struct + netlink attributes (`nlattr`:
 * u16 len, u16 type, data, padded to 4), ended by NLMSG_DONE, or an NLMSG_ERROR carrying -errno.
 *
 * Namespaces: a netlink socket answers about the network namespace it was created in. For the
 * sockets of another task, `SockDiag.open(pid)` makes its netlink socket inside that task's
 * namespace: setns(CLONE_NEWNET) moves only the calling thread, and Deno runs synchronous FFI calls
 * on the JavaScript thread itself, so the thread enters the namespace, calls socket() and goes back,
 * all within one synchronous stretch of code; no other JavaScript (and no other FFI call) can run
 * while the thread is in the other namespace. If going back fails the process is left in the wrong
 * namespace, which is reported as an error that names it.
 */
import { call, lastErrno, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";
import { closeFd, openFd } from "./fd.ts";
import { AF, formatIPv4, formatIPv6 } from "./sockaddr.ts";

// ---------------------------------------------------------------------------------------------
// Layouts. Every size and offset here is pinned by ffi/sock_diag_test.ts.

/** `struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }` */
export const NLMSGHDR_SIZE = 16;
/** `struct nlattr { u16 nla_len; u16 nla_type; }`; attributes are padded to 4 bytes. */
export const NLATTR_HDR_SIZE = 4;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_DUMP = 0x300; // NLM_F_ROOT | NLM_F_MATCH
export const SOCK_DIAG_BY_FAMILY = 20;
export const NETLINK_SOCK_DIAG = 4;
/** nla_type carries two flag bits (nested, net byte order) above the type. */
const NLA_TYPE_MASK = 0x3fff;

/** `struct unix_diag_req`: family u8, protocol u8, pad u16, states u32, ino u32, show u32, cookie u32[2]. */
export const UNIX_DIAG_REQ_SIZE = 24;
/** `struct unix_diag_msg`: family u8, type u8, state u8, pad u8, ino u32, cookie u32[2]. */
export const UNIX_DIAG_MSG_SIZE = 16;
export const UDIAG_SHOW = {
  NAME: 0x1,
  VFS: 0x2,
  PEER: 0x4,
  ICONS: 0x8,
  RQLEN: 0x10,
  MEMINFO: 0x20,
  UID: 0x40,
} as const;
export const UNIX_DIAG = {
  NAME: 0,
  VFS: 1,
  PEER: 2,
  ICONS: 3,
  RQLEN: 4,
  MEMINFO: 5,
  SHUTDOWN: 6,
  UID: 7,
} as const;

/**
 * `struct inet_diag_sockid`: sport be16, dport be16, src be32[4], dst be32[4], if u32, cookie u32[2].
 */
export const INET_DIAG_SOCKID_SIZE = 48;
/**
 * `struct inet_diag_req_v2`: family u8, protocol u8, ext u8, pad u8 (raw: the raw protocol),
 * states u32, then the sockid at 8.
 */
export const INET_DIAG_REQ_V2_SIZE = 56;
/**
 * `struct inet_diag_msg`: family u8, state u8, timer u8, retrans u8, sockid at 4, then expires,
 * rqueue, wqueue, uid, inode (u32 each, at 52..68).
 */
export const INET_DIAG_MSG_SIZE = 72;
/** Attribute types of inet_diag answers (request the first eight with bit 1 << (type - 1) in `ext`). */
export const INET_DIAG = {
  MEMINFO: 1,
  INFO: 2,
  VEGASINFO: 3,
  CONG: 4,
  TOS: 5,
  TCLASS: 6,
  SKMEMINFO: 7,
  SHUTDOWN: 8,
  DCTCPINFO: 9,
  PROTOCOL: 10,
  SKV6ONLY: 11,
  LOCALS: 12,
  PEERS: 13,
  PAD: 14,
  MARK: 15,
  BBRINFO: 16,
  CLASS_ID: 17,
  MD5SIG: 18,
  ULP_INFO: 19,
  SK_BPF_STORAGES: 20,
  CGROUP_ID: 21,
  SOCKOPT: 22,
} as const;

/** `struct netlink_diag_req`: family u8, protocol u8, pad u16, ino u32, show u32, cookie u32[2]. */
export const NETLINK_DIAG_REQ_SIZE = 20;
/**
 * `struct netlink_diag_msg`: family u8, type u8, protocol u8, state u8, portid u32, dst_portid u32,
 * dst_group u32, ino u32, cookie u32[2].
 */
export const NETLINK_DIAG_MSG_SIZE = 28;
export const NDIAG_SHOW = { MEMINFO: 0x1, GROUPS: 0x2, RING_CFG: 0x4, FLAGS: 0x8 } as const;
export const NETLINK_DIAG = { MEMINFO: 0, GROUPS: 1, RX_RING: 2, TX_RING: 3, FLAGS: 4 } as const;
export const NDIAG_PROTO_ALL = 255;

/** `struct packet_diag_req`: family u8, protocol u8, pad u16, ino u32, show u32, cookie u32[2]. */
export const PACKET_DIAG_REQ_SIZE = 20;
/** `struct packet_diag_msg`: family u8, type u8, num u16 (the protocol, host order), ino u32, cookie u32[2]. */
export const PACKET_DIAG_MSG_SIZE = 16;
/** `struct packet_diag_info`: index, version, reserve, copy_thresh, tstamp, flags (u32 each). */
export const PACKET_DIAG_INFO_SIZE = 24;
export const PACKET_SHOW = {
  INFO: 0x1,
  MCLIST: 0x2,
  RING_CFG: 0x4,
  FANOUT: 0x8,
  MEMINFO: 0x10,
  FILTER: 0x20,
} as const;
export const PACKET_DIAG = {
  INFO: 0,
  MCLIST: 1,
  RX_RING: 2,
  TX_RING: 3,
  FANOUT: 4,
  UID: 5,
  MEMINFO: 6,
  FILTER: 7,
} as const;
/** `struct packet_diag_mclist`: index u32, count u32, type u16, alen u16, addr[32]. */
export const PACKET_DIAG_MCLIST_SIZE = 44;
/** `struct packet_diag_ring`: seven u32. */
export const PACKET_DIAG_RING_SIZE = 28;

/** The values of a `SK_MEMINFO_*` array (UNIX_DIAG_MEMINFO, INET_DIAG_SKMEMINFO, ...), in order. */
export const SK_MEMINFO_NAMES = [
  "rmemAlloc",
  "rcvbuf",
  "wmemAlloc",
  "sndbuf",
  "fwdAlloc",
  "wmemQueued",
  "optmem",
  "backlog",
  "drops",
] as const;
export type SkMeminfo = Record<typeof SK_MEMINFO_NAMES[number], number>;

/** One request: nlmsghdr, then `body`. */
export function nlRequest(body: Uint8Array, flags: number, seq: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(NLMSGHDR_SIZE + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, out.length, true);
  v.setUint16(4, SOCK_DIAG_BY_FAMILY, true);
  v.setUint16(6, flags, true);
  v.setUint32(8, seq, true);
  v.setUint32(12, 0, true); // to the kernel
  out.set(body, NLMSGHDR_SIZE);
  return out;
}

/** A request for unix sockets; `ino` 0 with a dump, or one socket's inode (no cookie: ~0). */
export function unixDiagReq(show: number, ino = 0, states = 0xffffffff): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(UNIX_DIAG_REQ_SIZE);
  const v = new DataView(out.buffer);
  v.setUint8(0, AF.UNIX);
  v.setUint32(4, states, true);
  v.setUint32(8, ino, true);
  v.setUint32(12, show, true);
  v.setUint32(16, ino ? 0xffffffff : 0, true);
  v.setUint32(20, ino ? 0xffffffff : 0, true);
  return out;
}

export function inetDiagReq(
  family: number,
  protocol: number,
  ext: number,
  states: number,
  rawProtocol = 0,
): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(INET_DIAG_REQ_V2_SIZE);
  const v = new DataView(out.buffer);
  v.setUint8(0, family);
  v.setUint8(1, protocol);
  v.setUint8(2, ext);
  v.setUint8(3, rawProtocol);
  v.setUint32(4, states, true);
  // No cookie: the sockid's cookie at 8 + 40 stays ~0 so a lookup would not be narrowed by it.
  v.setUint32(8 + 40, 0xffffffff, true);
  v.setUint32(8 + 44, 0xffffffff, true);
  return out;
}

/** A request for netlink or packet sockets (the two request structs have the same layout). */
export function smallDiagReq(family: number, protocol: number, show: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(NETLINK_DIAG_REQ_SIZE);
  const v = new DataView(out.buffer);
  v.setUint8(0, family);
  v.setUint8(1, protocol);
  v.setUint32(8, show, true);
  v.setUint32(12, 0xffffffff, true);
  v.setUint32(16, 0xffffffff, true);
  return out;
}

/** The attributes after a message struct: type → data (a view into `msg`). Later duplicates win. */
export function parseAttributes(msg: DataView, from: number): Map<number, Uint8Array<ArrayBuffer>> {
  const attrs = new Map<number, Uint8Array<ArrayBuffer>>();
  let off = from;
  while (off + NLATTR_HDR_SIZE <= msg.byteLength) {
    const len = msg.getUint16(off, true);
    if (len < NLATTR_HDR_SIZE || off + len > msg.byteLength) break;
    const type = msg.getUint16(off + 2, true) & NLA_TYPE_MASK;
    attrs.set(
      type,
      new Uint8Array(
        msg.buffer as ArrayBuffer,
        msg.byteOffset + off + NLATTR_HDR_SIZE,
        len - NLATTR_HDR_SIZE,
      ),
    );
    off += (len + 3) & ~3;
  }
  return attrs;
}

function view(b: Uint8Array<ArrayBuffer>): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function u32s(b: Uint8Array<ArrayBuffer>): number[] {
  const v = view(b);
  return Array.from({ length: Math.floor(b.length / 4) }, (_, i) => v.getUint32(4 * i, true));
}

function u32At(attrs: Map<number, Uint8Array<ArrayBuffer>>, type: number): number | undefined {
  const a = attrs.get(type);
  return a && a.length >= 4 ? view(a).getUint32(0, true) : undefined;
}

function u8At(attrs: Map<number, Uint8Array<ArrayBuffer>>, type: number): number | undefined {
  const a = attrs.get(type);
  return a && a.length >= 1 ? a[0]! : undefined;
}

function meminfo(b: Uint8Array<ArrayBuffer> | undefined): SkMeminfo | undefined {
  if (!b) return undefined;
  const values = u32s(b);
  return Object.fromEntries(SK_MEMINFO_NAMES.map((n, i) => [n, values[i] ?? 0])) as SkMeminfo;
}

function cString(b: Uint8Array): string {
  const nul = b.indexOf(0);
  return new TextDecoder().decode(nul >= 0 ? b.subarray(0, nul) : b);
}

// ---------------------------------------------------------------------------------------------
// What the kernel reports.

/** `sk_shutdown` bits: what the socket can no longer do. */
export const SHUTDOWN = { RCV: 1, SEND: 2 } as const;

export interface UnixSocketInfo {
  ino: number;
  /** SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5. */
  type: number;
  /** TCP_ESTABLISHED 1 (connected), TCP_CLOSE 7 (unconnected), TCP_LISTEN 10, TCP_SYN_SENT 2. */
  state: number;
  /**
   * The bound name as the kernel keeps it (and CRIU's images): a path with its terminating NUL, or a
   * NUL then an abstract name. Absent when unbound. `unixNameText()` renders it.
   */
  name?: Uint8Array<ArrayBuffer>;
  /**
   * The inode and device of the socket file, for sockets bound to a path (even if the file is gone).
   * `dev` is in the kernel's internal encoding (major << 20 | minor), not stat's: see `kernelDevToUser`.
   */
  vfs?: { ino: number; dev: number };
  /**
   * The inode of the connected peer. A client whose connection still waits in a listener's backlog
   * reports 0: the server side has no inode until it is accepted (and is not listed by itself).
   */
  peer?: number;
  /** For a listener: the inodes of the client sockets whose connections wait to be accepted. */
  icons: number[];
  /**
   * A listener: rq = connections waiting, wq = the backlog limit. Others: rq = bytes waiting to be
   * read (stream, seqpacket) or the size of the first datagram waiting (dgram); wq = the memory
   * (skb truesize, not bytes) of what this socket sent that the peer has not read yet.
   */
  rqlen: { rq: number; wq: number };
  /** SHUTDOWN bits. */
  shutdown: number;
  uid: number;
  meminfo?: SkMeminfo;
}

/** An address and port of an inet socket. `words` are the be32 words as the kernel keeps them. */
export interface InetEndpoint {
  address: string;
  port: number;
  /** One word for AF_INET, four for AF_INET6, each read little-endian (as CRIU's images hold them). */
  words: number[];
}

export interface InetSocketInfo {
  family: number;
  protocol: number;
  ino: number;
  /** TCP states (TCP_ESTABLISHED 1 .. TCP_CLOSING 11); UDP: 1 connected, 7 not. */
  state: number;
  timer: number;
  retrans: number;
  src: InetEndpoint;
  dst: InetEndpoint;
  /** The interface the socket is bound to (SO_BINDTODEVICE, or a link-local scope), 0 if none. */
  ifindex: number;
  cookie: bigint;
  expires: number;
  /**
   * TCP: bytes not yet read (a listener: connections waiting). UDP: memory taken by queued datagrams.
   * (A TCP connection waiting in a listener's queue is listed too, with inode 0.)
   */
  rqueue: number;
  /** TCP: bytes not yet acknowledged (a listener: the backlog limit). UDP: memory of unsent datagrams. */
  wqueue: number;
  uid: number;
  shutdown: number;
  /** IPv6 sockets in LISTEN or CLOSE state only. */
  v6only?: boolean;
  tos?: number;
  tclass?: number;
  /** Only for a requester with CAP_NET_ADMIN. */
  mark?: number;
  /** TCP: the congestion control algorithm. */
  congestion?: string;
  meminfo?: SkMeminfo;
  cgroupId?: bigint;
}

export interface NetlinkSocketInfo {
  ino: number;
  protocol: number;
  type: number;
  /** 7 unconnected, 1 connected. */
  state: number;
  /** 0 when unbound (the kernel assigns one at the first send or bind). */
  portid: number;
  dstPortid: number;
  dstGroup: number;
  /** The multicast groups joined, as a bitmap in u32 words (group N is bit N-1). */
  groups: number[];
  /** NDIAG_FLAG_* bits. */
  flags?: number;
  meminfo?: SkMeminfo;
}

export interface PacketSocketInfo {
  ino: number;
  /** SOCK_RAW 3 or SOCK_DGRAM 2. */
  type: number;
  /** The ethertype (ETH_P_ALL is 3), host order. */
  protocol: number;
  info?: {
    /** The interface it is bound to, 0 if not bound. */
    ifindex: number;
    version: number;
    reserve: number;
    copyThresh: number;
    tstamp: number;
    /** PDI_RUNNING 1, AUXDATA 2, ORIGDEV 4, VNETHDR 8, LOSS 16. */
    flags: number;
  };
  mclist: { ifindex: number; count: number; type: number; addr: Uint8Array<ArrayBuffer> }[];
  rxRing?: number[];
  txRing?: number[];
  /** id | type << 16, as PACKET_FANOUT takes it. */
  fanout?: number;
  uid?: number;
  meminfo?: SkMeminfo;
  /** Number of classic BPF instructions attached (8 bytes each). */
  filterLength?: number;
}

/** A kernel-internal dev_t (major << 20 | minor, as UNIX_DIAG_VFS gives it) in stat's encoding. */
export function kernelDevToUser(dev: number): number {
  const major = dev >>> 20;
  const minor = dev & 0xfffff;
  return (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);
}

// ---------------------------------------------------------------------------------------------
// Parsing one answer message (the bytes after its nlmsghdr).

export function parseUnixMessage(msg: DataView): UnixSocketInfo {
  const attrs = parseAttributes(msg, UNIX_DIAG_MSG_SIZE);
  const out: UnixSocketInfo = {
    ino: msg.getUint32(4, true),
    type: msg.getUint8(1),
    state: msg.getUint8(2),
    icons: u32s(attrs.get(UNIX_DIAG.ICONS) ?? new Uint8Array(0)),
    rqlen: { rq: 0, wq: 0 },
    shutdown: u8At(attrs, UNIX_DIAG.SHUTDOWN) ?? 0,
    uid: u32At(attrs, UNIX_DIAG.UID) ?? 0,
  };
  const name = attrs.get(UNIX_DIAG.NAME);
  if (name) out.name = name.slice();
  const vfs = attrs.get(UNIX_DIAG.VFS);
  if (vfs && vfs.length >= 8) {
    out.vfs = { ino: view(vfs).getUint32(0, true), dev: view(vfs).getUint32(4, true) };
  }
  const peer = u32At(attrs, UNIX_DIAG.PEER);
  if (peer !== undefined) out.peer = peer;
  const rq = attrs.get(UNIX_DIAG.RQLEN);
  if (rq && rq.length >= 8) out.rqlen = { rq: view(rq).getUint32(0, true), wq: view(rq).getUint32(4, true) };
  const mem = meminfo(attrs.get(UNIX_DIAG.MEMINFO));
  if (mem) out.meminfo = mem;
  return out;
}

function endpoint(family: number, msg: DataView, portAt: number, addrAt: number): InetEndpoint {
  const bytes = new Uint8Array(msg.buffer as ArrayBuffer, msg.byteOffset + addrAt, 16);
  const words = family === AF.INET ? 1 : 4;
  return {
    address: family === AF.INET ? formatIPv4(bytes) : formatIPv6(bytes),
    port: msg.getUint16(portAt, false),
    words: Array.from({ length: words }, (_, i) => msg.getUint32(addrAt + 4 * i, true)),
  };
}

export function parseInetMessage(msg: DataView, protocol: number): InetSocketInfo {
  const family = msg.getUint8(0);
  const attrs = parseAttributes(msg, INET_DIAG_MSG_SIZE);
  const out: InetSocketInfo = {
    family,
    protocol: u8At(attrs, INET_DIAG.PROTOCOL) ?? protocol,
    ino: msg.getUint32(68, true),
    state: msg.getUint8(1),
    timer: msg.getUint8(2),
    retrans: msg.getUint8(3),
    src: endpoint(family, msg, 4, 8),
    dst: endpoint(family, msg, 6, 24),
    ifindex: msg.getUint32(40, true),
    cookie: BigInt(msg.getUint32(44, true)) | (BigInt(msg.getUint32(48, true)) << 32n),
    expires: msg.getUint32(52, true),
    rqueue: msg.getUint32(56, true),
    wqueue: msg.getUint32(60, true),
    uid: msg.getUint32(64, true),
    shutdown: u8At(attrs, INET_DIAG.SHUTDOWN) ?? 0,
  };
  const v6only = u8At(attrs, INET_DIAG.SKV6ONLY);
  if (v6only !== undefined) out.v6only = v6only !== 0;
  const tos = u8At(attrs, INET_DIAG.TOS);
  if (tos !== undefined) out.tos = tos;
  const tclass = u8At(attrs, INET_DIAG.TCLASS);
  if (tclass !== undefined) out.tclass = tclass;
  const mark = u32At(attrs, INET_DIAG.MARK);
  if (mark !== undefined) out.mark = mark;
  const cong = attrs.get(INET_DIAG.CONG);
  if (cong) out.congestion = cString(cong);
  const mem = meminfo(attrs.get(INET_DIAG.SKMEMINFO));
  if (mem) out.meminfo = mem;
  const cg = attrs.get(INET_DIAG.CGROUP_ID);
  if (cg && cg.length >= 8) out.cgroupId = view(cg).getBigUint64(0, true);
  return out;
}

export function parseNetlinkMessage(msg: DataView): NetlinkSocketInfo {
  const attrs = parseAttributes(msg, NETLINK_DIAG_MSG_SIZE);
  const out: NetlinkSocketInfo = {
    type: msg.getUint8(1),
    protocol: msg.getUint8(2),
    state: msg.getUint8(3),
    portid: msg.getUint32(4, true),
    dstPortid: msg.getUint32(8, true),
    dstGroup: msg.getUint32(12, true),
    ino: msg.getUint32(16, true),
    groups: u32s(attrs.get(NETLINK_DIAG.GROUPS) ?? new Uint8Array(0)),
  };
  const flags = u32At(attrs, NETLINK_DIAG.FLAGS);
  if (flags !== undefined) out.flags = flags;
  const mem = meminfo(attrs.get(NETLINK_DIAG.MEMINFO));
  if (mem) out.meminfo = mem;
  return out;
}

export function parsePacketMessage(msg: DataView): PacketSocketInfo {
  const attrs = parseAttributes(msg, PACKET_DIAG_MSG_SIZE);
  const out: PacketSocketInfo = {
    type: msg.getUint8(1),
    protocol: msg.getUint16(2, true),
    ino: msg.getUint32(4, true),
    mclist: [],
  };
  const info = attrs.get(PACKET_DIAG.INFO);
  if (info && info.length >= PACKET_DIAG_INFO_SIZE) {
    const [ifindex, version, reserve, copyThresh, tstamp, flags] = u32s(info) as [
      number,
      number,
      number,
      number,
      number,
      number,
    ];
    out.info = { ifindex, version, reserve, copyThresh, tstamp, flags };
  }
  const mc = attrs.get(PACKET_DIAG.MCLIST);
  for (let off = 0; mc && off + PACKET_DIAG_MCLIST_SIZE <= mc.length; off += PACKET_DIAG_MCLIST_SIZE) {
    const v = view(mc);
    const alen = v.getUint16(off + 10, true);
    out.mclist.push({
      ifindex: v.getUint32(off, true),
      count: v.getUint32(off + 4, true),
      type: v.getUint16(off + 8, true),
      addr: mc.slice(off + 12, off + 12 + Math.min(alen, 32)),
    });
  }
  const rx = attrs.get(PACKET_DIAG.RX_RING);
  if (rx) out.rxRing = u32s(rx);
  const tx = attrs.get(PACKET_DIAG.TX_RING);
  if (tx) out.txRing = u32s(tx);
  const fanout = u32At(attrs, PACKET_DIAG.FANOUT);
  if (fanout !== undefined) out.fanout = fanout;
  const uid = u32At(attrs, PACKET_DIAG.UID);
  if (uid !== undefined) out.uid = uid;
  const mem = meminfo(attrs.get(PACKET_DIAG.MEMINFO));
  if (mem) out.meminfo = mem;
  const filter = attrs.get(PACKET_DIAG.FILTER);
  if (filter) out.filterLength = filter.length / 8;
  return out;
}

// ---------------------------------------------------------------------------------------------
// The netlink conversation.

export const IPPROTO = {
  IP: 0,
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  IPV6: 41,
  ICMPV6: 58,
  UDPLITE: 136,
  RAW: 255,
} as const;

/** Every TCP state but TIME_WAIT (6) and NEW_SYN_RECV (12): those are not sockets with a file. */
export const STATES_WITH_FILES = 0xffffffff & ~((1 << 6) | (1 << 12));

/**
 * The kernel has no sock_diag handler for what was asked (e.g. raw_diag not built in, or a family
 * the kernel does not know). ENOENT from the kernel.
 */
export class DiagUnavailableError extends SyscallError {
  override name = "DiagUnavailableError";
  constructor(readonly what: string) {
    super(`sock_diag(${what})`, 2, `this kernel has no sock_diag support for ${what}`);
  }
}

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const CLONE_NEWNET = 0x40000000;
const O_RDONLY_CLOEXEC = 0o2000000;
const EINTR = 4;
const ENOENT = 2;
/** The kernel caps one dump message batch at 32 KiB; twice that never truncates. */
const RECEIVE_SIZE = 65536;

/** A NETLINK_SOCK_DIAG socket in one network namespace. */
export class SockDiag {
  #fd: number;
  #seq = 0;
  readonly #buffer = new Uint8Array(RECEIVE_SIZE);

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** A sock_diag socket in our own network namespace, or in that of `pid` when given. */
  static open(pid?: number): SockDiag {
    if (pid === undefined) return new SockDiag(newDiagSocket());
    return new SockDiag(inNetnsOf(pid, newDiagSocket));
  }

  /**
   * A sock_diag socket in the network namespace open at `nsFd` (ours), which need not be any
   * task's: that of a socket a task made before it moved to another namespace.
   */
  static openInNetns(nsFd: number): SockDiag {
    return new SockDiag(
      inNetnsAt(
        `/proc/self/fd/${nsFd}`,
        `namespace ${Deno.readLinkSync(`/proc/self/fd/${nsFd}`)}`,
        newDiagSocket,
      ),
    );
  }

  close(): void {
    closeFd(this.#fd);
    this.#fd = -1;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Every unix socket of the namespace, with every UDIAG_SHOW_* detail. */
  unixSockets(): UnixSocketInfo[] {
    const show = Object.values(UDIAG_SHOW).reduce((a, b) => a | b, 0);
    return this.#dump("unix", unixDiagReq(show)).map(parseUnixMessage);
  }

  /** One unix socket by inode, or null when the namespace has none with it. */
  unixSocket(ino: number): UnixSocketInfo | null {
    const show = Object.values(UDIAG_SHOW).reduce((a, b) => a | b, 0);
    try {
      const [msg] = this.#exchange("unix", unixDiagReq(show, ino), NLM_F_REQUEST);
      return msg ? parseUnixMessage(msg) : null;
    } catch (e) {
      if (e instanceof SyscallError && e.errno === ENOENT) return null;
      throw e;
    }
  }

  /**
   * The inet sockets of one family (AF_INET, AF_INET6) and protocol (TCP, UDP, UDPLITE; RAW with
   * `rawProtocol`), in the states of the `states` bitmap (bit N: state N). `ext` asks for extra
   * attributes (bits 1 << (INET_DIAG_x - 1)); by default TOS, TCLASS, socket memory and congestion.
   * Throws DiagUnavailableError when the kernel has no handler for the protocol.
   */
  inetSockets(
    family: typeof AF.INET | typeof AF.INET6,
    protocol: number,
    opts: { states?: number; ext?: number; rawProtocol?: number } = {},
  ): InetSocketInfo[] {
    const ext = opts.ext ??
      ((1 << (INET_DIAG.TOS - 1)) | (1 << (INET_DIAG.TCLASS - 1)) | (1 << (INET_DIAG.SKMEMINFO - 1)) |
        (1 << (INET_DIAG.CONG - 1)));
    const what = `${family === AF.INET ? "inet" : "inet6"} ${protocolName(protocol)}`;
    const req = inetDiagReq(family, protocol, ext, opts.states ?? STATES_WITH_FILES, opts.rawProtocol ?? 0);
    return this.#dump(what, req).map((m) => parseInetMessage(m, protocol));
  }

  /** Every netlink socket of the namespace, with its groups and flags. */
  netlinkSockets(): NetlinkSocketInfo[] {
    const req = smallDiagReq(
      AF_NETLINK,
      NDIAG_PROTO_ALL,
      NDIAG_SHOW.GROUPS | NDIAG_SHOW.FLAGS | NDIAG_SHOW.MEMINFO,
    );
    return this.#dump("netlink", req).map(parseNetlinkMessage);
  }

  /** Every packet socket of the namespace, with every PACKET_SHOW_* detail. */
  packetSockets(): PacketSocketInfo[] {
    const show = Object.values(PACKET_SHOW).reduce((a, b) => a | b, 0);
    return this.#dump("packet", smallDiagReq(AF.PACKET, 0, show)).map(parsePacketMessage);
  }

  #dump(what: string, body: Uint8Array): DataView[] {
    return this.#exchange(what, body, NLM_F_REQUEST | NLM_F_DUMP);
  }

  /** Sends one request and collects the answer messages until DONE (a dump) or the first answer. */
  #exchange(what: string, body: Uint8Array, flags: number): DataView[] {
    if (this.#fd < 0) throw new SyscallError(`sock_diag(${what})`, 9, "the diag socket is closed");
    const seq = ++this.#seq;
    const req = nlRequest(body, flags, seq);
    for (;;) {
      if (libc.write(this.#fd, req, BigInt(req.length)) >= 0n) break;
      const errno = lastErrno();
      if (errno !== EINTR) throw new SyscallError(`send(sock_diag ${what})`, errno);
    }
    const out: DataView[] = [];
    const dump = (flags & NLM_F_DUMP) !== 0;
    for (;;) {
      const n = this.#receive(what);
      for (const m of nlMessages(this.#buffer.subarray(0, n))) {
        if (m.seq !== seq) continue; // an answer to an earlier request that was given up on
        if (m.type === NLMSG_DONE) {
          const err = m.payload.byteLength >= 4 ? m.payload.getInt32(0, true) : 0;
          if (err < 0) throw diagError(what, -err);
          return out;
        }
        if (m.type === NLMSG_ERROR) {
          const err = m.payload.getInt32(0, true);
          if (err === 0) return out; // an acknowledgement
          throw diagError(what, -err);
        }
        if (m.type !== SOCK_DIAG_BY_FAMILY) continue;
        out.push(m.payload);
        if (!dump) return out;
      }
    }
  }

  #receive(what: string): number {
    for (;;) {
      const n = libc.read(this.#fd, this.#buffer, BigInt(this.#buffer.length));
      if (n >= 0n) return Number(n);
      const errno = lastErrno();
      if (errno !== EINTR) throw new SyscallError(`recv(sock_diag ${what})`, errno);
    }
  }
}

/** One socket as sock_diag knows it, by family. */
export type DiagSocket =
  | { kind: "unix"; info: UnixSocketInfo }
  | { kind: "inet"; info: InetSocketInfo }
  | { kind: "netlink"; info: NetlinkSocketInfo }
  | { kind: "packet"; info: PacketSocketInfo };

/**
 * Every socket of one network namespace that sock_diag lists, by inode: unix, netlink, packet, and
 * inet (AF_INET and AF_INET6 of TCP, UDP and UDPLITE, and raw where the kernel has raw_diag).
 * A socket missing here was never hashed by the kernel: an unbound TCP or UDP socket, or the server
 * side of a unix connection not yet accepted. A dump must learn those from the fd itself.
 */
export class SocketTable {
  readonly #byIno = new Map<number, DiagSocket>();

  constructor(sockets: Iterable<DiagSocket>) {
    // Inode 0: a TCP connection not accepted yet (no file); nothing can refer to it by inode.
    for (const s of sockets) if (s.info.ino !== 0) this.#byIno.set(s.info.ino, s);
  }

  get(ino: number): DiagSocket | undefined {
    return this.#byIno.get(ino);
  }

  get size(): number {
    return this.#byIno.size;
  }

  [Symbol.iterator](): IterableIterator<DiagSocket> {
    return this.#byIno.values();
  }
}

/** All of it, as CRIU's collect_sockets does, in the namespace of `pid` (ours by default). */
export function collectSockets(pid?: number): SocketTable {
  const diag = SockDiag.open(pid);
  try {
    const all: DiagSocket[] = [];
    for (const info of diag.unixSockets()) all.push({ kind: "unix", info });
    for (const info of diag.netlinkSockets()) all.push({ kind: "netlink", info });
    for (const info of diag.packetSockets()) all.push({ kind: "packet", info });
    for (const family of [AF.INET, AF.INET6] as const) {
      for (const protocol of [IPPROTO.TCP, IPPROTO.UDP, IPPROTO.UDPLITE, IPPROTO.RAW]) {
        try {
          const opts = protocol === IPPROTO.RAW ? { rawProtocol: IPPROTO.RAW } : {};
          for (const info of diag.inetSockets(family, protocol, opts)) all.push({ kind: "inet", info });
        } catch (e) {
          if (!(e instanceof DiagUnavailableError)) throw e;
        }
      }
    }
    return new SocketTable(all);
  } finally {
    diag.close();
  }
}

function diagError(what: string, errno: number): SyscallError {
  return errno === ENOENT ? new DiagUnavailableError(what) : new SyscallError(`sock_diag(${what})`, errno);
}

interface NlMessage {
  type: number;
  flags: number;
  seq: number;
  payload: DataView;
}

/** The messages in one received batch; each payload is copied out so the buffer can be reused. */
function nlMessages(batch: Uint8Array<ArrayBuffer>): NlMessage[] {
  const v = view(batch);
  const out: NlMessage[] = [];
  let off = 0;
  while (off + NLMSGHDR_SIZE <= batch.length) {
    const len = v.getUint32(off, true);
    if (len < NLMSGHDR_SIZE || off + len > batch.length) {
      throw new Error(`Malformed sock_diag answer: a message of ${len} bytes at ${off} in ${batch.length}`);
    }
    out.push({
      type: v.getUint16(off + 4, true),
      flags: v.getUint16(off + 6, true),
      seq: v.getUint32(off + 8, true),
      payload: new DataView(batch.slice(off + NLMSGHDR_SIZE, off + len).buffer),
    });
    off += (len + 3) & ~3;
  }
  return out;
}

function protocolName(protocol: number): string {
  const known = Object.entries(IPPROTO).find(([, n]) => n === protocol);
  return known ? known[0].toLowerCase() : `protocol ${protocol}`;
}

function newDiagSocket(): number {
  return call(
    "socket(AF_NETLINK, NETLINK_SOCK_DIAG)",
    libc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG),
  );
}

/**
 * Runs `make` (which creates an fd) with the calling thread inside the network namespace of `pid`,
 * then puts the thread back. When `pid` is already in our namespace nothing is switched.
 */
export function inNetnsOf(pid: number, make: () => number): number {
  return inNetnsAt(`/proc/${pid}/ns/net`, `that of process ${pid}`, make);
}

/** As inNetnsOf, for the network namespace at `targetPath` (`whose` names it in errors). */
function inNetnsAt(targetPath: string, whose: string, make: () => number): number {
  const target = openFd(targetPath, O_RDONLY_CLOEXEC);
  try {
    const own = openFd("/proc/thread-self/ns/net", O_RDONLY_CLOEXEC);
    try {
      if (sameFile(target, own)) return make();
      call("setns(CLONE_NEWNET)", libc.setns(target, CLONE_NEWNET), targetPath);
      try {
        return make();
      } finally {
        if (libc.setns(own, CLONE_NEWNET) !== 0) {
          // deno-lint-ignore no-unsafe-finally
          throw new Error(
            `Cannot return to our own network namespace after entering ${whose}; ` +
              "criu-ts cannot go on safely",
          );
        }
      }
    } finally {
      closeFd(own);
    }
  } finally {
    closeFd(target);
  }
}

function sameFile(a: number, b: number): boolean {
  const sa = Deno.statSync(`/proc/self/fd/${a}`);
  const sb = Deno.statSync(`/proc/self/fd/${b}`);
  return sa.ino === sb.ino && sa.dev === sb.dev;
}

/** Which sock_diag handlers this kernel has, asked of the namespace of `pid` (ours by default). */
export interface DiagSupport {
  unix: boolean;
  netlink: boolean;
  packet: boolean;
  tcp: boolean;
  udp: boolean;
  udplite: boolean;
  raw: boolean;
}

export function probeDiagSupport(pid?: number): DiagSupport {
  const diag = SockDiag.open(pid);
  try {
    const works = (f: () => unknown) => {
      try {
        f();
        return true;
      } catch (e) {
        if (e instanceof DiagUnavailableError) return false;
        throw e;
      }
    };
    // A states bitmap of 0 asks for nothing, but the kernel still looks the handler up first.
    const inet = (protocol: number, rawProtocol = 0) =>
      works(() => diag.inetSockets(AF.INET, protocol, { states: 0, ext: 0, rawProtocol }));
    return {
      unix: works(() => diag.unixSockets()),
      netlink: works(() => diag.netlinkSockets()),
      packet: works(() => diag.packetSockets()),
      tcp: inet(IPPROTO.TCP),
      udp: inet(IPPROTO.UDP),
      udplite: inet(IPPROTO.UDPLITE),
      raw: inet(IPPROTO.RAW, IPPROTO.RAW),
    };
  } finally {
    diag.close();
  }
}
