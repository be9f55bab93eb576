/**
 * The standard matrix every workload runs through (gVisor's model: the same test with a
 * save/restore in the middle): plain; after dump and restore; after a --leave-running dump; and
 * after ten dump/restore cycles in a row. Works for single processes and whole trees.
 */
import assert from "node:assert/strict";
import { criu, criuOk, descendants, exists, openFds, reap, sleep, tempDir, Workload } from "./harness.ts";

export interface Case {
  name: string;
  args?: string[];
  /** How long the workload needs to run before its checks mean something. */
  settleMs?: number;
  /** Extra options for dump and restore (e.g. --shell-job). */
  criuArgs?: string[];
  /** Extra options for restore only (e.g. --root). */
  restoreArgs?: string[];
}

export function label(c: Case): string {
  return [c.name, ...(c.args ?? []).filter((a) => a !== "eintr-ok"), ...(c.criuArgs ?? [])].join(" ");
}

/** Dumps the workload's whole tree (which kills it), waits until every PID is free, restores it. */
export async function dumpRestore(w: Workload, images: string, c: Case): Promise<void> {
  const tree = [w.pid, ...descendants(w.pid)];
  await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4", ...(c.criuArgs ?? [])]);
  for (const pid of tree) await reap(pid);
  await criuOk([
    "restore",
    "-D",
    images,
    "-d",
    "-o",
    "restore.log",
    "-v4",
    ...(c.criuArgs ?? []),
    ...(c.restoreArgs ?? []),
  ]);
  assert.ok(exists(`/proc/${w.pid}`), `${w.name} is not back after restore`);
}

export async function withWorkload(
  c: Case,
  body: (w: Workload, images: string) => Promise<void>,
): Promise<void> {
  const fds = openFds();
  const w = await Workload.start(c.name, c.args ?? []);
  const images = tempDir();
  try {
    if (c.settleMs) await sleep(c.settleMs);
    await body(w, images);
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
}

/** Registers the four standard tests for every case. */
export function registerMatrix(cases: readonly Case[]): void {
  for (const c of cases) {
    Deno.test(`${label(c)} passes plain`, () => withWorkload(c, async () => {}));

    Deno.test(`${label(c)} passes after dump and restore`, () =>
      withWorkload(c, (w, images) => dumpRestore(w, images, c)));

    Deno.test(`${label(c)} keeps running after dump --leave-running`, () =>
      withWorkload(c, async (w, images) => {
        await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", ...(c.criuArgs ?? [])]);
        assert.ok(exists(`/proc/${w.pid}`));
        assert.ok(exists(`${images}/inventory.img`));
      }));

    Deno.test(`${label(c)} passes after 10 dump/restore cycles`, () =>
      withWorkload(c, async (w, images) => {
        for (let i = 0; i < 10; i++) await dumpRestore(w, images, c);
      }));
  }
}

/**
 * A dump of the workload (with `criuArgs`) that must be refused: exit 1, every pattern in criu's
 * words, no checkpoint left; the workload runs on and passes its own check afterwards.
 */
export function refusedDump(
  name: string,
  args: string[],
  expected: RegExp | readonly RegExp[],
  criuArgs: string[] = [],
): Promise<void> {
  return withWorkload({ name, args }, async (w, images) => {
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4", ...criuArgs]);
    assert.equal(r.code, 1, `the dump should fail: ${r.stderr}`);
    for (const pattern of [expected].flat()) assert.match(r.stderr, pattern);
    assert.ok(!exists(`${images}/inventory.img`), "a failed dump leaves no checkpoint");
  });
}
