/**
 * The sysctls of a network namespace that CRIU saves, in its order and with its types: per device
 * (net.ipv4.conf.DEV.*, net.ipv6.conf.DEV.*, in NetDeviceEntry conf4/conf6), the namespace's
 * `all` and `default` of both (NetnsEntry all_conf4/def_conf4/all_conf6/def_conf6),
 * net.unix.max_dgram_qlen (unix_conf) and net.ipv4.ping_group_range (ipv4_sysctl). Each list is
 * written in full, one entry per name; a sysctl this kernel lacks or will not read is an entry
 * with its type and no value, skipped on restore, as CRIU does.
 *
 * Everything here reads and writes /proc/sys/net of the calling thread's network namespace: the
 * caller enters the right one first (`inNetns`).
 */
import { create } from "@bufbuild/protobuf";
import { type sysctl_entry, sysctl_entrySchema, SysctlType } from "../images/gen/sysctl_pb.ts";
import { RestoreError } from "../errors.ts";
import { osReason } from "../../ffi/errors.ts";
import type { Log } from "../log.ts";

/** CRIU's devconfs4: the IPv4 settings of a device, in the order of the image's entries. */
const IPV4_CONF = [
  "accept_local",
  "accept_redirects",
  "accept_source_route",
  "arp_accept",
  "arp_announce",
  "arp_filter",
  "arp_ignore",
  "arp_notify",
  "bootp_relay",
  "disable_policy",
  "disable_xfrm",
  "force_igmp_version",
  "forwarding",
  "igmpv2_unsolicited_report_interval",
  "igmpv3_unsolicited_report_interval",
  "log_martians",
  "medium_id",
  "promote_secondaries",
  "proxy_arp",
  "proxy_arp_pvlan",
  "route_localnet",
  "rp_filter",
  "secure_redirects",
  "send_redirects",
  "shared_media",
  "src_valid_mark",
  "tag",
  "ignore_routes_with_linkdown",
  "drop_gratuitous_arp",
  "drop_unicast_in_l2_multicast",
] as const;

/** CRIU's devconfs6: the IPv6 settings of a device, in order. */
const IPV6_CONF = [
  "accept_dad",
  "accept_ra",
  "accept_ra_defrtr",
  "accept_ra_from_local",
  "accept_ra_min_hop_limit",
  "accept_ra_mtu",
  "accept_ra_pinfo",
  "accept_ra_rt_info_max_plen",
  "accept_ra_rtr_pref",
  "accept_redirects",
  "accept_source_route",
  "autoconf",
  "dad_transmits",
  "disable_ipv6",
  "drop_unicast_in_l2_multicast",
  "drop_unsolicited_na",
  "force_mld_version",
  "force_tllao",
  "forwarding",
  "hop_limit",
  "ignore_routes_with_linkdown",
  "keep_addr_on_down",
  "max_addresses",
  "max_desync_factor",
  "mldv1_unsolicited_report_interval",
  "mldv2_unsolicited_report_interval",
  "mtu",
  "ndisc_notify",
  "optimistic_dad",
  "proxy_ndp",
  "regen_max_retry",
  "router_probe_interval",
  "router_solicitation_delay",
  "router_solicitation_interval",
  "router_solicitations",
  "stable_secret",
  "suppress_frag_ndisc",
  "temp_prefered_lft",
  "temp_valid_lft",
  "use_oif_addrs_only",
  "use_optimistic",
  "use_tempaddr",
] as const;

/** The one string among the device settings; every other one is a 32-bit integer. */
const STRING_SETTINGS = new Set(["stable_secret", "ping_group_range"]);

export type ConfFamily = "ipv4" | "ipv6";

/** One list of sysctls: where each lives under /proc/sys/net. */
interface SysctlList {
  words: string;
  paths: string[];
}

function confList(family: ConfFamily, device: string): SysctlList {
  const names = family === "ipv4" ? IPV4_CONF : IPV6_CONF;
  return { words: `net.${family}.conf.${device}`, paths: names.map((n) => `${family}/conf/${device}/${n}`) };
}

export const UNIX_CONF: SysctlList = { words: "net.unix", paths: ["unix/max_dgram_qlen"] };
export const IPV4_SYSCTLS: SysctlList = { words: "net.ipv4", paths: ["ipv4/ping_group_range"] };

/**
 * net.ipv4.ping_group_range (IPV4_SYSCTLS' entry) with both its gids through `gid`: the kernel shows
 * and takes them as ids of the reader's user namespace. Its default, "1 0" (no group), is no range.
 */
export function pingGroupsThrough(
  entries: sysctl_entry[],
  gid: ((id: number) => number) | undefined,
): sysctl_entry[] {
  const range = entries[0]?.sarg?.trim().split(/\s+/).map(Number);
  if (!gid || range?.length !== 2 || (range[0] === 1 && range[1] === 0)) return entries;
  return [
    create(sysctl_entrySchema, { type: SysctlType.CTL_STR, sarg: `${gid(range[0]!)}\t${gid(range[1]!)}` }),
  ];
}

function typeOf(path: string): SysctlType {
  return STRING_SETTINGS.has(path.slice(path.lastIndexOf("/") + 1)) ? SysctlType.CTL_STR : SysctlType.CTL_32;
}

function readValue(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(`/proc/sys/net/${path}`).trim();
  } catch {
    return undefined; // absent on this kernel, or unreadable (stable_secret before it is set)
  }
}

function readList(list: SysctlList): sysctl_entry[] {
  return list.paths.map((path) => {
    const type = typeOf(path);
    const value = readValue(path);
    if (value === undefined) return create(sysctl_entrySchema, { type });
    if (type === SysctlType.CTL_STR) return create(sysctl_entrySchema, { type, sarg: value });
    return create(sysctl_entrySchema, { type, iarg: Number.parseInt(value, 10) });
  });
}

/** The device's (or `all`'s, `default`'s) settings of `family`, as CRIU lists them. */
export function readConf(family: ConfFamily, device: string): sysctl_entry[] {
  return readList(confList(family, device));
}

export function readSysctls(list: SysctlList): sysctl_entry[] {
  return readList(list);
}

/** The value an entry holds, as the sysctl file takes it; undefined when it holds none. */
function entryValue(e: sysctl_entry): string | undefined {
  if (e.type === SysctlType.CTL_STR) return e.sarg;
  return e.iarg === undefined ? undefined : `${e.iarg}`;
}

/**
 * Sets what the entries say, in order, leaving alone what already holds the value (most of them,
 * in a new namespace) and what this kernel lacks. A value the kernel refuses fails the restore,
 * naming the sysctl and `image`, where the value comes from.
 */
function writeList(list: SysctlList, entries: readonly sysctl_entry[], image: string, log: Log): void {
  entries.forEach((e, i) => {
    const path = list.paths[i];
    const wanted = entryValue(e);
    if (path === undefined || wanted === undefined) return;
    const now = readValue(path);
    if (now === undefined) {
      log.warn(`Skipping net.${path.replaceAll("/", ".")}: not on this kernel`);
      return;
    }
    if (normalized(now) === normalized(wanted)) return;
    try {
      Deno.writeTextFileSync(`/proc/sys/net/${path}`, wanted);
    } catch (e) {
      throw new RestoreError(
        `Cannot set net.${path.replaceAll("/", ".")} to ${wanted} from ${image} (it is ${now}): ${
          osReason(e)
        }`,
      );
    }
  });
  log.debug(`Restored ${list.words}`);
}

/** Sysctls print their fields separated by tabs; the image may hold spaces. */
function normalized(value: string): string {
  return value.trim().split(/\s+/).join(" ");
}

export function writeConf(
  family: ConfFamily,
  device: string,
  entries: readonly sysctl_entry[],
  image: string,
  log: Log,
): void {
  writeList(confList(family, device), entries, image, log);
}

export function writeSysctls(
  list: SysctlList,
  entries: readonly sysctl_entry[],
  image: string,
  log: Log,
): void {
  writeList(list, entries, image, log);
}
