/**
 * The network lock of dumped TCP connections. While a dumped connection's process is gone, a
 * packet of its peer must not reach the kernel, which would answer it with a reset: from the
 * moment a connection is read at dump until its restore is complete, netfilter drops the packets
 * of exactly that connection, both ways. As CRIU does, with `--network-lock`:
 *   - iptables (the default): one DROP rule per direction in INPUT and OUTPUT of the filter
 *     table, matching the connection's addresses and ports (ip6tables for IPv6; a v4-mapped
 *     connection is an IPv4 one on the wire). Packets marked 0xC114 are let through, as CRIU's;
 *   - nftables: a table of the checkpoint's own, `inet CRIU-<run id>` as CRIU names it (the run id
 *     is inventory's dump_criu_run_id; a CRIU restore removes that table), whose input and output
 *     chains drop what matches a set of connections; the table goes when its last connection is
 *     unlocked;
 *   - skip: nothing (the caller takes care of the network).
 * Unlocking a connection that is not locked is not an error: a failed dump or restore unlocks
 * everything it may have locked.
 */
import { DumpError } from "../errors.ts";
import type { Log } from "../log.ts";

/** One TCP connection as netfilter sees it; IPv4 addresses are dotted quads. */
export interface Connection {
  family: 4 | 6;
  local: string;
  localPort: number;
  peer: string;
  peerPort: number;
}

export type LockMethod = "iptables" | "nftables" | "skip";

/** How a checkpoint's connections are locked: the method, and the nft table of the checkpoint. */
export interface LockScope {
  method: LockMethod;
  nftTable: string;
}

/**
 * The nft table of the checkpoint with run id `runId`, as CRIU names it: "inet CRIU-<run id>" cut
 * to CRIU's 32-byte buffer (31 characters). Images without a run id: criu-ts's older "CRIU".
 */
export function nftTableOf(runId: string | undefined): string {
  return runId ? `CRIU-${runId}`.slice(0, 31 - "inet ".length) : "CRIU";
}

/** The mark of packets the lock lets through (CRIU's SOCCR_MARK). */
const PASS_MARK = "0xc114";

export function connectionText(c: Connection): string {
  const at = (a: string, p: number) => (c.family === 6 ? `[${a}]:${p}` : `${a}:${p}`);
  return `${at(c.local, c.localPort)} - ${at(c.peer, c.peerPort)}`;
}

/** A v4-mapped IPv6 connection is an IPv4 one on the wire. */
export function onTheWire(
  family: 4 | 6,
  local: string,
  peer: string,
): { family: 4 | 6; local: string; peer: string } {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i;
  const l = mapped.exec(local);
  const p = mapped.exec(peer);
  if (family === 6 && l && p) return { family: 4, local: l[1]!, peer: p[1]! };
  return { family, local, peer };
}

function run(program: string, args: string[]): { ok: boolean; said: string } {
  try {
    const out = new Deno.Command(program, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .outputSync();
    const said = new TextDecoder().decode(out.stderr).trim() || new TextDecoder().decode(out.stdout).trim();
    return { ok: out.success, said };
  } catch (e) {
    return { ok: false, said: `cannot run ${program}: ${(e as Error).message}` };
  }
}

function iptablesRules(c: Connection): string[][] {
  const rule = (chain: string, src: string, sport: number, dst: string, dport: number) => [
    chain,
    "--protocol",
    "tcp",
    "-m",
    "mark",
    "!",
    "--mark",
    PASS_MARK,
    "--source",
    src,
    "--sport",
    `${sport}`,
    "--destination",
    dst,
    "--dport",
    `${dport}`,
    "-j",
    "DROP",
  ];
  return [
    rule("INPUT", c.peer, c.peerPort, c.local, c.localPort),
    rule("OUTPUT", c.local, c.localPort, c.peer, c.peerPort),
  ];
}

function nftElements(c: Connection): string {
  return `${c.peer} . ${c.peerPort} . ${c.local} . ${c.localPort}, ${c.local} . ${c.localPort} . ${c.peer} . ${c.peerPort}`;
}

/** Runs an nft script from a temporary file (nft reads a whole script atomically). */
function nftScript(script: string): { ok: boolean; said: string } {
  const path = Deno.makeTempFileSync({ prefix: "criu-ts-nft-" });
  try {
    Deno.writeTextFileSync(path, script);
    return run("nft", ["-f", path]);
  } finally {
    Deno.removeSync(path);
  }
}

function nftTableScript(table: string): string {
  return [
    `table inet ${table} {`,
    "  set conns4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; }",
    "  set conns6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; }",
    "  chain input { type filter hook input priority 0; policy accept; }",
    "  chain output { type filter hook output priority 0; policy accept; }",
    "}",
    `flush chain inet ${table} input`,
    `flush chain inet ${table} output`,
    ...["input", "output"].flatMap((chain) => [
      `add rule inet ${table} ${chain} meta mark != ${PASS_MARK} ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop`,
      `add rule inet ${table} ${chain} meta mark != ${PASS_MARK} ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop`,
    ]),
  ].join("\n");
}

/** Drops every packet of `c`, both ways, until unlock(). Throws a DumpError naming the connection. */
export function lockConnection({ method, nftTable: table }: LockScope, c: Connection, log: Log): void {
  if (method === "skip") return;
  if (method === "iptables") {
    const program = c.family === 6 ? "ip6tables" : "iptables";
    for (const rule of iptablesRules(c)) {
      const r = run(program, ["-w", "-t", "filter", "-I", ...rule]);
      if (!r.ok) {
        throw new DumpError(`Cannot lock the TCP connection ${connectionText(c)} with ${program}: ${r.said}`);
      }
    }
  } else {
    const r = nftScript(
      `${nftTableScript(table)}\nadd element inet ${table} conns${c.family} { ${nftElements(c)} }\n`,
    );
    if (!r.ok) throw new DumpError(`Cannot lock the TCP connection ${connectionText(c)} with nft: ${r.said}`);
  }
  log.info(`Locked the TCP connection ${connectionText(c)} (${method})`);
}

/** Lets the packets of `c` through again; never throws (what cannot be removed is logged). */
export function unlockConnection({ method, nftTable: table }: LockScope, c: Connection, log: Log): void {
  if (method === "skip") return;
  if (method === "iptables") {
    const program = c.family === 6 ? "ip6tables" : "iptables";
    for (const rule of iptablesRules(c)) {
      // One -D removes one copy; a rule locked twice (a connection dumped twice) is removed as often.
      for (let i = 0; i < 8 && run(program, ["-w", "-t", "filter", "-C", ...rule]).ok; i++) {
        const r = run(program, ["-w", "-t", "filter", "-D", ...rule]);
        if (!r.ok) log.error(`Cannot unlock the TCP connection ${connectionText(c)}: ${r.said}`);
      }
    }
  } else {
    const listed = run("nft", ["list", "table", "inet", table]);
    if (!listed.ok) return; // no table: nothing is locked
    const r = nftScript(`delete element inet ${table} conns${c.family} { ${nftElements(c)} }\n`);
    if (!r.ok) log.debug(`nft: ${r.said}`);
    dropEmptyNftTable(table, log);
  }
  log.info(`Unlocked the TCP connection ${connectionText(c)} (${method})`);
}

/** Removes the checkpoint's table once neither of its sets holds a connection. */
function dropEmptyNftTable(table: string, log: Log): void {
  const listed = run("nft", ["list", "table", "inet", table]);
  if (!listed.ok || /elements\s*=/.test(listed.said)) return;
  const r = run("nft", ["delete", "table", "inet", table]);
  if (!r.ok) log.error(`Cannot remove nft table inet ${table}: ${r.said}`);
}
