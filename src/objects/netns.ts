/**
 * Network namespaces. A tree that runs in a network namespace of its own (`unshare --net`, a
 * container) gets one again on restore, as CRIU does, and the network-lock / network-unlock
 * action scripts run around it.
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
import { refuse } from "./refusal.ts";
import { registerNamespaceKind } from "./namespaces.ts";
import type { Plugins } from "../plugins/plugins.ts";
import type { Log } from "../log.ts";
import { checkLinks, dumpLinks, type OuterNames, outerNames, restoreLinks } from "./netdev.ts";
import { IPV4_SYSCTLS, readConf, readSysctls, UNIX_CONF, writeConf, writeSysctls } from "./netns_sysctl.ts";
import { checkNetConfig, dumpNetConfig, restoreNetConfig } from "./netns_config.ts";
import { NetToolError, runInNetns, textInNetns } from "./netns_tools.ts";
import { nftTableOf } from "./network_lock.ts";
import { NETWORK_LOCK_METHOD, type NetworkLock } from "../options/options.ts";
import type { RestoreTaskImages } from "../restore/images.ts";
import { RestoreError } from "../errors.ts";

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

/** Saves the namespace of the root (see the top of this file), or refuses what it cannot. */
function saveNetns(
  dir: ImageDir,
  tree: readonly number[],
  nsId: number,
  plugins: Plugins,
  log: Log,
): void {
  const rootPid = tree[0]!;
  dir.write(KINDS.NETDEV, nsId, dumpLinks(rootPid, nsId, plugins, log, tree));
  const settings = inNetns(`/proc/${rootPid}/ns/net`, () =>
    create(netns_entrySchema, {
      defConf4: readConf("ipv4", "default"),
      allConf4: readConf("ipv4", "all"),
      defConf6: readConf("ipv6", "default"),
      allConf6: readConf("ipv6", "all"),
      unixConf: readSysctls(UNIX_CONF),
      ipv4Sysctl: readSysctls(IPV4_SYSCTLS),
    }));
  dir.write(KINDS.NETNS, nsId, [settings]);
  dumpNetConfig(dir, rootPid, nsId, log);
}

/** The namespace-wide settings, first, so that devices made later take the saved defaults (as CRIU). */
function restoreSettings(pid: number, s: netns_entry, image: string, log: Log): void {
  inNetns(`/proc/${pid}/ns/net`, () => {
    writeConf("ipv4", "all", s.allConf4, image, log);
    writeConf("ipv4", "default", s.defConf4, image, log);
    writeConf("ipv6", "all", s.allConf6, image, log);
    writeConf("ipv6", "default", s.defConf6, image, log);
    writeSysctls(UNIX_CONF, s.unixConf, image, log);
    writeSysctls(IPV4_SYSCTLS, s.ipv4Sysctl, image, log);
  });
}

function fillNetns(
  dir: ImageDir,
  pid: number,
  saved: SavedNetns,
  outer: OuterNames,
  log: Log,
): void {
  if (saved.settings) restoreSettings(pid, saved.settings, `netns-${saved.id}.img`, log);
  restoreLinks(pid, saved.devices, outer, `netdev-${saved.id}.img`, log);
  restoreNetConfig(dir, pid, saved.id, log);
}

/**
 * CRIU's dump locks a tree's own namespace from inside (a table `inet CRIU-<run id>` with
 * `--network-lock nftables`; a CRIU chain of iptables and ip6tables jumped to from INPUT and
 * OUTPUT, letting through only packets marked 0xc114, by default) and saves that lock with the
 * namespace's firewall; its restore drops it once the tree is back. So does this one, for images
 * CRIU wrote (criu-ts's own dumps lock a namespace only through the action scripts).
 */
function dropCriuLock(pid: number, runId: string | undefined, log: Log): void {
  const table = nftTableOf(runId);
  try {
    if (textInNetns(pid, ["nft", "list", "tables"]).split("\n").includes(`table inet ${table}`)) {
      runInNetns(pid, ["nft", "delete", "table", "inet", table]);
      log.info(`Dropped CRIU's network lock (nft table inet ${table})`);
    }
  } catch (e) {
    if (!(e instanceof NetToolError)) throw e;
    log.warn(`Cannot look for CRIU's nftables network lock: ${e.message}`);
  }
  for (const tool of ["iptables", "ip6tables"]) {
    let chain: string;
    try {
      chain = textInNetns(pid, [tool, "-w", "-S", "CRIU"]);
    } catch (e) {
      if (!(e instanceof NetToolError)) throw e;
      continue; // no such chain (or no such tool): nothing of CRIU's
    }
    if (!chain.includes("-A CRIU -m mark --mark 0xc114 -j ACCEPT")) continue;
    try {
      for (const hook of ["INPUT", "OUTPUT"]) runInNetns(pid, [tool, "-w", "-D", hook, "-j", "CRIU"]);
      runInNetns(pid, [tool, "-w", "-F", "CRIU"]);
      runInNetns(pid, [tool, "-w", "-X", "CRIU"]);
      log.info(`Dropped CRIU's network lock (${tool} chain CRIU)`);
    } catch (e) {
      if (!(e instanceof NetToolError)) throw e;
      log.warn(`Cannot drop CRIU's ${tool} network lock: ${e.message}`);
    }
  }
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
function lockEmptyNetns(pid: number, method: NetworkLock, table: string, log: Log): void {
  const input = new TextEncoder();
  try {
    if (method === "iptables") {
      // ip6tables only where the kernel has IPv6 (CRIU's kdat.ipv6).
      const ipv6 = (() => {
        try {
          return Deno.statSync("/proc/sys/net/ipv6").isDirectory;
        } catch {
          return false;
        }
      })();
      for (const tool of ipv6 ? ["iptables-restore", "ip6tables-restore"] : ["iptables-restore"]) {
        runInNetns(pid, [tool, "-w", "--noflush"], input.encode(IPTABLES_LOCK));
      }
    } else if (method === "nftables") {
      runInNetns(pid, ["nft", "-f", "/dev/stdin"], input.encode(nftLock(table)));
    } else {
      return;
    }
  } catch (e) {
    if (!(e instanceof NetToolError)) throw e;
    throw new RestoreError(
      `Cannot lock the empty network namespace (--network-lock ${method}): ${e.message}`,
    );
  }
  log.info(
    `Locked the empty network namespace (${
      method === "nftables" ? `nft table inet ${table}` : "iptables chain CRIU"
    })`,
  );
}

/**
 * Images (CRIU's: it saves nested network namespaces) where a task is in another network
 * namespace than the root's are refused before any process exists: criu-ts would restore that
 * task in the root's namespace.
 */
function refuseNested(tasks: readonly RestoreTaskImages[]): void {
  const root = tasks[0]!.ids?.netNsId;
  const nested = tasks.find((t) => !t.zombie && t.ids?.netNsId !== undefined && t.ids.netNsId !== root);
  if (!nested) return;
  throw new RestoreError(
    `Cannot restore process ${nested.entry.pid}: its network namespace (id ${
      nested.ids!.netNsId
    }) is not the ` +
      `root's (id ${root}); nested network namespaces are not restored yet`,
  );
}

registerNamespaceKind({
  name: "net",
  words: "network",
  cloneFlag: CLONE.NEWNET,
  check(tree, nsIds) {
    // Every live task shares the root's network namespace: nested ones are not saved yet.
    const root = nsIds.linksOf(tree.root.pid).get("net");
    for (const t of tree.tasks) {
      const theirs = nsIds.linksOf(t.pid).get("net");
      if (t.state === "zombie" || theirs === root) continue;
      refuse(
        t.pid,
        `network namespace ${theirs}`,
        `it differs from the root's (${root}); nested network namespaces are not supported yet`,
      );
    }
  },
  dump(ctx) {
    const rootPid = ctx.tree.root.pid;
    const pids = [rootPid, ...ctx.tree.tasks.map((t) => t.pid).filter((p) => p !== rootPid)];
    if (ctx.options?.emptyNetNs) {
      ctx.log.info(`The network namespace of process ${rootPid} is not saved (--empty-ns net)`);
    } else {
      saveNetns(ctx.dir, pids, ctx.id, ctx.plugins, ctx.log);
    }
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
    refuseNested(ctx.tasks);
    const rootNsId = ctx.tasks[0]!.ids?.netNsId;
    const saved = readSaved(ctx.dir, rootNsId);
    const inventory = ctx.dir.read<inventory_entry>(KINDS.INVENTORY)[0];
    const criuNsId = inventory?.rootIds?.netNsId;
    // A namespace of its own: its images, or else the root's id differing from criu's at the dump.
    const own = saved !== undefined ||
      (criuNsId !== undefined && rootNsId !== undefined && rootNsId !== criuNsId);
    if (!own) {
      if (ctx.empty.has("net")) {
        ctx.log.info("--empty-ns net: the tree was in criu's network namespace, it stays");
      }
      return undefined;
    }
    const toFill = ctx.empty.has("net") ? undefined : saved;
    if (!toFill) {
      ctx.log.info(`The network namespace is left empty (${saved ? "--empty-ns net" : "no image of it"})`);
    }
    const outer = outerNames(ctx.options.vethPairs, ctx.options.external);
    const runId = inventory?.dumpCriuRunId || undefined;
    const method = lockMethodOf(inventory);
    return {
      fill: (root) => {
        if (toFill) fillNetns(ctx.dir, root.pid, toFill, outer, ctx.log);
        else if (ctx.empty.has("net")) lockEmptyNetns(root.pid, method, nftTableOf(runId), ctx.log);
      },
      afterRestore: (rootPid) => {
        ctx.hooks.run("network-unlock", rootPid);
        // As CRIU's restore: its lock (saved in the namespace's firewall, or put in an empty one)
        // goes after the scripts.
        dropCriuLock(rootPid, runId, ctx.log);
      },
    };
  },
});
