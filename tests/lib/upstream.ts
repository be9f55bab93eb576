/**
 * Cross-checks with CRIU itself: a workload dumped by one tool and restored by the other, each way.
 * They need a CRIU 4.x binary named by CRIU_UPSTREAM (Debian's package here is 3.17, which fails on
 * this kernel); without it they are registered as ignored, so the suite passes without CRIU.
 */
import assert from "node:assert/strict";
import { criuOk, descendants, exists, reap } from "./harness.ts";
import { type Case, label, withWorkload } from "./matrix.ts";

/** The CRIU 4.x binary to cross-check with, if any. */
export const UPSTREAM = Deno.env.get("CRIU_UPSTREAM");

/** Dumps the tree rooted at `pid` into `dir` (which ends the tree). */
export type Dump = (pid: number, dir: string) => Promise<void>;
/** Restores the images of `dir`, detached. */
export type Restore = (dir: string) => Promise<void>;

/** Our dump, with CRIU's options `extra`. */
export function ourDump(extra: readonly string[] = []): Dump {
  return async (pid, dir) =>
    void await criuOk(["dump", "-t", `${pid}`, "-D", dir, "-o", "dump.log", "-v4", ...extra]);
}

/** Our restore, detached, with CRIU's options `extra`. */
export function ourRestore(extra: readonly string[] = []): Restore {
  return async (dir) => void await criuOk(["restore", "-D", dir, "-d", "-o", "restore.log", "-v4", ...extra]);
}

/** CRIU 4.x's dump, with the same options. */
export function upstreamDump(extra: readonly string[] = []): Dump {
  return (pid, dir) => upstreamOk(dir, "dump.log", ["dump", "-t", `${pid}`, "-D", dir, ...extra]);
}

/** CRIU 4.x's restore, detached, with the same options. */
export function upstreamRestore(extra: readonly string[] = []): Restore {
  return (dir) => upstreamOk(dir, "restore.log", ["restore", "-D", dir, "-d", ...extra]);
}

/** Runs CRIU 4.x with its log in the images directory; a failure shows the log's errors. */
async function upstreamOk(dir: string, log: string, args: string[]): Promise<void> {
  assert.ok(UPSTREAM, "CRIU_UPSTREAM is not set");
  const all = [...args, "-o", log, "-v4"];
  const out = await new Deno.Command(UPSTREAM, { args: all, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  if (out.code === 0) return;
  const path = `${dir}/${log}`;
  const errors = exists(path)
    ? Deno.readTextFileSync(path).split("\n").filter((l) => /Error|Warn/.test(l)).slice(-15).join("\n")
    : "";
  assert.fail(
    `${UPSTREAM} ${all.join(" ")} exited ${out.code}\n${new TextDecoder().decode(out.stderr)}${errors}`,
  );
}

/**
 * Starts the workload, dumps its tree with `dump` (which ends it), waits until its PIDs are free,
 * restores it with `restore`; the restored workload must then pass its own checks.
 */
export function crossRoundTrip(c: CrossCase, dump: Dump, restore: Restore): Promise<void> {
  return withWorkload(c, async (w, images) => {
    c.started?.();
    const tree = [w.pid, ...descendants(w.pid)];
    await dump(w.pid, images);
    for (const pid of tree) await reap(pid);
    await c.afterDump?.();
    await restore(images);
    assert.ok(exists(`/proc/${w.pid}`), `${w.name} is not back after restore`);
    c.restored?.();
  });
}

export interface CrossCase extends Case {
  /** Checked after each cross-check, the workload gone (e.g. that no network lock is left). */
  after?: () => void;
  /** The case's name in the tests' names, when its arguments do not say it (e.g. a unique name). */
  title?: string;
  /** Run once the workload is ready, before the dump (e.g. what a runtime sets up outside it). */
  started?: () => void;
  /** Run after the restore, before the workload checks itself (e.g. what a runtime sets up again). */
  restored?: () => void;
  /** Run between the dump and the restore, the dumped tree gone (e.g. to remove its cgroups). */
  afterDump?: () => Promise<void>;
  /** Run after each cross-check, passed or not (e.g. to remove the cgroups the workload made). */
  cleanup?: () => Promise<void>;
  /**
   * Why CRIU 4.x cannot restore even its own dump of this case on this kernel: the direction that
   * needs CRIU's restore is then registered ignored, with the reason in its name.
   */
  upstreamRestoreFails?: string;
  /**
   * What CRIU 4.x's dump of this case refuses or leaves out on this kernel, so that no restore of
   * it can pass: the direction that needs CRIU's dump is then registered ignored, with the reason.
   */
  upstreamDumpFails?: string;
}

/** Registers both cross-checks of every case: our dump → CRIU's restore, CRIU's dump → ours. */
export function registerCross(cases: readonly CrossCase[]): void {
  if (!UPSTREAM) console.log("CRIU_UPSTREAM is not set, so the cross-checks with CRIU 4.x are skipped");
  for (const c of cases) {
    const opts = c.criuArgs ?? [];
    const restoreOpts = [...opts, ...(c.restoreArgs ?? [])];
    const then = (run: () => Promise<void>) => async () => {
      try {
        await run();
        c.after?.();
      } finally {
        await c.cleanup?.();
      }
    };
    const what = c.title ?? label(c);
    const why = c.upstreamRestoreFails;
    Deno.test({
      name: `CRIU 4.x restores our dump of ${what}${why ? ` (not here: ${why})` : ""}`,
      ignore: !UPSTREAM || why !== undefined,
      fn: then(() => crossRoundTrip(c, ourDump(opts), upstreamRestore(restoreOpts))),
    });
    const lost = c.upstreamDumpFails;
    Deno.test({
      name: `we restore CRIU 4.x's dump of ${what}${lost ? ` (not here: ${lost})` : ""}`,
      ignore: !UPSTREAM || lost !== undefined,
      fn: then(() => crossRoundTrip(c, upstreamDump(opts), ourRestore(restoreOpts))),
    });
  }
}
