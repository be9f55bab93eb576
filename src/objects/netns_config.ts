/**
 * What a network namespace holds beyond its devices, in CRIU's raw images, each the output of the
 * tool CRIU runs inside the namespace (routes: see below) and restored by feeding it back, in
 * CRIU's order:
 *   ifaddr-ID.img     `ip addr save`           `ip addr restore`
 *   route-ID.img      `ip -4 route save ...`   `ip route restore` (both without the saved
 *   route6-ID.img     `ip -6 route save ...`   `ip route restore`  link state: see
 *                                                                  routesWithoutLinkState)
 *   rule-ID.img       `ip rule save`           `ip rule flush`, `ip rule delete table local`,
 *                                              `ip rule restore` (the kernel's default rules
 *                                              would otherwise come twice)
 *   iptables-ID.img   `iptables-legacy-save`   `iptables-legacy-restore -w`
 *   ip6tables-ID.img  `ip6tables-legacy-save`  `ip6tables-legacy-restore -w`
 *   nftables-ID.img   `nft list ruleset`       `nft -f`
 * As CRIU built with nftables support (Debian's) does: iptables' nf_tables backend keeps its
 * rules in nftables, so `nft list ruleset` holds them, and the iptables images hold only the
 * legacy tables. On a host without `nft` the iptables images come from `iptables-save` and
 * `ip6tables-save` (CRIU built without it). An empty image is skipped on restore.
 *
 * Routes: CRIU 4.2 runs `ip route save` and `ip -6 route save`, which keep the main table only, so
 * policy routing (`ip route add ... table 100` with an `ip rule` leading there) is lost. criu-ts
 * saves every table instead (`ip -4 route save table all`, `ip -6 route save table all`; without
 * `-4` the first would hold both families), in the same format (`ip route restore` takes any table, so CRIU
 * restores these images whole), without the routes the kernel makes itself in the local table for
 * each address (routesWithoutKernelLocal): the restored addresses make those again.
 */
import { KINDS } from "../images/kinds.ts";
import type { ImageKind } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import { DumpError, RestoreError } from "../errors.ts";
import type { Log } from "../log.ts";
import { ipTool, NetToolError, runInNetns } from "./netns_tools.ts";
import { routesWithoutKernelLocal, routesWithoutLinkState } from "../../ffi/netdev.ts";

interface SavedTool {
  kind: ImageKind;
  save: string[];
  restore: string[];
  /** Run before the restore, allowed to fail. */
  before?: string[][];
  /** What of the tool's output the image keeps (all of it without). */
  keep?: (saved: Uint8Array) => Uint8Array;
}

function onPath(program: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    try {
      Deno.statSync(`${dir}/${program}`);
      return true;
    } catch {
      // not there
    }
  }
  return false;
}

function ipTools(): SavedTool[] {
  return [
    { kind: KINDS.IFADDR, save: ipTool("addr", "save"), restore: ipTool("addr", "restore") },
    {
      kind: KINDS.ROUTE,
      save: ipTool("-4", "route", "save", "table", "all"),
      restore: ipTool("route", "restore"),
      keep: routesWithoutKernelLocal,
    },
    {
      kind: KINDS.ROUTE6,
      save: ipTool("-6", "route", "save", "table", "all"),
      restore: ipTool("route", "restore"),
      keep: routesWithoutKernelLocal,
    },
    {
      kind: KINDS.RULE,
      save: ipTool("rule", "save"),
      restore: ipTool("rule", "restore"),
      before: [ipTool("rule", "flush"), ipTool("rule", "delete", "table", "local")],
    },
  ];
}

/** The firewall's tools, as CRIU picks them (see the top of this file). */
function firewallTools(): SavedTool[] {
  const withNft = onPath("nft");
  const tables = (family: "ip" | "ip6", kind: ImageKind): SavedTool | undefined => {
    const legacy = `${family}tables-legacy`;
    if (onPath(`${legacy}-save`)) {
      return { kind, save: [`${legacy}-save`], restore: [`${legacy}-restore`, "-w"] };
    }
    if (withNft) return undefined; // nothing but nftables: its ruleset holds it all
    return { kind, save: [`${family}tables-save`], restore: [`${family}tables-restore`, "-w"] };
  };
  const tools = [tables("ip", KINDS.IPTABLES), tables("ip6", KINDS.IP6TABLES)].filter((t) => t !== undefined);
  if (withNft) {
    tools.push({
      kind: KINDS.NFTABLES,
      save: ["nft", "list", "ruleset"],
      restore: ["nft", "-f", "/dev/stdin"],
    });
  }
  return tools;
}

/** The first four bytes (little-endian) of each dump `ip ... save` writes. */
const IP_DUMP_MAGIC = new Map<ImageKind, number>([
  [KINDS.IFADDR, 0x47361222],
  [KINDS.ROUTE, 0x45311224],
  [KINDS.ROUTE6, 0x45311224],
  [KINDS.RULE, 0x71706986],
]);

/**
 * PREPARE: each `ip` dump of the namespace starts as `ip` writes it (or is empty), so that a
 * damaged one is refused by name before any process exists. (What follows is for `ip` to judge.)
 */
export function checkNetConfig(dir: ImageDir, id: number): void {
  for (const [kind, magic] of IP_DUMP_MAGIC) {
    if (!dir.has(kind, id)) continue;
    const bytes = Deno.readFileSync(dir.pathFor(kind, id));
    if (bytes.length === 0) continue;
    const found = bytes.length < 4
      ? undefined
      : new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
    if (found !== magic) {
      throw new RestoreError(
        `Refusing the images: ${dir.pathFor(kind, id)} is not a dump of ip (magic 0x${
          magic.toString(16)
        }, found ${found === undefined ? `${bytes.length} byte(s)` : `0x${found.toString(16)}`})`,
      );
    }
  }
}

/** Saves the addresses, routes, rules and firewall of the namespace of `pid` as image `id`. */
export function dumpNetConfig(dir: ImageDir, pid: number, id: number, log: Log): void {
  for (const tool of [...ipTools(), ...firewallTools()]) {
    let bytes: Uint8Array;
    try {
      bytes = runInNetns(pid, tool.save);
      if (tool.keep) bytes = tool.keep(bytes);
    } catch (e) {
      if (!(e instanceof NetToolError)) throw e;
      throw new DumpError(`Cannot save the network namespace of process ${pid}: ${e.message}`);
    }
    const path = dir.pathFor(tool.kind, id);
    dir.noteWritten(path);
    Deno.writeFileSync(path, bytes, { mode: 0o644 });
    log.debug(`${tool.save.join(" ")}: ${bytes.length} bytes into ${path}`);
  }
}

/** Feeds the saved images back to their tools inside the namespace of `pid`, in CRIU's order. */
export function restoreNetConfig(dir: ImageDir, pid: number, id: number, log: Log): void {
  for (
    const kind of [
      KINDS.IFADDR,
      KINDS.ROUTE,
      KINDS.ROUTE6,
      KINDS.RULE,
      KINDS.IPTABLES,
      KINDS.IP6TABLES,
      KINDS.NFTABLES,
    ]
  ) {
    if (!dir.has(kind, id)) continue;
    let bytes: Uint8Array = Deno.readFileSync(dir.pathFor(kind, id));
    if (bytes.length === 0) continue;
    // A route saved while its device had no carrier says so; the kernel refuses that in a new one.
    if (kind === KINDS.ROUTE || kind === KINDS.ROUTE6) bytes = routesWithoutLinkState(bytes);
    const tool = restoreToolFor(kind);
    for (const argv of tool.before ?? []) {
      try {
        runInNetns(pid, argv);
      } catch (e) {
        log.debug(`${argv.join(" ")}: ${(e as Error).message}`);
      }
    }
    try {
      runInNetns(pid, tool.restore, bytes);
    } catch (e) {
      if (!(e instanceof NetToolError)) throw e;
      throw new RestoreError(`Cannot restore ${dir.pathFor(kind, id)}: ${e.message}`);
    }
    log.info(`Restored ${dir.pathFor(kind, id)} with ${tool.restore.join(" ")}`);
  }
}

/** The tool an image goes back through; the iptables images prefer the legacy tools, as CRIU. */
function restoreToolFor(kind: ImageKind): SavedTool {
  const ip = ipTools().find((t) => t.kind === kind);
  if (ip) return ip;
  if (kind === KINDS.NFTABLES) return { kind, save: [], restore: ["nft", "-f", "/dev/stdin"] };
  const family = kind === KINDS.IPTABLES ? "ip" : "ip6";
  const legacy = `${family}tables-legacy-restore`;
  return { kind, save: [], restore: [onPath(legacy) ? legacy : `${family}tables-restore`, "-w"] };
}

/** Whether a firewall image (iptables, ip6tables, nftables) of namespace `id` holds `text`. */
export function firewallImagesMention(dir: ImageDir, id: number, text: string): boolean {
  return [KINDS.IPTABLES, KINDS.IP6TABLES, KINDS.NFTABLES].some((kind) =>
    dir.has(kind, id) &&
    new TextDecoder("latin1").decode(Deno.readFileSync(dir.pathFor(kind, id))).includes(text)
  );
}
