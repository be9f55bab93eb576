/**
 * Socket addresses: `struct sockaddr_un`, `sockaddr_in` and `sockaddr_in6` as bytes, and IP
 * addresses as text. Shared by the sock_diag reader (which reports raw address words) and the socket
 * option helpers (getsockname/getpeername, bind/connect in tests and restores).
 *
 * Layouts (x86_64): sockaddr_un = family u16 + path[108] (110 bytes); sockaddr_in = family u16,
 * port be16, addr be32, zero[8] (16 bytes); sockaddr_in6 = family u16, port be16, flowinfo be32,
 * addr[16], scope_id u32 (28 bytes).
 */

export const AF = { UNIX: 1, INET: 2, INET6: 10, NETLINK: 16, PACKET: 17 } as const;

export const SOCKADDR_UN_SIZE = 110;
export const SOCKADDR_IN_SIZE = 16;
export const SOCKADDR_IN6_SIZE = 28;
/** Room for any address the kernel returns (`struct sockaddr_storage`). */
export const SOCKADDR_STORAGE_SIZE = 128;

/** An AF_UNIX address: the name bytes as the kernel keeps them (abstract ones start with a NUL). */
export interface UnixAddress {
  family: typeof AF.UNIX;
  name: Uint8Array<ArrayBuffer>;
}

/** An AF_INET or AF_INET6 address; `address` is text ("127.0.0.1", "::1", "::ffff:10.0.0.1"). */
export interface InetAddress {
  family: typeof AF.INET | typeof AF.INET6;
  address: string;
  port: number;
  /** IPv6 only: the interface of a link-local address (0 otherwise). */
  scopeId: number;
  /** IPv6 only: the flow label word, as sent. */
  flowinfo: number;
}

/** An AF_NETLINK address: a port id (0: the kernel picks) and a bitmap of the first 32 groups. */
export interface NetlinkAddress {
  family: typeof AF.NETLINK;
  portid: number;
  groups: number;
}

/** struct sockaddr_nl: family, a pad, the port id, the groups. */
export const SOCKADDR_NL_SIZE = 12;

export type SocketAddress = UnixAddress | InetAddress | NetlinkAddress;

/** Dotted quad of 4 bytes. */
export function formatIPv4(b: Uint8Array): string {
  if (b.length < 4) throw new RangeError(`An IPv4 address is 4 bytes, got ${b.length}`);
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** RFC 5952 text of 16 bytes: lower case, the longest run of zero groups as "::", v4-mapped as such. */
export function formatIPv6(b: Uint8Array): string {
  if (b.length < 16) throw new RangeError(`An IPv6 address is 16 bytes, got ${b.length}`);
  const groups = Array.from({ length: 8 }, (_, i) => (b[2 * i]! << 8) | b[2 * i + 1]!);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${formatIPv4(b.subarray(12, 16))}`;
  }
  let bestAt = -1;
  let bestLen = 1; // a single zero group is not shortened
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [bestAt, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestAt < 0) return hex.join(":");
  return `${hex.slice(0, bestAt).join(":")}::${hex.slice(bestAt + bestLen).join(":")}`;
}

/** The 4 or 16 bytes of an IP address in text form; throws a RangeError naming the text if it is not one. */
export function parseIP(text: string, family: typeof AF.INET | typeof AF.INET6): Uint8Array<ArrayBuffer> {
  const bad = () =>
    new RangeError(`Expected an ${family === AF.INET ? "IPv4" : "IPv6"} address, found "${text}"`);
  if (family === AF.INET) {
    const parts = text.split(".");
    if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw bad();
    return new Uint8Array(parts.map(Number));
  }
  const out = new Uint8Array(16);
  let head = text;
  let tailV4: Uint8Array | null = null;
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    tailV4 = parseIP(text.slice(lastColon + 1), AF.INET);
    head = text.slice(0, lastColon + 1) + "0:0"; // two placeholder groups, replaced below
  }
  const halves = head.split("::");
  if (halves.length > 2) throw bad();
  const toGroups = (s: string) => (s === "" ? [] : s.split(":"));
  const left = toGroups(halves[0]!);
  const right = halves.length === 2 ? toGroups(halves[1]!) : [];
  const missing = 8 - left.length - right.length;
  if ((halves.length === 1 && missing !== 0) || (halves.length === 2 && missing < 1)) throw bad();
  const all = [...left, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...right];
  for (const [i, g] of all.entries()) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad();
    const v = parseInt(g, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 0xff;
  }
  if (tailV4) out.set(tailV4, 12);
  return out;
}

/** The bytes of a sockaddr for `addr` and the length to pass to bind/connect. */
export function encodeSockaddr(addr: SocketAddress): { bytes: Uint8Array<ArrayBuffer>; len: number } {
  if (addr.family === AF.UNIX) {
    if (addr.name.length > 108) {
      throw new RangeError(`Unix socket name is ${addr.name.length} bytes; at most 108 fit in sockaddr_un`);
    }
    const bytes = new Uint8Array(SOCKADDR_UN_SIZE);
    new DataView(bytes.buffer).setUint16(0, AF.UNIX, true);
    bytes.set(addr.name, 2);
    return { bytes, len: 2 + addr.name.length };
  }
  if (addr.family === AF.NETLINK) {
    const bytes = new Uint8Array(SOCKADDR_NL_SIZE);
    const v = new DataView(bytes.buffer);
    v.setUint16(0, AF.NETLINK, true);
    v.setUint32(4, addr.portid >>> 0, true);
    v.setUint32(8, addr.groups >>> 0, true);
    return { bytes, len: SOCKADDR_NL_SIZE };
  }
  const ip = parseIP(addr.address, addr.family);
  const size = addr.family === AF.INET ? SOCKADDR_IN_SIZE : SOCKADDR_IN6_SIZE;
  const bytes = new Uint8Array(size);
  const v = new DataView(bytes.buffer);
  v.setUint16(0, addr.family, true);
  v.setUint16(2, addr.port, false);
  if (addr.family === AF.INET) {
    bytes.set(ip, 4);
  } else {
    v.setUint32(4, addr.flowinfo, false);
    bytes.set(ip, 8);
    v.setUint32(24, addr.scopeId, true);
  }
  return { bytes, len: size };
}

/** An inet address without the IPv6-only parts, for callers that do not care about them. */
export function inetAddress(
  family: typeof AF.INET | typeof AF.INET6,
  address: string,
  port: number,
): InetAddress {
  return { family, address, port, scopeId: 0, flowinfo: 0 };
}

/** A unix address from a path, or from "@name" for an abstract one. */
export function unixAddress(text: string): UnixAddress {
  const bytes = new TextEncoder().encode(text.startsWith("@") ? "\0" + text.slice(1) : text);
  return { family: AF.UNIX, name: bytes };
}

/** Decodes the first `len` bytes of a sockaddr the kernel filled in. */
export function decodeSockaddr(bytes: Uint8Array<ArrayBuffer>, len: number): SocketAddress {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const family = len >= 2 ? v.getUint16(0, true) : AF.UNIX; // an unnamed unix socket reports only 2 bytes
  if (family === AF.UNIX) {
    // As the kernel keeps it: a path with its terminating NUL, an abstract name without one.
    return { family: AF.UNIX, name: bytes.slice(2, Math.max(2, len)) };
  }
  if (family === AF.INET && len >= SOCKADDR_IN_SIZE) {
    return inetAddress(AF.INET, formatIPv4(bytes.subarray(4, 8)), v.getUint16(2, false));
  }
  if (family === AF.INET6 && len >= SOCKADDR_IN6_SIZE) {
    return {
      family: AF.INET6,
      address: formatIPv6(bytes.subarray(8, 24)),
      port: v.getUint16(2, false),
      flowinfo: v.getUint32(4, false),
      scopeId: v.getUint32(24, true),
    };
  }
  throw new RangeError(`Unexpected socket address: family ${family}, ${len} bytes`);
}

/** How a unix socket name reads to a person: "" unnamed, "@name" abstract, else the path. */
export function unixNameText(name: Uint8Array): string {
  if (name.length === 0) return "";
  if (name[0] === 0) return `@${new TextDecoder().decode(name.subarray(1))}`;
  const nul = name.indexOf(0); // a path is kept with its terminating NUL
  return new TextDecoder().decode(nul >= 0 ? name.subarray(0, nul) : name);
}
