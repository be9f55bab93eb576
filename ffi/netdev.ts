/**
 * Network devices of a network namespace: their names (from /proc/PID/net/dev, which shows the
 * namespace of PID) and the flags, MTU, hardware type and address of one of them, asked through a
 * socket made inside that namespace. `struct ifreq` is 40 bytes: the name in 16, then a union
 * (flags are a short, the MTU an int, both at offset 16; the hardware address a sockaddr whose
 * family is the ARPHRD type, its bytes from offset 18).
 */
import { call, libc } from "./libc.ts";
import { closeFd, OPEN, openFd } from "./fd.ts";
import { AF } from "./sockaddr.ts";
import { CLONE } from "./syscalls.ts";
import { SOCK } from "./sockcall.ts";

export const IFREQ_SIZE = 40;
export const SIOC = {
  GIFFLAGS: 0x8913,
  SIFFLAGS: 0x8914,
  GIFMTU: 0x8921,
  SIFMTU: 0x8922,
  GIFHWADDR: 0x8927,
  /** An fd of the network namespace a socket belongs to (linux/sockios.h). */
  GSKNS: 0x894c,
} as const;
/** The bytes of a hardware address in ifr_hwaddr.sa_data (14 bytes, an Ethernet address uses 6). */
const HWADDR_BYTES = 6;
/** Device flags (IFF_*): the low 16 bits as SIOCGIFFLAGS gives them, and those only ifi_flags carries. */
export const IFF = { UP: 0x1, LOWER_UP: 0x10000, DORMANT: 0x20000, ECHO: 0x40000 } as const;
/** The union of an ifreq starts here (ifr_flags, ifr_mtu, ifr_hwaddr.sa_family). */
const IFREQ_UNION = 16;

/** The device names of PID's network namespace, in the kernel's order. */
export function deviceNames(pid: number): string[] {
  const lines = Deno.readTextFileSync(`/proc/${pid}/net/dev`).split("\n").slice(2);
  return lines.map((l) => l.split(":")[0]!.trim()).filter((n) => n !== "");
}

/** ifr_flags of an ifreq (a short). */
export function ifreqFlags(req: Uint8Array<ArrayBuffer>): number {
  return new DataView(req.buffer).getUint16(IFREQ_UNION, true);
}

/** An ifreq naming `name`, with `value` in its union (a short for flags, an int for the MTU). */
export function ifreq(name: string, value = 0): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(IFREQ_SIZE);
  const bytes = new TextEncoder().encode(name);
  if (bytes.length > 15) throw new RangeError(`Interface name ${name} is longer than 15 bytes`);
  buf.set(bytes);
  new DataView(buf.buffer).setInt32(IFREQ_UNION, value, true);
  return buf;
}

export interface DeviceState {
  flags: number;
  mtu: number;
  /** The ARPHRD_* hardware type (1 for Ethernet, 772 for the loopback). */
  type: number;
  /** The first six bytes of the hardware address. */
  address: Uint8Array;
}

/**
 * Flags and MTU of device `name` in the network namespace of `pid`. The calling thread enters that
 * namespace only long enough to make a socket there (a socket stays in the namespace it was made
 * in), then comes back.
 */
export function deviceState(pid: number, name: string): DeviceState {
  const sock = socketInNetns(`/proc/${pid}/ns/net`);
  try {
    const req = ifreq(name);
    const view = new DataView(req.buffer);
    call("ioctl(SIOCGIFFLAGS)", libc.ioctl(sock, BigInt(SIOC.GIFFLAGS), req), name);
    const flags = ifreqFlags(req);
    call("ioctl(SIOCGIFMTU)", libc.ioctl(sock, BigInt(SIOC.GIFMTU), req), name);
    const mtu = view.getInt32(IFREQ_UNION, true);
    call("ioctl(SIOCGIFHWADDR)", libc.ioctl(sock, BigInt(SIOC.GIFHWADDR), req), name);
    return {
      flags,
      mtu,
      type: view.getUint16(IFREQ_UNION, true),
      address: req.slice(IFREQ_UNION + 2, IFREQ_UNION + 2 + HWADDR_BYTES),
    };
  } finally {
    closeFd(sock);
  }
}

function socketInNetns(nsPath: string): number {
  return inNetns(
    nsPath,
    () => call("socket", libc.socket(AF.INET, SOCK.DGRAM | SOCK.CLOEXEC, 0), `in ${nsPath}`),
  );
}

/**
 * Runs `work` with the calling thread inside the network namespace at `nsPath`, then brings the
 * thread back. What `work` opens under /proc/sys/net belongs to that namespace (the kernel looks
 * at the opener's namespace), and so does a socket it makes. `work` must be synchronous.
 */
export function inNetns<T>(nsPath: string, work: () => T): T {
  const own = openFd("/proc/thread-self/ns/net", OPEN.RDONLY | OPEN.CLOEXEC);
  const target = openFd(nsPath, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    call("setns(net)", libc.setns(target, CLONE.NEWNET), nsPath);
    try {
      return work();
    } finally {
      if (libc.setns(own, CLONE.NEWNET) !== 0) {
        // deno-lint-ignore no-unsafe-finally
        throw new Error(
          `Cannot return to our own network namespace after entering ${nsPath}; criu-ts cannot go on safely`,
        );
      }
    }
  } finally {
    closeFd(target);
    closeFd(own);
  }
}

/** `ip route save`'s dump starts with this magic, then netlink messages (nlmsghdr + rtmsg + attributes). */
const IP_ROUTE_DUMP_MAGIC = 0x45311224;
const NLMSG_HDRLEN = 16;
/** rtmsg.rtm_flags: after family, dst_len, src_len, tos, table, protocol, scope and type (one byte each). */
const RTM_FLAGS_OFFSET = NLMSG_HDRLEN + 8;
/** rtmsg.rtm_table and rtm_protocol (one byte each, after family, dst_len, src_len and tos). */
const RTM_TABLE_OFFSET = NLMSG_HDRLEN + 4;
const RTM_PROTOCOL_OFFSET = NLMSG_HDRLEN + 5;
/** RT_TABLE_LOCAL, and RTPROT_KERNEL: a route the kernel made itself (for an address). */
const RT_TABLE_LOCAL = 255;
const RTPROT_KERNEL = 2;
/** RTNH_F_DEAD | RTNH_F_LINKDOWN: states the kernel sets itself and refuses in a new route. */
const NEXTHOP_STATE_FLAGS = 0x1 | 0x10;

/**
 * A copy of an `ip route save` dump whose routes no longer carry the link state of the moment
 * they were saved (dead, linkdown: the device had no carrier then). The kernel sets those flags
 * itself and refuses them in a route it is given, so `ip route restore` would fail on them. A dump
 * that does not start with the magic is returned as it is, for `ip` to judge.
 */
export function routesWithoutLinkState(dump: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(dump);
  const view = new DataView(out.buffer);
  if (out.length < 4 || view.getUint32(0, true) !== IP_ROUTE_DUMP_MAGIC) return out;
  let at = 4;
  while (at + RTM_FLAGS_OFFSET + 4 <= out.length) {
    const len = view.getUint32(at, true);
    if (len < RTM_FLAGS_OFFSET + 4) break;
    const flags = view.getUint32(at + RTM_FLAGS_OFFSET, true);
    view.setUint32(at + RTM_FLAGS_OFFSET, flags & ~NEXTHOP_STATE_FLAGS, true);
    at += (len + 3) & ~3;
  }
  return out;
}

/** An fd (ours to close) of the network namespace the socket at `sock` belongs to (SIOCGSKNS). */
export function socketNetnsFd(sock: number): number {
  return call("ioctl(SIOCGSKNS)", libc.ioctl(sock, BigInt(SIOC.GSKNS), null));
}

/**
 * The network namespace a socket belongs to, as its /proc link reads (`net:[INODE]`): a socket
 * stays in the namespace it was made in, whichever task holds it now.
 */
export function socketNetns(sock: number): string {
  const ns = socketNetnsFd(sock);
  try {
    return Deno.readLinkSync(`/proc/self/fd/${ns}`);
  } finally {
    closeFd(ns);
  }
}

/**
 * A copy of an `ip route save table all` dump without the routes the kernel keeps in its local
 * table for each address (local, broadcast, anycast, multicast; protocol "kernel"): the restored
 * addresses make them again, and saving them would bring them back twice or fail on a device
 * that is down. Routes of the local table that someone added stay. A dump that does not start
 * with the magic is returned as it is, for `ip` to judge.
 */
export function routesWithoutKernelLocal(dump: Uint8Array): Uint8Array<ArrayBuffer> {
  if (dump.length < 4) return new Uint8Array(dump);
  const view = new DataView(dump.buffer, dump.byteOffset, dump.byteLength);
  if (view.getUint32(0, true) !== IP_ROUTE_DUMP_MAGIC) return new Uint8Array(dump);
  const kept: Uint8Array[] = [dump.subarray(0, 4)];
  let at = 4;
  while (at + RTM_FLAGS_OFFSET <= dump.length) {
    const len = view.getUint32(at, true);
    if (len < RTM_FLAGS_OFFSET) break;
    const next = Math.min(dump.length, at + ((len + 3) & ~3));
    const kernelLocal = dump[at + RTM_TABLE_OFFSET] === RT_TABLE_LOCAL &&
      dump[at + RTM_PROTOCOL_OFFSET] === RTPROT_KERNEL;
    if (!kernelLocal) kept.push(dump.subarray(at, next));
    at = next;
  }
  if (at < dump.length) kept.push(dump.subarray(at)); // a damaged tail: left for `ip` to refuse
  const out = new Uint8Array(kept.reduce((n, part) => n + part.length, 0));
  let to = 0;
  for (const part of kept) {
    out.set(part, to);
    to += part.length;
  }
  return out;
}
