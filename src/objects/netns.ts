/**
 * Network namespaces. A tree that runs in a network namespace of its own (`unshare --net`, a
 * container) gets one again on restore, as CRIU does, and the network-lock / network-unlock
 * action scripts run around it.
 *
 * Nested ones too, as CRIU 4.2 saves them: every network namespace a live task of the tree is in,
 * other than criu's, is saved in the images below under its own id, and the restore makes each
 * again in the first task found in it (cloned with CLONE_NEWNET; the others enter it with setns,
 * namespaces.ts), then fills it from inside that task. As in CRIU, only the root's namespace is
 * locked (the network-lock / network-unlock scripts, and CRIU's own lock in images CRIU wrote);
 * a nested one is not, and its connections are not locked in criu's netfilter either, which never
 * sees their packets (inet_socket.ts). Each socket records the namespace it belongs to (ns_id)
 * and is made in it again (socket_netns.ts), also when the task holding it has moved to another.
 * A veth pair joining two namespaces of the tree is saved in both, each end naming the other's
 * namespace, and made once (see findVethsBetween).
 *
 * What is saved, in CRIU's images (ID is the namespace's id in the ids images):
 *   - netdev-ID.img: its devices (`netdev.ts`: the loopback, veth pairs, bridges, macvlans,
 *     tun/tap devices, devices a plugin takes), with their IPv4/IPv6 settings;
 *   - netns-ID.img: the namespace's `all` and `default` settings, net.unix.max_dgram_qlen and
 *     net.ipv4.ping_group_range (`netns_sysctl.ts`);
 *   - ifaddr, route, route6, rule, iptables, ip6tables, nftables-ID.img: addresses, routes, rules
 *     and firewall as CRIU's tools print them (`netns_config.ts`).
 * The restore fills the new namespace in CRIU's order: the namespace's settings, the devices (with
 * theirs), addresses, routes, rules, firewall.
 *
 * `--empty-ns net`, as CRIU 4.2 takes it (for a tree in a network namespace of its own only; a tree
 * in criu's namespace stays there):
 *   - dump: none of these images is written (the network-lock scripts still run);
 *   - restore: the namespace is made and left as the kernel creates it (loopback down), for the
 *     scripts to fill. Since no firewall comes back, the lock CRIU would have restored with it is
 *     put in from setup-namespaces on (`--network-lock` of the dump: a CRIU chain jumped to from
 *     INPUT and OUTPUT of iptables and ip6tables, or the table `inet CRIU-<run id>`, each letting
 *     only packets marked 0xC114 through) and dropped after the network-unlock script.
 * An external namespace (`--external net[INODE]:KEY` at dump, `--inherit-fd fd[N]:KEY` at restore,
 * as runc passes for a namespace its config names by path): `netns_external.ts`.
 * A checkpoint whose tree had a namespace of its own (the inventory's root ids say so) but holds
 * no image of it (a dump with `--empty-ns net`) restored without the option gets an empty namespace
 * too, without the lock, as CRIU restores it.
 */
import { create } from "@bufbuild/protobuf";
import { type net_device_entry, type netns_entry, netns_entrySchema } from "../images/gen/netdev_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { inventory_entry } from "../images/gen/inventory_pb.ts";
import type { ImageDir } from "../images/dir.ts";
import { inNetns } from "../../ffi/netdev.ts";
import { CLONE } from "../../ffi/syscalls.ts";
import { registerNamespaceKind, restoredNamespacePath } from "./namespaces.ts";
import type { Plugins } from "../plugins/plugins.ts";
import type { Log } from "../log.ts";
import {
  checkLinks,
  dumpLinks,
  listLinks,
  type OtherNamespaces,
  type OuterNames,
  outerNames,
  restoreLinks,
} from "./netdev.ts";
import { kindOf } from "./netdev_ip.ts";
import type { FrozenTree } from "../dump/freeze.ts";
import type { NamespaceIds, NsRestoreContext } from "./namespaces.ts";
import {
  IPV4_SYSCTLS,
  pingGroupsThrough,
  readConf,
  readSysctls,
  UNIX_CONF,
  writeConf,
  writeSysctls,
} from "./netns_sysctl.ts";
import { type TreeIds, treeIdsAtDump, treeIdsAtRestore } from "./tree_ids.ts";
import { checkNetConfig, dumpNetConfig, firewallImagesMention, restoreNetConfig } from "./netns_config.ts";
import { NetToolError, runEachInNetns, runInNetns, textInNetns } from "./netns_tools.ts";
import { nftTableOf } from "./network_lock.ts";
import type { Agent } from "../agent.ts";
import { NETWORK_LOCK_METHOD, type NetworkLock } from "../options/options.ts";
import { RestoreError } from "../errors.ts";
import {
  enterExternalNetns,
  externalNetnsFd,
  externalNetnsKey,
  saveExternalNetns,
} from "./netns_external.ts";

/** A saved namespace, as the restore reads it at PREPARE. */
interface SavedNetns {
  id: number;
  settings: netns_entry | undefined;
  devices: net_device_entry[];
}

function readSaved(dir: ImageDir, nsId: number | undefined): SavedNetns | undefined {
  if (nsId === undefined || !dir.has(KINDS.NETNS, nsId)) return undefined;
  const devices = dir.readOptional<net_device_entry>(KINDS.NETDEV, nsId);
  checkLinks(devices, `netdev-${nsId}.img`);
  checkNetConfig(dir, nsId);
  const settings = dir.read<netns_entry>(KINDS.NETNS, nsId)[0];
  return { id: nsId, settings, devices };
}

/**
 * Saves one namespace (see the top of this file), or refuses what it cannot: `tree` are the pids
 * of the tree, a task inside the namespace first.
 */
function saveNetns(
  dir: ImageDir,
  tree: readonly number[],
  nsId: number,
  plugins: Plugins,
  log: Log,
  peerNsOf: (ifindex: number) => number | undefined,
  treeIds: TreeIds | undefined,
): void {
  const rootPid = tree[0]!;
  dir.write(KINDS.NETDEV, nsId, dumpLinks(rootPid, nsId, plugins, log, tree, peerNsOf));
  const settings = inNetns(`/proc/${rootPid}/ns/net`, () =>
    create(netns_entrySchema, {
      defConf4: readConf("ipv4", "default"),
      allConf4: readConf("ipv4", "all"),
      defConf6: readConf("ipv6", "default"),
      allConf6: readConf("ipv6", "all"),
      unixConf: readSysctls(UNIX_CONF),
      // The ping groups as the tree sees them, as CRIU saves them.
      ipv4Sysctl: pingGroupsThrough(readSysctls(IPV4_SYSCTLS), treeIds?.gidInside),
    }));
  dir.write(KINDS.NETNS, nsId, [settings]);
  dumpNetConfig(dir, rootPid, nsId, log);
}

/** The namespace-wide settings, first, so that devices made later take the saved defaults (as CRIU). */
function restoreSettings(
  pid: number,
  s: netns_entry,
  image: string,
  log: Log,
  treeIds: TreeIds | undefined,
): void {
  inNetns(`/proc/${pid}/ns/net`, () => {
    writeConf("ipv4", "all", s.allConf4, image, log);
    writeConf("ipv4", "default", s.defConf4, image, log);
    writeConf("ipv6", "all", s.allConf6, image, log);
    writeConf("ipv6", "default", s.defConf6, image, log);
    writeSysctls(UNIX_CONF, s.unixConf, image, log);
    // criu writes the ping groups, as ids of its own user namespace.
    writeSysctls(IPV4_SYSCTLS, pingGroupsThrough(s.ipv4Sysctl, treeIds?.gidOutside), image, log);
  });
}

/**
 * The network namespaces of the restore in progress, by id (each plan adds its own at PREPARE,
 * the root's first), for veth pairs between two of them.
 */
const restoring = { devices: new Map<number, readonly net_device_entry[]>(), made: new Set<string>() };

const otherNamespaces: OtherNamespaces = {
  devicesOf: (id) => restoring.devices.get(id),
  pathOf: (id) => restoredNamespacePath("net", id),
  made: restoring.made,
};

function treeIdsOf(ctx: NsRestoreContext): TreeIds | undefined {
  return treeIdsAtRestore(ctx.dir, ctx.tasks[0]?.ids?.userNsId);
}

function fillNetns(
  dir: ImageDir,
  pid: number,
  saved: SavedNetns,
  outer: OuterNames,
  log: Log,
  treeIds: TreeIds | undefined,
): void {
  if (saved.settings) restoreSettings(pid, saved.settings, `netns-${saved.id}.img`, log, treeIds);
  restoreLinks(pid, saved.devices, outer, `netdev-${saved.id}.img`, log, {
    nsId: saved.id,
    others: otherNamespaces,
  });
  restoreNetConfig(dir, pid, saved.id, log);
}

/**
 * Where CRIU's namespace lock may be at the end of a restore:
 *   - "iptables", "nftables": this restore locked the empty namespace so (--empty-ns net);
 *   - "maybe": the namespace's firewall came from CRIU's images, which hold a lock of CRIU's, or
 *     the namespace is the caller's: looked for with the tools;
 *   - "none": neither (criu-ts's own dumps lock only through the action scripts).
 */
type LockPlace = NetworkLock | "maybe" | "none";

/** The iptables lines that undo IPTABLES_LOCK, for iptables-restore --noflush. */
const IPTABLES_UNLOCK = [
  "*filter",
  "-D INPUT -j CRIU",
  "-D OUTPUT -j CRIU",
  "-F CRIU",
  "-X CRIU",
  "COMMIT",
  "",
]
  .join("\n");

/**
 * CRIU's dump locks a tree's own namespace from inside (a table `inet CRIU-<run id>` with
 * `--network-lock nftables`; a CRIU chain of iptables and ip6tables jumped to from INPUT and
 * OUTPUT, letting through only packets marked 0xc114, by default) and saves that lock with the
 * namespace's firewall; its restore drops it once the tree is back. So does this one, for images
 * CRIU wrote and for the lock it put in an empty namespace itself.
 */
function dropCriuLock(pid: number, runId: string | undefined, place: LockPlace, log: Log): void {
  const table = nftTableOf(runId);
  if (place === "none" || place === "skip") return;
  if (place === "nftables") {
    try {
      runInNetns(pid, ["nft", "delete", "table", "inet", table]);
      log.info(`Dropped the network lock (nft table inet ${table})`);
    } catch (e) {
      if (!(e instanceof NetToolError)) throw e;
      log.warn(`Cannot drop the nftables network lock: ${e.message}`);
    }
    return;
  }
  if (place === "iptables") {
    try {
      runEachInNetns(
        pid,
        iptablesTools("restore").map((tool) => [tool, "-w", "--noflush"]),
        encode(IPTABLES_UNLOCK),
      );
      log.info("Dropped the network lock (iptables chain CRIU)");
    } catch (e) {
      if (!(e instanceof NetToolError)) throw e;
      log.warn(`Cannot drop the iptables network lock: ${e.message}`);
    }
    return;
  }
  try {
    if (textInNetns(pid, ["nft", "list", "tables"]).split("\n").includes(`table inet ${table}`)) {
      runInNetns(pid, ["nft", "delete", "table", "inet", table]);
      log.info(`Dropped CRIU's network lock (nft table inet ${table})`);
    }
  } catch (e) {
    if (!(e instanceof NetToolError)) throw e;
    log.warn(`Cannot look for CRIU's nftables network lock: ${e.message}`);
  }
  for (const tool of iptablesTools("")) {
    let chain: string;
    try {
      chain = textInNetns(pid, [tool, "-w", "-S", "CRIU"]);
    } catch (e) {
      if (!(e instanceof NetToolError)) throw e;
      continue; // no such chain (or no such tool): nothing of CRIU's
    }
    if (!chain.includes("-A CRIU -m mark --mark 0xc114 -j ACCEPT")) continue;
    try {
      runInNetns(pid, [`${tool}-restore`, "-w", "--noflush"], encode(IPTABLES_UNLOCK));
      log.info(`Dropped CRIU's network lock (${tool} chain CRIU)`);
    } catch (e) {
      if (!(e instanceof NetToolError)) throw e;
      log.warn(`Cannot drop CRIU's ${tool} network lock: ${e.message}`);
    }
  }
}

/** iptables, and ip6tables where the kernel has IPv6 (CRIU's kdat.ipv6), with `suffix` ("-restore"). */
function iptablesTools(suffix: "" | "restore"): string[] {
  let ipv6 = false;
  try {
    ipv6 = Deno.statSync("/proc/sys/net/ipv6").isDirectory;
  } catch {
    // no IPv6 in this kernel
  }
  const tools = ipv6 ? ["iptables", "ip6tables"] : ["iptables"];
  return suffix ? tools.map((t) => `${t}-${suffix}`) : tools;
}

function encode(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** The key of an external namespace (--external net[INODE]:KEY at the dump), if it is one. */
function extKeyOf(saved: SavedNetns | undefined): string | undefined {
  return saved?.settings?.extKey || undefined;
}

/** The --network-lock method of the dump, as the inventory records it (unset: iptables). */
function lockMethodOf(inventory: inventory_entry | undefined): NetworkLock {
  const n = inventory?.networkLockMethod ?? 0;
  const found = Object.entries(NETWORK_LOCK_METHOD).find(([, v]) => v === n)?.[0] as NetworkLock | undefined;
  return found ?? "iptables";
}

/** The rules of CRIU's namespace lock, for iptables-restore --noflush (the same for ip6tables). */
const IPTABLES_LOCK = [
  "*filter",
  ":CRIU - [0:0]",
  "-I INPUT -j CRIU",
  "-I OUTPUT -j CRIU",
  "-A CRIU -m mark --mark 0xC114 -j ACCEPT",
  "-A CRIU -j DROP",
  "COMMIT",
  "",
].join("\n");

/** CRIU's namespace lock in nftables: both hooks drop all but packets marked 0xC114. */
function nftLock(table: string): string {
  return [
    `add table inet ${table}`,
    ...["output", "input"].flatMap((hook) => [
      `add chain inet ${table} ${hook} { type filter hook ${hook} priority 0; policy drop; }`,
      `add rule inet ${table} ${hook} meta mark 0xC114 accept`,
    ]),
    "",
  ].join("\n");
}

/**
 * --empty-ns net: no firewall comes back, so the lock CRIU's dump saved with it is put in the new
 * namespace as CRIU's restore does (network_lock_internal): until the network-unlock script has
 * run, only packets marked by criu pass.
 */
function lockEmptyNetns(pid: number, method: NetworkLock, table: string, log: Log): LockPlace {
  try {
    if (method === "iptables") {
      runEachInNetns(
        pid,
        iptablesTools("restore").map((tool) => [tool, "-w", "--noflush"]),
        encode(IPTABLES_LOCK),
      );
      log.info("Locked the empty network namespace (iptables chain CRIU)");
      return method;
    }
    if (method === "nftables") {
      runInNetns(pid, ["nft", "-f", "/dev/stdin"], encode(nftLock(table)));
      log.info(`Locked the empty network namespace (nft table inet ${table})`);
      return method;
    }
    return "none";
  } catch (e) {
    if (!(e instanceof NetToolError)) throw e;
    throw new RestoreError(
      `Cannot lock the empty network namespace (--network-lock ${method}): ${e.message}`,
    );
  }
}

/**
 * Veth pairs joining two network namespaces of the tree (the root's and a nested one, or two
 * nested ones), found at each dump's check: by namespace link, each end's index and the link of
 * its peer's namespace. An end whose peer is in another namespace names it by its index and a
 * namespace id of its own (IFLA_LINK_NETNSID); such a pair is two ends, in two saved namespaces,
 * each the other's peer. Both are saved with the peer's namespace id (CRIU's peer_nsid), and the
 * restore makes the pair once, from whichever of the two it fills first.
 */
let pairsBetween = new Map<string, Map<number, string>>();

function findVethsBetween(tree: FrozenTree, nsIds: NamespaceIds): Map<string, Map<number, string>> {
  const out = new Map<string, Map<number, string>>();
  const ours = nsIds.linksOf(Deno.pid).get("net");
  const saved = new Map<string, number>();
  for (const t of tree.tasks) {
    const link = t.state === "zombie" ? undefined : nsIds.linksOf(t.pid).get("net");
    if (link !== undefined && link !== ours && !saved.has(link)) saved.set(link, t.pid);
  }
  if (saved.size < 2) return out;
  const leading = [...saved].map(([link, pid]) => ({
    link,
    veths: listLinks(pid).filter((l) => kindOf(l) === "veth" && l.link_netnsid !== undefined),
  }));
  for (const a of leading) {
    for (const v of a.veths) {
      const b = leading.find((o) =>
        o !== a && o.veths.some((w) => w.ifindex === v.link_index && w.link_index === v.ifindex)
      );
      if (!b) continue;
      const ends = out.get(a.link) ?? new Map<number, string>();
      out.set(a.link, ends.set(v.ifindex, b.link));
    }
  }
  return out;
}

registerNamespaceKind({
  name: "net",
  words: "network",
  cloneFlag: CLONE.NEWNET,
  nested: true,
  check(tree, nsIds) {
    pairsBetween = findVethsBetween(tree, nsIds);
  },
  dump(ctx) {
    const rootPid = ctx.tree.root.pid;
    const pids = [ctx.pid, ...ctx.tree.tasks.map((t) => t.pid).filter((p) => p !== ctx.pid)];
    const ends = pairsBetween.get(Deno.readLinkSync(`/proc/${ctx.pid}/ns/net`));
    const peerNsOf = (ifindex: number) => {
      const link = ends?.get(ifindex);
      return link === undefined ? undefined : ctx.idOfLink(link);
    };
    const extKey = ctx.ofRoot ? externalNetnsKey(ctx.options?.external ?? [], ctx.pid) : undefined;
    if (extKey !== undefined) {
      ctx.log.info(
        `The network namespace of process ${rootPid} is external (key ${extKey}): only its key is saved`,
      );
      saveExternalNetns(ctx.dir, ctx.id, extKey);
    } else if (ctx.ofRoot && ctx.options?.emptyNetNs) {
      ctx.log.info(`The network namespace of process ${rootPid} is not saved (--empty-ns net)`);
    } else {
      saveNetns(ctx.dir, pids, ctx.id, ctx.plugins, ctx.log, peerNsOf, treeIdsAtDump(ctx.tree.root.pid));
    }
    if (!ctx.ofRoot) return; // as CRIU, only the root's namespace is locked
    // Only a tree in a namespace of its own gets its network locked, as in CRIU. A lock script
    // that fails may have locked half-way: the unlock runs on failure too.
    const unlock = () => {
      try {
        ctx.hooks.run("network-unlock", rootPid);
      } catch (e) {
        ctx.log.error(`network-unlock: ${(e as Error).message}`);
      }
    };
    try {
      ctx.hooks.run("network-lock", rootPid);
    } catch (e) {
      unlock();
      throw e;
    }
    return {
      release: (leaveRunning) => {
        if (leaveRunning) unlock();
      },
      undo: unlock,
    };
  },
  prepareRestore(ctx) {
    if (ctx.ofRoot) {
      restoring.devices.clear();
      restoring.made.clear();
    }
    const saved = readSaved(ctx.dir, ctx.id);
    if (saved) restoring.devices.set(saved.id, saved.devices);
    const empty = ctx.empty.has("net");
    const outer = outerNames(ctx.options.vethPairs, ctx.options.external);
    const inventory = ctx.dir.read<inventory_entry>(KINDS.INVENTORY)[0];
    if (!ctx.ofRoot) {
      // A nested namespace: made when the images hold it (--empty-ns net leaves it empty too).
      if (!saved) return undefined;
      return {
        fill: (creator: Agent) => {
          if (!empty) fillNetns(ctx.dir, creator.pid, saved, outer, ctx.log, treeIdsOf(ctx));
        },
      };
    }
    const criuNsId = inventory?.rootIds?.netNsId;
    // A namespace of its own: its images, or else the root's id differing from criu's at the dump.
    const own = saved !== undefined ||
      (criuNsId !== undefined && ctx.id !== undefined && ctx.id !== criuNsId);
    if (!own) {
      if (empty) ctx.log.info("--empty-ns net: the tree was in criu's network namespace, it stays");
      return undefined;
    }
    const runId = inventory?.dumpCriuRunId || undefined;
    const method = lockMethodOf(inventory);
    // CRIU's lock is in the firewall CRIU's dump saved with its chain or table; the caller's
    // namespace is looked at too. Otherwise no lock is there but the one this restore puts in.
    let lock: LockPlace = extKeyOf(saved) !== undefined ||
        (!empty && saved !== undefined && firewallImagesMention(ctx.dir, saved.id, "CRIU"))
      ? "maybe"
      : "none";
    const lockIfEmpty = (pid: number) => {
      if (empty) lock = lockEmptyNetns(pid, method, nftTableOf(runId), ctx.log);
    };
    const afterRestore = (rootPid: number) => {
      ctx.hooks.run("network-unlock", rootPid);
      // As CRIU's restore: its lock (saved in the namespace's firewall, or put in an empty one)
      // goes after the scripts.
      dropCriuLock(rootPid, runId, lock, ctx.log);
    };
    const extKey = extKeyOf(saved);
    if (extKey) {
      // The caller's namespace, as it made it; locked as CRIU locks an empty one (--empty-ns net).
      const fd = externalNetnsFd(ctx.options, extKey);
      return {
        inCreator: (creator) => enterExternalNetns(creator, fd, extKey, ctx.log),
        inCreatorTakesItself: true,
        inCreatorJoinsExisting: true,
        fill: (root) => lockIfEmpty(root.pid),
        afterRestore,
      };
    }
    const toFill = empty ? undefined : saved;
    if (!toFill) {
      ctx.log.info(`The network namespace is left empty (${saved ? "--empty-ns net" : "no image of it"})`);
    }
    return {
      fill: (root) => {
        if (toFill) fillNetns(ctx.dir, root.pid, toFill, outer, ctx.log, treeIdsOf(ctx));
        else lockIfEmpty(root.pid);
      },
      afterRestore,
    };
  },
});
