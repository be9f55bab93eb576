/**
 * Pids for the restore's own tasks (the helper every puppet is cloned from, the namespace holders):
 * none may take a pid that a task or thread of the tree is about to be given, or that task's clone3
 * would fail with EEXIST. The kernel hands out the pid after the last one it gave (ns_last_pid), so
 * whatever criu starts right before the tree is forked may well land on one of the tree's. So a
 * task of criu's is created at a pid chosen outside the tree's: with clone3's set_tid where the
 * creator may set it (CAP_CHECKPOINT_RESTORE over criu's PID namespace), else by pointing
 * ns_last_pid just before the chosen pid, checking the pid it got, and trying again with the next
 * one when another process took it first. Before all that, the kernel's next pid is moved past the
 * tree's pids when they lie ahead of it (moveCursorPast): criu's own threads and the action
 * scripts' processes take pids too.
 */
import { processExists } from "../../ffi/process.ts";
import type { RestoreTaskImages } from "./images.ts";
import { RestoreError } from "../errors.ts";
import { sysctl } from "./mm_checks.ts";

const NS_LAST_PID = "/proc/sys/kernel/ns_last_pid";
/** Where the kernel starts again once it reaches pid_max (RESERVED_PIDS). */
const FIRST_AFTER_WRAP = 301;
/** How many chosen pids are tried before giving up (each taken by someone else meanwhile). */
export const PID_ATTEMPTS = 64;

export class TreePids {
  readonly #taken: ReadonlySet<number>;
  readonly #max = sysctl("/proc/sys/kernel/pid_max", 4 * 1024 * 1024);

  /** Every pid and tid of `tasks` at every level of PID namespace the images name. */
  constructor(tasks: readonly RestoreTaskImages[]) {
    const taken = new Set<number>();
    for (const t of tasks) {
      for (const id of [t.entry.pid, ...t.entry.threads]) taken.add(id);
      for (const level of t.entry.nested) for (const id of [level.pid, ...level.threads]) taken.add(id);
    }
    this.#taken = taken;
  }

  /** No tree: nothing to avoid (a restore whose tree has a PID namespace of its own still has pids). */
  static none(): TreePids {
    return new TreePids([]);
  }

  /**
   * Points the kernel's next pid past every pid of the tree when some lie ahead of it, so that
   * nothing started during the restore takes one until the pids wrap: not criu's own tasks, nor
   * its own threads (V8 starts workers when it needs them), nor the action scripts' processes.
   */
  moveCursorPast(): void {
    let highest = 0;
    for (const pid of this.#taken) highest = Math.max(highest, pid);
    if (highest > lastPid() && highest < this.#max) aimAt(highest + 1);
  }

  /** Whether `pid` is one the tree needs. */
  has(pid: number): boolean {
    return this.#taken.has(pid);
  }

  /**
   * A pid that is neither the tree's nor in use now, after `after` (by default the last pid the
   * kernel gave out), wrapping at pid_max as the kernel does.
   */
  nextFree(after = lastPid()): number {
    let pid = after;
    for (let tried = 0; tried < this.#max; tried++) {
      pid = pid + 1 > this.#max ? FIRST_AFTER_WRAP : pid + 1;
      if (!this.#taken.has(pid) && !processExists(pid)) return pid;
    }
    throw new RestoreError("No free pid outside the tree's for the restore's helper tasks");
  }

  /**
   * Runs `create` (which starts a task the kernel gives any pid) until the pid it answers is none
   * of the tree's: ns_last_pid is pointed just before a free pid first; a task that took a pid of
   * the tree anyway (another process started meanwhile) is ended by `discard`. `what` names it.
   */
  createOutside(what: string, create: () => number, discard: (pid: number) => void): number {
    let last: number | undefined;
    for (let attempt = 0; attempt < PID_ATTEMPTS; attempt++) {
      aimAt(this.nextFree(last));
      const pid = create();
      if (!this.#taken.has(pid)) return pid;
      discard(pid);
      last = pid;
    }
    throw new RestoreError(`Cannot start ${what} at a pid the tree does not need (${PID_ATTEMPTS} attempts)`);
  }
}

function lastPid(): number {
  return sysctl(NS_LAST_PID, FIRST_AFTER_WRAP - 1);
}

/**
 * The next pid the kernel gives out in criu's PID namespace is `pid` (unless another process
 * starts first). Best effort: without the right to write it, the caller's check catches a clash.
 */
function aimAt(pid: number): void {
  try {
    Deno.writeTextFileSync(NS_LAST_PID, String(pid - 1));
  } catch {
    // not writable here: createOutside checks the pid it gets anyway
  }
}
