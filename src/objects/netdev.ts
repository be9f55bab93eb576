/**
 * The network devices of a saved network namespace (netdev-ID.img), as CRIU writes them: one
 * NetDeviceEntry per device with its kind, index, MTU, flags, name, hardware address, the peer's
 * index, its master and its IPv4/IPv6 settings (conf4/conf6).
 *
 * Kinds, as in CRIU:
 *   - the loopback: exists in every new namespace, only its settings come back;
 *   - veth whose peer is outside: the inner end is saved (its peer index, no peer namespace). On
 *     restore the pair is made again with the inner end at its index and the outer end in criu's
 *     namespace, named by `--veth-pair IN=OUT` or `--external veth[IN]:OUT[@BRIDGE]` (then put in
 *     that bridge and brought up); without a name the peer is made inside the namespace with a
 *     name the kernel picks, as CRIU's restore does;
 *   - veth with both ends inside: both are saved, each with the namespace's id as its peer's
 *     (CRIU's peer_nsid), and the pair is made again at once, both ends at their indexes;
 *   - veth between two network namespaces of the tree: each end is saved in its namespace's
 *     image with the other namespace's id as its peer's, and the pair is made once, from the
 *     namespace filled first, with the peer put in the other (OtherNamespaces);
 *   - bridge: made again, its ports put back in it;
 *   - macvlan (`netdev_macvlan.ts`) on the parent `--external macvlan[NAME]:PARENT` names;
 *   - tun/tap devices, persistent or held by a tun file of the tree (`netdev_tun.ts`);
 *   - sit tunnels (`netdev_sit.ts`), with their endpoints and settings;
 *   - any other kind (dummy, ifb...) is offered to the plugins (DUMP_EXT_LINK): one that takes it
 *     makes it an external link (EXTLINK), whose existence on restore is the caller's (CRIU's
 *     setup-namespaces script); otherwise it is refused, named with its kind.
 * The fallback tunnels every namespace gets (gre0, gretap0, sit0) are left out, as CRIU does.
 */
import { create } from "@bufbuild/protobuf";
import { nd_type, type net_device_entry, net_device_entrySchema } from "../images/gen/netdev_pb.ts";
import { deviceState, IFF, inNetns } from "../../ffi/netdev.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { ENOTSUP } from "../plugins/api.ts";
import { PluginError, type Plugins } from "../plugins/plugins.ts";
import type { Log } from "../log.ts";
import { refuse } from "./refusal.ts";
import { readConf, writeConf } from "./netns_sysctl.ts";
import { ipTool, NetToolError, textInNetns } from "./netns_tools.ts";
import { commonArgs, type IpLink, kindOf, macText, runIp } from "./netdev_ip.ts";
import { macvlanEntry, makeMacvlan } from "./netdev_macvlan.ts";
import { makeTun, tunEntry } from "./netdev_tun.ts";
import { makeSit, sitEntry } from "./netdev_sit.ts";

const LOOPBACK = "lo";
/** Flags past the 16 bits SIOCGIFFLAGS gives, which ifi_flags (CRIU's record) carries. */
const HIGH_FLAGS: Record<string, number> = { LOWER_UP: IFF.LOWER_UP, DORMANT: IFF.DORMANT, ECHO: IFF.ECHO };

/** The kinds CRIU makes again itself, by `ip -d` link kind. */
const OWN_KINDS: Record<string, nd_type> = {
  veth: nd_type.VETH,
  bridge: nd_type.BRIDGE,
  macvlan: nd_type.MACVLAN,
  tun: nd_type.TUN,
  sit: nd_type.SIT,
};

/**
 * The fallback tunnel devices the kernel makes in every new namespace once their module is loaded:
 * CRIU leaves them out, and so do we (by name and kind).
 */
const FALLBACK_TUNNELS: Record<string, string> = { gre0: "gre", gretap0: "gretap", sit0: "sit" };

/** The devices of the network namespace of `pid`, as `ip -d -j link show` describes them there. */
export function listLinks(pid: number): IpLink[] {
  try {
    return JSON.parse(textInNetns(pid, ipTool("-d", "-j", "link", "show"))) as IpLink[];
  } catch (e) {
    if (!(e instanceof NetToolError) && !(e instanceof SyntaxError)) throw e;
    throw new DumpError(`Cannot list the network devices of process ${pid}: ${e.message}`);
  }
}

/**
 * The devices of the namespace of `pid` (image id `nsId`), each as its entry, or a refusal of the
 * first that cannot be saved. `plugins` are asked about kinds criu-ts does not make itself; `tree`
 * are the tree's pids, whose tun files may hold a tun device; `peerNsOf` names the namespace of
 * the tree (its id) a veth's peer is in, when it is in another one.
 */
export function dumpLinks(
  pid: number,
  nsId: number,
  plugins: Plugins,
  log: Log,
  tree: readonly number[] = [pid],
  peerNsOf: (ifindex: number) => number | undefined = () => undefined,
): net_device_entry[] {
  const links = listLinks(pid).filter((l) => {
    const fallback = FALLBACK_TUNNELS[l.ifname] === kindOf(l);
    if (fallback) log.info(`Found ${l.ifname}, ignoring (every new namespace gets one)`);
    return !fallback;
  });
  const indexOf = new Map(links.map((l) => [l.ifname, l.ifindex]));
  return links.map((link) => {
    const state = deviceState(pid, link.ifname);
    const type = linkType(pid, link, state.type, plugins);
    const highFlags = (link.flags ?? []).reduce((f, name) => f | (HIGH_FLAGS[name] ?? 0), 0);
    const entry = create(net_device_entrySchema, {
      type,
      ifindex: link.ifindex,
      mtu: state.mtu,
      flags: state.flags | highFlags,
      name: link.ifname,
      peerIfindex: link.link_index ?? (link.link === undefined ? undefined : indexOf.get(link.link)) ??
        link.ifindex,
    });
    if (type !== nd_type.LOOPBACK) entry.address = state.address;
    if (type === nd_type.MACVLAN) entry.macvlan = macvlanEntry(pid, link);
    if (type === nd_type.TUN) entry.tun = tunEntry(pid, link, tree);
    if (type === nd_type.SIT) entry.sit = sitEntry(pid, link, indexOf);
    // A peer in the same namespace (no IFLA_LINK_NETNSID) is one of ours: CRIU names its namespace;
    // so it does for a peer in another namespace of the tree.
    if (type === nd_type.VETH && link.link_netnsid === undefined) entry.peerNsid = nsId;
    const peerNs = type === nd_type.VETH ? peerNsOf(link.ifindex) : undefined;
    if (peerNs !== undefined) entry.peerNsid = peerNs;
    const master = link.master === undefined ? undefined : indexOf.get(link.master);
    if (master !== undefined) entry.master = master;
    inNetns(`/proc/${pid}/ns/net`, () => {
      entry.conf4 = readConf("ipv4", link.ifname);
      entry.conf6 = readConf("ipv6", link.ifname);
    });
    log.info(`Saved network device ${link.ifname} (${nd_type[type]}, index ${link.ifindex})`);
    return entry;
  });
}

/** The entry kind of a device; `hwType` is its ARPHRD type, which a plugin is told. */
function linkType(
  pid: number,
  link: IpLink,
  hwType: number,
  plugins: Plugins,
): nd_type {
  const kind = kindOf(link);
  if (link.link_type === "loopback") return nd_type.LOOPBACK;
  const own = OWN_KINDS[kind];
  if (own !== undefined) return own;
  const answer = plugins.run(
    "DUMP_EXT_LINK",
    (p) => p.dumpExtLink(link.ifindex, hwType, kind),
  );
  if (answer === 0) return nd_type.EXTLINK;
  if (answer === -ENOTSUP) {
    refuse(
      pid,
      `network device ${link.ifname} (${kind})`,
      `unsupported link ${link.ifindex} of kind ${kind}: criu-ts saves the loopback, veth, bridge, macvlan, tun and sit devices, and a plugin took none`,
    );
  }
  throw new PluginError(
    `A plugin failed to dump network device ${link.ifname} (${kind}): ${answer}`,
    -answer,
  );
}

/** How the outer end of each veth is named on restore: by the inner end's name. */
export interface VethOuter {
  name: string;
  bridge?: string;
}

/** The devices of criu's namespace that the restore links to: veth outer ends, macvlan parents. */
export interface OuterNames {
  veths: Map<string, VethOuter>;
  /** --external macvlan[NAME]:PARENT, by NAME. */
  macvlanParents: Map<string, string>;
}

/**
 * The outer names given: `--veth-pair IN=OUT` and `--external veth[IN]:OUT[@BRIDGE]` (CRIU turns
 * the first into the second), `--external macvlan[NAME]:PARENT`. Later ones win.
 */
export function outerNames(
  pairs: readonly { inside: string; outside: string }[],
  external: readonly string[],
): OuterNames {
  const veths = new Map<string, VethOuter>();
  const macvlanParents = new Map<string, string>();
  for (const p of pairs) veths.set(p.inside, { name: p.outside });
  for (const e of external) {
    const veth = /^veth\[([^\]]+)\]:([^@]+)(?:@(.+))?$/.exec(e);
    if (veth) {
      veths.set(veth[1]!, veth[3] === undefined ? { name: veth[2]! } : { name: veth[2]!, bridge: veth[3] });
    }
    const macvlan = /^macvlan\[([^\]]+)\]:(.+)$/.exec(e);
    if (macvlan) macvlanParents.set(macvlan[1]!, macvlan[2]!);
  }
  return { veths, macvlanParents };
}

/** A name the kernel would give a device (dev_valid_name; ':' is an alias's). */
function validName(name: string): boolean {
  const bytes = new TextEncoder().encode(name).length;
  return bytes > 0 && bytes <= 15 && name !== "." && name !== ".." && !/[/:\s]/.test(name);
}

/** Checks the entries of netdev-ID.img before anything is made (PREPARE). */
export function checkLinks(devices: readonly net_device_entry[], image: string): void {
  for (const d of devices) {
    if (!validName(d.name)) {
      throw new RestoreError(
        `Refusing the images: ${image} has a network device named ${JSON.stringify(d.name)}, ` +
          "expected 1 to 15 bytes without '/', ':' or white space",
      );
    }
    if (d.type === nd_type.LOOPBACK && d.name !== LOOPBACK) {
      throw new RestoreError(
        `Refusing the images: ${image} has a loopback device named ${d.name}, expected ${LOOPBACK}`,
      );
    }
    if (d.type === nd_type.TUN && !d.tun) {
      throw new RestoreError(`Refusing the images: ${image} has tun device ${d.name} without its settings`);
    }
    if (d.type === nd_type.MACVLAN && !d.macvlan) {
      throw new RestoreError(`Refusing the images: ${image} has macvlan ${d.name} without its mode`);
    }
    if (d.type === nd_type.SIT && !d.sit) {
      throw new RestoreError(`Refusing the images: ${image} has sit ${d.name} without its settings`);
    }
    if (
      ![
        nd_type.LOOPBACK,
        nd_type.VETH,
        nd_type.BRIDGE,
        nd_type.MACVLAN,
        nd_type.TUN,
        nd_type.SIT,
        nd_type.EXTLINK,
      ]
        .includes(d.type)
    ) {
      throw new RestoreError(
        `Cannot restore network device ${d.name} (${nd_type[d.type] ?? d.type}): ` +
          "only loopback, veth, bridge, macvlan, tun, sit and external devices can be restored yet",
      );
    }
  }
}

/**
 * The restore's other network namespaces, for a veth pair between two of them: made once, with
 * its two ends in place, by whichever of the two namespaces is filled first.
 */
export interface OtherNamespaces {
  /** The saved devices of namespace `id`; undefined when the images have no such namespace. */
  devicesOf(id: number): readonly net_device_entry[] | undefined;
  /** A path of namespace `id` in criu's view, once it exists. */
  pathOf(id: number): string | undefined;
  /** Ends already made, as "NSID:IFINDEX". */
  made: Set<string>;
}

/** What making the devices of one namespace needs to know. */
interface MakeContext {
  pid: number;
  devices: readonly net_device_entry[];
  outer: OuterNames;
  /** Indexes already made (the second end of a pair inside is made with the first). */
  made: Set<number>;
  log: Log;
  /** The namespace's id, and the others of the restore (veth pairs between two of them). */
  nsId?: number;
  others?: OtherNamespaces;
}

/** Whether a veth's peer is in another namespace of the restore. */
function peerElsewhere(ctx: MakeContext, d: net_device_entry): boolean {
  return !!d.peerNsid && d.peerNsid !== ctx.nsId && ctx.others?.devicesOf(d.peerNsid) !== undefined;
}

/**
 * A veth pair between this namespace and another of the restore, made once with both ends at
 * their indexes: `d` here, its peer in the other namespace.
 */
function makePairAcross(ctx: MakeContext, d: net_device_entry): boolean {
  if (!peerElsewhere(ctx, d)) return false;
  const others = ctx.others!;
  const peerNs = d.peerNsid;
  if (others.made.has(`${ctx.nsId}:${d.ifindex}`)) return true; // made from the other side
  const peer = others.devicesOf(peerNs)!.find((p) =>
    p.ifindex === d.peerIfindex && p.type === nd_type.VETH && p.peerNsid === ctx.nsId
  );
  const path = others.pathOf(peerNs);
  if (!peer || !path) {
    throw new RestoreError(
      `Cannot restore veth ${d.name}: its peer (index ${d.peerIfindex}) is not a veth of netdev-${peerNs}.img leading back`,
    );
  }
  const both = [d.name, ...commonArgs(d), "type", "veth", "peer", "name", peer.name, ...commonArgs(peer)];
  runIp(ctx.pid, d, ["link", "add", ...both, "netns", path]);
  others.made.add(`${ctx.nsId}:${d.ifindex}`).add(`${peerNs}:${peer.ifindex}`);
  ctx.log.info(`Made veth ${d.name} with its peer ${peer.name} in network namespace ${peerNs}`);
  return true;
}

/** Both ends of a veth pair inside the namespace, made at once: `d` and its peer. */
function makeInnerPair(ctx: MakeContext, d: net_device_entry): boolean {
  const peer = ctx.devices.find((p) => p.ifindex === d.peerIfindex && p.type === nd_type.VETH && p !== d);
  if (!d.peerNsid || !peer || peerElsewhere(ctx, d)) return false;
  if (!ctx.made.has(d.ifindex)) {
    const both = [d.name, ...commonArgs(d), "type", "veth", "peer", "name", peer.name, ...commonArgs(peer)];
    runIp(ctx.pid, d, ["link", "add", ...both]);
    ctx.made.add(d.ifindex).add(peer.ifindex);
    ctx.log.info(`Made veth ${d.name} with its peer ${peer.name}, both inside`);
  }
  return true;
}

/** Makes one device of the namespace (down: links come up once all are made). */
function makeLink(ctx: MakeContext, d: net_device_entry): void {
  const { pid, outer, log } = ctx;
  switch (d.type) {
    case nd_type.LOOPBACK:
      return; // every namespace has one; its MTU and flags come back with the others'

    case nd_type.EXTLINK: {
      // Made by the caller (setup-namespaces, as with CRIU): only its parameters come back, and
      // only those that differ (some kinds, ifb for one, refuse any new hardware address).
      const now = currentState(pid, d);
      const args = ["link", "set", "dev", d.name];
      if (now.mtu !== d.mtu) args.push("mtu", `${d.mtu}`);
      const mac = macText(d.address);
      if (mac && mac !== macText(now.address)) args.push("address", mac);
      if (args.length > 4) runIp(pid, d, args);
      return;
    }
    case nd_type.BRIDGE:
      runIp(pid, d, ["link", "add", d.name, ...commonArgs(d), "type", "bridge"]);
      return;
    case nd_type.VETH: {
      if (makePairAcross(ctx, d) || makeInnerPair(ctx, d)) return;
      const o = outer.veths.get(d.name);
      const peer = o ? ["peer", "name", o.name, "netns", `${Deno.pid}`] : ["peer"];
      if (!o) {
        log.warn(
          `No outer name for veth ${d.name} (--veth-pair ${d.name}=OUT or --external veth[${d.name}]:OUT): ` +
            "its peer is made inside the namespace",
        );
      }
      runIp(pid, d, ["link", "add", d.name, ...commonArgs(d), "type", "veth", ...peer]);
      if (o?.bridge) attachToBridge(d, o.name, o.bridge);
      log.info(`Made veth ${d.name} with its peer ${o ? `${o.name} in criu's namespace` : "inside"}`);
      return;
    }
    case nd_type.MACVLAN:
      makeMacvlan(pid, d, outer.macvlanParents.get(d.name), log);
      return;
    case nd_type.TUN:
      makeTun(pid, d, log);
      return;
    case nd_type.SIT:
      makeSit(pid, d, ctx.devices, log);
      return;
    default:
      throw new RestoreError(`Cannot restore network device ${d.name} (${nd_type[d.type] ?? d.type})`);
  }
}

/** A device the caller was to make, as it is now; its absence is named. */
function currentState(pid: number, d: net_device_entry): { mtu: number; address: Uint8Array } {
  try {
    return deviceState(pid, d.name);
  } catch (e) {
    throw new RestoreError(
      `Cannot restore network device ${d.name} (EXTLINK): a plugin took it at the dump, and the ` +
        `setup-namespaces script was to make it in the new namespace: ${(e as Error).message}`,
    );
  }
}

/** The outer end of a veth goes into a bridge of criu's namespace and comes up (CRIU's move_veth_to_bridge). */
function attachToBridge(d: net_device_entry, outer: string, bridge: string): void {
  runIp(Deno.pid, d, ["link", "set", "dev", outer, "master", bridge]);
  runIp(Deno.pid, d, ["link", "set", "dev", outer, "up"]);
}

/**
 * Makes the saved devices again in the namespace of `pid` (the restored root's, still empty but
 * for its loopback): each device, then masters, MTUs that moved, each device's settings, then the
 * flags (a device comes up last, as its addresses need). A failure names `image` too, where the
 * device comes from. `across`: the namespace's id and the restore's others, for veth pairs
 * between two of them.
 */
export function restoreLinks(
  pid: number,
  devices: readonly net_device_entry[],
  outer: OuterNames,
  image: string,
  log: Log,
  across?: { nsId: number; others: OtherNamespaces },
): void {
  try {
    makeLinks({ pid, devices, outer, made: new Set(), log, ...across }, image);
  } catch (e) {
    if (e instanceof RestoreError && !e.message.includes(image)) {
      throw new RestoreError(`${e.message} (restoring ${image})`);
    }
    if (isSyscallError(e)) throw new RestoreError(`Cannot restore the devices of ${image}: ${e.message}`);
    throw e;
  }
}

function makeLinks(ctx: MakeContext, image: string): void {
  const { pid, devices, log } = ctx;
  const byIndex = new Map(devices.map((d) => [d.ifindex, d]));
  for (const d of devices) makeLink(ctx, d);
  for (const d of devices) {
    if (!d.master) continue; // ifindex 0 is no device: no master
    const master = byIndex.get(d.master);
    if (!master) {
      throw new RestoreError(
        `Cannot restore network device ${d.name}: its master ${d.master} is not in ${image}`,
      );
    }
    runIp(pid, d, ["link", "set", "dev", d.name, "master", master.name]);
  }
  // The saved MTU is put back where it is not the device's yet: the loopback's, and a bridge's,
  // which takes the smallest of its ports' as they join unless one was set after.
  for (const d of devices) {
    if (d.type !== nd_type.EXTLINK && deviceState(pid, d.name).mtu !== d.mtu) {
      runIp(pid, d, ["link", "set", "dev", d.name, "mtu", `${d.mtu}`]);
    }
  }
  inNetns(`/proc/${pid}/ns/net`, () => {
    for (const d of devices) {
      writeConf("ipv4", d.name, d.conf4, image, log);
      writeConf("ipv6", d.name, d.conf6, image, log);
    }
  });
  for (const d of devices) {
    if (d.flags & IFF.UP) runIp(pid, d, ["link", "set", "dev", d.name, "up"]);
  }
}
