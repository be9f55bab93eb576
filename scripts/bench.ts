/**
 * The benchmark (deno task bench): dump and restore through the `criu` launcher, as users run it.
 *
 *   - a process with 1 GiB of touched anonymous memory, against `dd` writing as many bytes into
 *     the same directory (the page cache must take the bytes either way: that is the floor);
 *   - a process with 2,000 mappings;
 *   - a tiny process (five times: the median of each figure);
 *   - a tree of 100 processes, and a process with 500 threads;
 *   - a process with 10,000 open regular files, and one holding a 64 MiB unlinked file (dumped
 *     with --ghost-limit 128M);
 *   - a process holding 1,000 sockets of mixed kinds (unix pairs with queued bytes, UDP, TCP
 *     listeners), and one TCP connection with 4 MiB queued each way (--tcp-established);
 *   - a container with 200 mounts (bench_mounts: its own mount, IPC, UTS and network namespaces,
 *     tmpfs with files, bind mounts, proc, read-only binds), restored with --root at a bind mount
 *     of / that the bench makes; the host must hold no new mount afterwards.
 * Reported: wall time of dump and restore, frozen time (from stats-dump), MB/s, the tool's peak
 * RSS (GNU time), and the image size. Options: --mib N (default 1024), --maps N (default 2000),
 * --only WORD (run only the scenarios whose name contains WORD; may be repeated).
 *
 * With CRIU_UPSTREAM naming a CRIU 4.x binary, each scenario runs a second time with it (a new
 * workload, the same options) and a second table gives CRIU's times and ours divided by them.
 */
import { parseArgs } from "node:util";
import { criu, descendants, reap, tempDir, Workload } from "../tests/lib/harness.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mib: { type: "string", default: "1024" },
    maps: { type: "string", default: "2000" },
    only: { type: "string", multiple: true },
  },
});
const ONLY = values.only ?? [];
const MIB = Number(values.mib);
const MAPS = Number(values.maps);

interface Timed {
  seconds: number;
  maxRssKb: number;
}

const OURS = new URL("./criu", import.meta.url).pathname;
/** CRIU 4.x, to compare with, when CRIU_UPSTREAM names it. */
const UPSTREAM = Deno.env.get("CRIU_UPSTREAM");

/** Runs `TOOL ARGS` (criu-ts's launcher unless told) under GNU time; wall seconds and peak RSS. */
async function timedCriu(args: string[], tool = OURS): Promise<Timed> {
  const t0 = performance.now();
  const r = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "%M", tool, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const seconds = (performance.now() - t0) / 1000;
  const err = new TextDecoder().decode(r.stderr).trim().split("\n");
  if (!r.success) throw new Error(`criu ${args.join(" ")} failed:\n${err.join("\n")}`);
  return { seconds, maxRssKb: Number(err[err.length - 1]) };
}

async function frozenMs(images: string): Promise<number> {
  const r = await criu(["crit", "decode", "-i", `${images}/stats-dump`]);
  const stats = JSON.parse(r.stdout).entries[0].dump;
  return Number(stats.frozen_time) / 1000;
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const e of Deno.readDirSync(dir)) if (e.isFile) n += Deno.statSync(`${dir}/${e.name}`).size;
  return n;
}

async function ddSeconds(dir: string, mib: number): Promise<number> {
  const t0 = performance.now();
  const r = await new Deno.Command("dd", {
    args: ["if=/dev/zero", `of=${dir}/dd.out`, "bs=1M", `count=${mib}`],
    stderr: "null",
  }).output();
  if (!r.success) throw new Error("dd failed");
  const s = (performance.now() - t0) / 1000;
  Deno.removeSync(`${dir}/dd.out`);
  return s;
}

interface Row {
  scenario: string;
  dumpS: number;
  frozenMs: number;
  restoreS: number;
  imageMiB: number;
  dumpMBs: number;
  restoreMBs: number;
  rssMiB: number;
  ddS?: number;
  /** The same scenario with CRIU 4.x, or why it could not run. */
  upstream?: Timing | string;
}

/** Wall times of one dump and its restore, and the tool's peak RSS. */
interface Timing {
  dumpS: number;
  restoreS: number;
  rssMiB: number;
}

/**
 * Starts the workload afresh and dumps and restores it with `tool` (the same options); the restored
 * workload must pass its checks. Returns the times, and the images' size for the caller's figures.
 */
async function dumpAndRestore(
  label: string,
  workload: string,
  args: string[],
  criuArgs: string[],
  tool: string,
  withDd = 0,
  restoreArgs: string[] = [],
): Promise<Timing & { images: number; frozenMs: number; ddS?: number }> {
  const w = await Workload.start(workload, args);
  const images = tempDir("criu-ts-bench-");
  try {
    const ddS = withDd ? await ddSeconds(images, withDd) : undefined;
    const tree = [w.pid, ...descendants(w.pid)];
    const d = await timedCriu(["dump", "-t", `${w.pid}`, "-D", images, ...criuArgs], tool);
    for (const pid of tree) await reap(pid);
    const size = dirBytes(images);
    const frozen = await frozenMs(images);
    const r = await timedCriu(["restore", "-D", images, "-d", ...criuArgs, ...restoreArgs], tool);
    const verdict = await w.finish();
    if (verdict !== "PASS") throw new Error(`${label}: the restored process reports ${verdict}`);
    return {
      dumpS: d.seconds,
      restoreS: r.seconds,
      rssMiB: Math.max(d.maxRssKb, r.maxRssKb) / 1024,
      images: size,
      frozenMs: frozen,
      ...(ddS !== undefined ? { ddS } : {}),
    };
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
}

/** The scenario with CRIU 4.x, or the first line of why it failed (the bench goes on). */
async function upstreamTiming(
  label: string,
  workload: string,
  args: string[],
  criuArgs: string[],
  restoreArgs: string[],
) {
  try {
    const t = await dumpAndRestore(label, workload, args, criuArgs, UPSTREAM!, 0, restoreArgs);
    return { dumpS: t.dumpS, restoreS: t.restoreS, rssMiB: t.rssMiB };
  } catch (e) {
    return `failed: ${(e as Error).message.split("\n").find((l) => /Error|failed|reports/.test(l)) ?? ""}`;
  }
}

async function scenario(
  label: string,
  workload: string,
  args: string[],
  withDd = 0,
  criuArgs: string[] = [],
  restoreArgs: string[] = [],
): Promise<Row> {
  const t = await dumpAndRestore(label, workload, args, criuArgs, OURS, withDd, restoreArgs);
  const mb = t.images / 1e6;
  const row: Row = {
    scenario: label,
    dumpS: t.dumpS,
    frozenMs: t.frozenMs,
    restoreS: t.restoreS,
    imageMiB: t.images / 1048576,
    dumpMBs: mb / t.dumpS,
    restoreMBs: mb / t.restoreS,
    rssMiB: t.rssMiB,
  };
  if (t.ddS !== undefined) row.ddS = t.ddS;
  if (UPSTREAM) row.upstream = await upstreamTiming(label, workload, args, criuArgs, restoreArgs);
  return row;
}

async function repeat(n: number, run: () => Promise<Row>): Promise<Row[]> {
  const out: Row[] = [];
  for (let i = 0; i < n; i++) out.push(await run());
  return out;
}

/**
 * Each figure's median over runs: a tiny process takes about a tenth of a second, where one
 * hiccup of this VM would otherwise decide the figure.
 */
function median(runs: Row[]): Row {
  const mid = (pick: (r: Row) => number) => runs.map(pick).sort((a, b) => a - b)[runs.length >> 1]!;
  const upstream = runs.map((r) => r.upstream).filter((u): u is Timing => typeof u === "object");
  const failed = runs.map((r) => r.upstream).find((u) => typeof u === "string");
  const midOf = (pick: (t: Timing) => number) =>
    upstream.map(pick).sort((a, b) => a - b)[upstream.length >> 1]!;
  return {
    ...runs[0]!,
    dumpS: mid((r) => r.dumpS),
    frozenMs: mid((r) => r.frozenMs),
    restoreS: mid((r) => r.restoreS),
    dumpMBs: mid((r) => r.dumpMBs),
    restoreMBs: mid((r) => r.restoreMBs),
    rssMiB: Math.max(...runs.map((r) => r.rssMiB)),
    ...(failed !== undefined ? { upstream: failed } : upstream.length
      ? {
        upstream: {
          dumpS: midOf((t) => t.dumpS),
          restoreS: midOf((t) => t.restoreS),
          rssMiB: Math.max(...upstream.map((t) => t.rssMiB)),
        },
      }
      : {}),
  };
}

/** The mounts of criu's namespace, one line each without ids (what a run must leave as it found). */
function hostMounts(): string[] {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n").filter(Boolean).map((l) =>
    l.split(" ").slice(3).join(" ")
  ).sort();
}

/**
 * A container with COUNT mounts, restored with --root at a bind mount of / (as the mntns tests
 * do). Every restored mount lives in the container's namespace: the host must hold the same
 * mounts afterwards, or the bench fails.
 */
async function mountsScenario(label: string, count: number): Promise<Row> {
  const rootfs = tempDir("criu-ts-bench-root-");
  const before = hostMounts();
  const mount = (...args: string[]) => {
    const r = new Deno.Command("mount", { args, stderr: "piped" }).outputSync();
    if (!r.success) throw new Error(`mount ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
  };
  mount("--bind", "/", rootfs);
  let row: Row;
  try {
    row = await scenario(label, "bench_mounts", [String(count)], 0, [], ["--root", rootfs]);
  } finally {
    new Deno.Command("umount", { args: [rootfs] }).outputSync();
    Deno.removeSync(rootfs);
  }
  const left = hostMounts().filter((l) => !before.includes(l));
  if (left.length) throw new Error(`${label}: the run left mounts behind:\n${left.join("\n")}`);
  return row;
}

/** The scenarios, by name; --only picks some. */
const SCENARIOS: [string, () => Promise<Row>][] = [
  [
    `${MIB} MiB touched anonymous memory`,
    () => scenario(`${MIB} MiB touched anonymous memory`, "bench_mem", [String(MIB)], MIB),
  ],
  [`${MAPS} mappings`, () => scenario(`${MAPS} mappings`, "bench_maps", [String(MAPS)])],
  [
    "tiny process (median of 5)",
    async () => median(await repeat(5, () => scenario("tiny process (median of 5)", "bench_mem", ["1"]))),
  ],
  ["100-process tree", () => scenario("100-process tree", "bench_tree", ["100"])],
  ["500-thread process", () => scenario("500-thread process", "threads", ["500"])],
  ["10,000 open regular files", () => scenario("10,000 open regular files", "bench_files", ["10000"])],
  [
    "64 MiB ghost file (--ghost-limit 128M)",
    () =>
      scenario("64 MiB ghost file (--ghost-limit 128M)", "bench_ghost", ["64"], 0, ["--ghost-limit", "128M"]),
  ],
  ["1,000 sockets of mixed kinds", () => scenario("1,000 sockets of mixed kinds", "bench_sockets", ["1000"])],
  [
    "TCP connection, 4 MiB queued each way",
    () => scenario("TCP connection, 4 MiB queued each way", "bench_tcp", ["4"], 0, ["--tcp-established"]),
  ],
  ["a container with 200 mounts", () => mountsScenario("a container with 200 mounts", 200)],
];

const rows: Row[] = [];
for (const [name, run] of SCENARIOS) {
  if (ONLY.length === 0 || ONLY.some((w) => name.includes(w))) rows.push(await run());
}

const f = (x: number, d = 3) => x.toFixed(d);
console.log(
  "| scenario | dump s | frozen ms | restore s | image MiB | dump MB/s | restore MB/s | peak RSS MiB | dd s | dump/dd |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  const dd = r.ddS === undefined ? "" : f(r.ddS);
  const ratio = r.ddS === undefined ? "" : f(r.dumpS / r.ddS, 2);
  console.log(
    `| ${r.scenario} | ${f(r.dumpS)} | ${f(r.frozenMs, 1)} | ${f(r.restoreS)} | ${f(r.imageMiB, 1)} | ${
      f(r.dumpMBs, 0)
    } | ${f(r.restoreMBs, 0)} | ${f(r.rssMiB, 1)} | ${dd} | ${ratio} |`,
  );
}

if (UPSTREAM) {
  console.log(`\nThe same scenarios with ${UPSTREAM} (ours / CRIU's: below 1 is faster than CRIU)\n`);
  console.log(
    "| scenario | CRIU dump s | CRIU restore s | CRIU peak RSS MiB | dump ours/CRIU | restore ours/CRIU |",
  );
  console.log("|---|---|---|---|---|---|");
  for (const r of rows) {
    const u = r.upstream;
    if (typeof u !== "object") {
      console.log(`| ${r.scenario} | ${u ?? "not run"} | | | | |`);
      continue;
    }
    console.log(
      `| ${r.scenario} | ${f(u.dumpS)} | ${f(u.restoreS)} | ${f(u.rssMiB, 1)} | ${
        f(r.dumpS / u.dumpS, 2)
      } | ${f(r.restoreS / u.restoreS, 2)} |`,
    );
  }
}
