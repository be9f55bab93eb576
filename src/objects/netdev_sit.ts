/**
 * sit devices (IPv6 in IPv4 tunnels, `ip link add NAME type sit remote A local B ttl N`): CRIU's
 * SitEntry, filled as CRIU fills it from the device's IFLA_IPTUN_* attributes (addresses as the u32
 * of their four bytes in memory order, 0.0.0.0 left out; ttl, tos, flags, proto, link and the
 * encapsulation always; pmtudisc only when on; the 6rd prefixes when one is set). The dump reads
 * them from `ip -d -j link show`, the restore makes the device again with `ip link add ... type
 * sit`, at its index, inside the namespace.
 *
 * The kernel makes a fallback device sit0 in every namespace once sit is loaded: it is left out
 * (netdev.ts), as CRIU leaves it. A kernel without sit cannot make one: the restore says so, naming
 * the device.
 */
import { create } from "@bufbuild/protobuf";
import type { net_device_entry } from "../images/gen/netdev_pb.ts";
import { type sit_entry, sit_entrySchema } from "../images/gen/sit_pb.ts";
import { RestoreError } from "../errors.ts";
import type { Log } from "../log.ts";
import { refuse } from "./refusal.ts";
import type { IpLink } from "./netdev_ip.ts";
import { ipTool, NetToolError, runInNetns } from "./netns_tools.ts";

/** IFLA_IPTUN_PROTO by the name `ip` prints and takes (`mode`). */
const PROTOS: Record<string, number> = { any: 0, ipip: 4, ip6ip: 41, mplsip: 137 };
/** SIT_ISATAP, the one flag `ip` prints and takes. */
const SIT_ISATAP = 0x1;
/** TUNNEL_ENCAP_* by the name `ip` prints and takes. */
const ENCAPS: Record<string, number> = { none: 0, fou: 1, gue: 2 };
/** TUNNEL_ENCAP_FLAG_* by the name of `ip`'s JSON field. */
const ENCAP_FLAGS: Record<string, number> = { csum: 0x1, csum6: 0x2, remcsum: 0x4 };

/** The u32 of an IPv4 address's four bytes in memory order (how CRIU keeps it); 0 for "any". */
function ipv4Word(text: unknown): number {
  if (typeof text !== "string" || text === "any") return 0;
  const parts = text.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return NaN;
  return new DataView(new Uint8Array(parts).buffer).getUint32(0, true);
}

function ipv4Text(word: number): string {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, word, true);
  return [...bytes].join(".");
}

/** An IPv6 prefix's 16 bytes as CRIU keeps them: four u32 in memory order. */
function ipv6Words(text: string): number[] | undefined {
  const [head = "", tail] = text.split("::");
  const half = (s: string) => (s === "" ? [] : s.split(":").map((g) => parseInt(g, 16)));
  const left = half(head);
  const right = tail === undefined ? [] : half(tail);
  const groups = [...left, ...Array(8 - left.length - right.length).fill(0), ...right];
  if (groups.length !== 8 || groups.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) {
    return undefined;
  }
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  groups.forEach((g, i) => view.setUint16(i * 2, g, false));
  return [0, 1, 2, 3].map((i) => view.getUint32(i * 4, true));
}

function ipv6Text(words: readonly number[]): string {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  words.forEach((w, i) => view.setUint32(i * 4, w, true));
  return [0, 1, 2, 3, 4, 5, 6, 7].map((i) => view.getUint16(i * 2, false).toString(16)).join(":");
}

/** A number `ip` may print as a number or as hex text ("0x10"). */
function numberOf(value: unknown): number {
  if (typeof value === "number") return value;
  if (typeof value === "string" && /^(0x[0-9a-f]+|[0-9]+)$/i.test(value)) return Number(value);
  return 0;
}

/** The SitEntry of sit device `link` (of the namespace of `pid`), or a refusal naming what is not understood. */
export function sitEntry(pid: number, link: IpLink, indexOf: ReadonlyMap<string, number>): sit_entry {
  const data = link.linkinfo?.info_data ?? {};
  const what = `network device ${link.ifname} (sit)`;
  const proto = PROTOS[String(data.proto ?? "ip6ip")];
  if (proto === undefined) refuse(pid, what, `its mode ${String(data.proto)} is not known`);
  const local = ipv4Word(data.local);
  const remote = ipv4Word(data.remote);
  if (Number.isNaN(local) || Number.isNaN(remote)) {
    refuse(
      pid,
      what,
      `its endpoints ${String(data.local)} and ${String(data.remote)} are not IPv4 addresses`,
    );
  }
  const entry = create(sit_entrySchema, {
    local: local ? [local] : [],
    remote: remote ? [remote] : [],
    link: data.link === undefined ? 0 : indexOf.get(String(data.link)) ?? 0,
    ttl: numberOf(data.ttl),
    tos: numberOf(data.tos),
    flags: data.isatap ? SIT_ISATAP : 0,
    proto,
    encapType: 0,
    encapFlags: 0,
    encapSport: 0,
    encapDport: 0,
  });
  if (data.pmtudisc) entry.pmtudisc = true;
  const encap = data.encap as Record<string, unknown> | undefined;
  if (encap && String(encap.type) !== "none") {
    const type = ENCAPS[String(encap.type)];
    if (type === undefined) refuse(pid, what, `its encapsulation ${String(encap.type)} is not known`);
    entry.encapType = type;
    entry.encapSport = numberOf(encap.sport);
    entry.encapDport = numberOf(encap.dport);
    entry.encapFlags = Object.entries(ENCAP_FLAGS).reduce((f, [name, bit]) => (encap[name] ? f | bit : f), 0);
  }
  const prefixlen = numberOf(data.prefixlen);
  if (prefixlen > 0) {
    const prefix = ipv6Words(String(data.prefix));
    if (!prefix) refuse(pid, what, `its 6rd prefix ${String(data.prefix)} is not an IPv6 address`);
    entry.rdPrefixlen = prefixlen;
    entry.rdPrefix = prefix;
    const relayLen = numberOf(data.relay_prefixlen);
    if (relayLen > 0) {
      entry.relayPrefixlen = relayLen;
      entry.relayPrefix = [ipv4Word(data.relay_prefix)];
    }
  }
  return entry;
}

/** `ip link add ... type sit` arguments for the parameters of `s` (sit device `d` among `devices`). */
export function sitArgs(d: net_device_entry, s: sit_entry, devices: readonly net_device_entry[]): string[] {
  const mode = Object.entries(PROTOS).find(([, n]) => n === (s.proto ?? PROTOS.ip6ip))?.[0];
  if (mode === undefined) throw new RestoreError(`Cannot restore sit ${d.name}: unknown mode ${s.proto}`);
  if (s.local.length > 1 || s.remote.length > 1) {
    throw new RestoreError(`Cannot restore sit ${d.name}: more than one local or remote address`);
  }
  const args = ["mode", mode];
  args.push("remote", s.remote[0] ? ipv4Text(s.remote[0]) : "any");
  args.push("local", s.local[0] ? ipv4Text(s.local[0]) : "any");
  args.push("ttl", s.ttl ? `${s.ttl}` : "inherit");
  args.push("tos", s.tos ? `0x${s.tos.toString(16)}` : "inherit");
  // ip turns path MTU discovery on unless told otherwise (and refuses it off with a fixed ttl).
  if (!s.pmtudisc) args.push("nopmtudisc");
  if ((s.flags ?? 0) & SIT_ISATAP) args.push("isatap");
  if (s.link) {
    const under = devices.find((x) => x.ifindex === s.link);
    if (!under) throw new RestoreError(`Cannot restore sit ${d.name}: its device ${s.link} is not saved`);
    args.push("dev", under.name);
  }
  if (s.encapType) {
    const type = Object.entries(ENCAPS).find(([, n]) => n === s.encapType)?.[0];
    if (type === undefined) {
      throw new RestoreError(`Cannot restore sit ${d.name}: unknown encapsulation ${s.encapType}`);
    }
    args.push("encap", type, "encap-sport", `${s.encapSport ?? 0}`, "encap-dport", `${s.encapDport ?? 0}`);
    for (const [name, bit] of Object.entries(ENCAP_FLAGS)) {
      args.push(((s.encapFlags ?? 0) & bit) ? `encap-${name}` : `noencap-${name}`);
    }
  }
  if (s.rdPrefixlen) {
    if (s.rdPrefix.length !== 4) {
      throw new RestoreError(`Cannot restore sit ${d.name}: a 6rd prefix of ${s.rdPrefix.length} words`);
    }
    args.push("6rd-prefix", `${ipv6Text(s.rdPrefix)}/${s.rdPrefixlen}`);
    if (s.relayPrefixlen && s.relayPrefix[0] !== undefined) {
      args.push("6rd-relay_prefix", `${ipv4Text(s.relayPrefix[0])}/${s.relayPrefixlen}`);
    }
  }
  return args;
}

/** Makes sit device `d` inside the namespace of `pid`, at its index (its address follows its local end). */
export function makeSit(
  pid: number,
  d: net_device_entry,
  devices: readonly net_device_entry[],
  log: Log,
): void {
  const argv = ipTool(
    "link",
    "add",
    d.name,
    "index",
    `${d.ifindex}`,
    "mtu",
    `${d.mtu}`,
    "type",
    "sit",
    ...sitArgs(d, d.sit!, devices),
  );
  try {
    runInNetns(pid, argv);
  } catch (e) {
    if (!(e instanceof NetToolError)) throw e;
    const missing = /Unknown device type|not supported/i.test(e.message);
    throw new RestoreError(
      `Cannot restore network device ${d.name} (SIT): ` +
        (missing ? `this kernel makes no sit devices (CONFIG_IPV6_SIT): ${e.message}` : e.message),
    );
  }
  log.info(`Made sit ${d.name}`);
}
