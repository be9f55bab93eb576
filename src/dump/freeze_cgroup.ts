/**
 * `--freeze-cgroup PATH`, the way runc asks (it passes its container's freezer cgroup): the whole
 * cgroup is frozen at once, so no task of it can fork or exit while the tree is seized.
 *   - cgroup v2 (cgroup.freeze): a ptrace interrupt takes a frozen task out of the freezer's trap
 *     into a ptrace stop, so the tree is seized as always while frozen; then the cgroup goes back
 *     to the state it had (thawed, mostly) while ptrace holds the tasks.
 *   - cgroup v1 (freezer.state): a frozen task cannot stop for ptrace before it is thawed. As CRIU
 *     does, every thread of the cgroup and those below is seized and interrupted while frozen, and
 *     the cgroup is thawed: each thread then stops at once in the interrupt, before it can run a
 *     single instruction of its own. The tree's freeze then takes its threads as seized already
 *     (FrozenTree); threads of the cgroup outside the tree are let go once it is frozen.
 *     A v1 cgroup frozen before the dump (containerd pauses a task before it asks runc for a
 *     checkpoint) is thawed all the same once its threads are seized, else they would never stop
 *     for ptrace, and frozen again before the tree is let go (`freezeAgain`), as CRIU does: the
 *     tasks then stop in the freezer as they come out of ptrace, where their owner left them.
 * A dump that fails on the way thaws the cgroup and lets every thread go.
 */
import * as pt from "../../ffi/ptrace.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { DumpError } from "../errors.ts";
import type { Log } from "../log.ts";
import type { FrozenTree } from "./freeze.ts";

/** How long the kernel may take to report the cgroup frozen. */
const FREEZE_TIMEOUT_MS = 10_000;
const POLL_MS = 5;
/** A v1 freezer may miss a task that is forking: the state is written again this often (polls). */
const V1_REFREEZE_EVERY = 20;

export interface FrozenCgroup {
  /**
   * Once the tree's freeze is done (`tree`), or failed (undefined): the cgroup goes back to its
   * state before the dump, and the threads seized here that the tree did not take are let go.
   */
  restore(tree: FrozenTree | undefined): void;
  /** Before the tree is let go: a v1 cgroup frozen before the dump is frozen again (once). */
  freezeAgain(): void;
}

/** Freezes the cgroup at `path` (v2 or v1) and waits until the kernel says it is frozen. */
export function freezeCgroup(path: string, log: Log): FrozenCgroup {
  const v2 = isFile(`${path}/cgroup.freeze`);
  if (!v2 && !isFile(`${path}/freezer.state`)) {
    throw new DumpError(
      `--freeze-cgroup ${path} is not a freezer cgroup: it has neither cgroup.freeze (v2) nor freezer.state (v1)`,
    );
  }
  const control = v2 ? `${path}/cgroup.freeze` : `${path}/freezer.state`;
  const [frozen, thawed] = v2 ? ["1", "0"] : ["FROZEN", "THAWED"];
  const before = read(control) === thawed ? thawed : frozen;
  const thaw = () => {
    if (before === frozen) return;
    try {
      write(control, thawed);
      log.debug(`Thawed ${path}`);
    } catch (e) {
      log.error((e as Error).message);
    }
  };
  write(control, frozen);
  const isFrozen = v2
    ? () => /^frozen 1$/m.test(read(`${path}/cgroup.events`))
    : () => read(control) === frozen;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + FREEZE_TIMEOUT_MS;
  for (let i = 1; !isFrozen(); i++) {
    if (Date.now() > deadline) {
      thaw();
      throw new DumpError(`The cgroup ${path} did not freeze in ${FREEZE_TIMEOUT_MS / 1000} s`);
    }
    if (!v2 && i % V1_REFREEZE_EVERY === 0) write(control, frozen);
    Atomics.wait(pause, 0, 0, POLL_MS);
  }
  log.info(`Froze the cgroup ${path}`);
  if (v2) return { restore: () => thaw(), freezeAgain: () => {} };
  // v1: seize and interrupt every thread while frozen, then thaw (even a cgroup frozen before:
  // a frozen thread never stops for ptrace); they stop as they wake.
  let seized: number[] = [];
  try {
    seized = seizeFrozenThreads(path);
  } catch (e) {
    thaw();
    throw e;
  }
  write(control, thawed);
  log.debug(`Seized ${seized.length} thread(s) of ${path} while it was frozen, then thawed it`);
  let frozenAgain = before === thawed;
  const freezeAgain = () => {
    if (frozenAgain) return;
    frozenAgain = true;
    try {
      write(control, frozen);
      log.info(`Froze the cgroup ${path} again, as it was before the dump`);
    } catch (e) {
      log.error((e as Error).message);
    }
  };
  return {
    restore(tree) {
      if (tree === undefined) freezeAgain();
      const ours = new Set(tree?.tasks.flatMap((t) => t.threads) ?? []);
      for (const tid of seized) if (!ours.has(tid)) letGo(tid);
    },
    freezeAgain,
  };
}

/** Seizes and interrupts every thread listed in `tasks` at `path` and below. */
function seizeFrozenThreads(path: string): number[] {
  const out: number[] = [];
  const visit = (dir: string) => {
    for (const line of read(`${dir}/tasks`).split("\n")) {
      const tid = Number(line);
      if (!tid) continue;
      try {
        pt.seize(tid, 0);
      } catch (e) {
        if (isSyscallError(e, "ESRCH")) continue; // gone meanwhile
        for (const t of out) letGo(t);
        throw new DumpError(
          `Cannot seize thread ${tid} of the frozen cgroup ${dir}: ${(e as Error).message}`,
        );
      }
      out.push(tid);
      pt.interrupt(tid);
    }
    for (const entry of Deno.readDirSync(dir)) if (entry.isDirectory) visit(`${dir}/${entry.name}`);
  };
  visit(path);
  return out;
}

/**
 * Lets a thread seized here go: it is waited for in its interrupt stop, then detached. One that a
 * failed tree freeze detached already, or that ended, is not ours any more.
 */
function letGo(tid: number): void {
  try {
    const st = pt.wait(tid);
    // A signal that came before the interrupt stop is passed on, not dropped.
    pt.detach(tid, st?.kind === "stopped" && st.event === 0 ? st.signal : 0);
  } catch (e) {
    if (!isSyscallError(e, "ECHILD") && !isSyscallError(e, "ESRCH")) throw e;
  }
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function read(path: string): string {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch (e) {
    throw new DumpError(`Cannot read ${path}: ${(e as Error).message}`);
  }
}

function write(path: string, value: string): void {
  try {
    Deno.writeTextFileSync(path, value);
  } catch (e) {
    throw new DumpError(`Cannot write ${value} to ${path}: ${(e as Error).message}`);
  }
}
