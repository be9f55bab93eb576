/**
 * What the network device kinds share: a device as `ip -d -j link show` prints it, and `ip link`
 * run inside the namespace being restored, its failure named with the device.
 */
import { nd_type, type net_device_entry } from "../images/gen/netdev_pb.ts";
import { RestoreError } from "../errors.ts";
import { ipTool, NetToolError, runInNetns } from "./netns_tools.ts";

/** One device as `ip -d -j link show` prints it (the fields read here). */
export interface IpLink {
  ifindex: number;
  ifname: string;
  flags?: string[];
  link_type?: string;
  /** The peer's (or parent's) index (IFLA_LINK) when it is in another namespace... */
  link_index?: number;
  /** ...or its name when it is in this one. */
  link?: string;
  /** Set when the peer is in another namespace (IFLA_LINK_NETNSID). */
  link_netnsid?: number;
  master?: string;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
}

/** What `ip -d` says of a device's kind (its IFLA_INFO_KIND). */
export function kindOf(link: IpLink): string {
  return link.linkinfo?.info_kind ?? (link.link_type === "loopback" ? "loopback" : "none");
}

/** A hardware address as `ip` takes it; undefined for none (all zeros). */
export function macText(bytes: Uint8Array | undefined): string | undefined {
  if (!bytes || bytes.length === 0 || bytes.every((b) => b === 0)) return undefined;
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(":");
}

/** `ip link add` arguments that give a made device its index, MTU and address. */
export function commonArgs(d: net_device_entry): string[] {
  const args = ["index", `${d.ifindex}`, "mtu", `${d.mtu}`];
  const mac = macText(d.address);
  if (mac) args.push("address", mac);
  return args;
}

/** Runs `ip ARGS` in the namespace of `pid` for device `d`; a failure is a RestoreError naming it. */
export function runIp(pid: number, d: net_device_entry, args: string[]): void {
  try {
    runInNetns(pid, ipTool(...args));
  } catch (e) {
    if (!(e instanceof NetToolError)) throw e;
    throw new RestoreError(`Cannot restore network device ${d.name} (${nd_type[d.type]}): ${e.message}`);
  }
}
