/**
 * A cgroup v2 frozen by its user (`echo 1 > cgroup.freeze`, not `--freeze-cgroup`): its tasks stop
 * where they are until it is thawed. ptrace can seize and interrupt them (the interrupt takes a
 * task out of the freezer's trap), but a task made to run anything (criu's remote syscalls, a
 * restored task's first steps) goes back into the trap and never reports: CRIU 4.2 hangs there
 * (and with `--freeze-cgroup` thaws the cgroup for good and saves cgroup.freeze as 0, so that its
 * restore brings the tasks back running).
 *
 * What a user expects is the tasks frozen before and after, so:
 *   - dump: once ptrace holds the tree, each frozen cgroup of its tasks (the one where
 *     cgroup.freeze is 1, the task's or one above) is thawed; cgroup.img saves cgroup.freeze as 1
 *     there; when the tree is let go (left running, killed, or the dump failed) every one of them
 *     is frozen again first, so the tasks stop again as they come out of ptrace;
 *   - restore: cgroups whose saved cgroup.freeze is 1 (and an existing one still frozen) are kept
 *     thawed while the tasks are made, and frozen once they are complete, before they are let go
 *     (CRIU 4.2 writes the saved cgroup.freeze with the other properties, before its tasks are
 *     complete: it hangs restoring such a checkpoint, as checked by hand).
 * Meanwhile other tasks of such a cgroup, outside the tree, run: they are not criu's to hold. A
 * criu killed half-way (SIGKILL) cannot freeze it again: its tasks are let go thawed.
 */
import type { Log } from "../log.ts";
import { cgroupsOf, hierarchyMounts } from "./cgroup_fs.ts";

/** Frozen cgroups thawed for the time criu works on their tasks. */
export class ThawedCgroups {
  #frozenAgain = false;

  private constructor(readonly paths: readonly string[], private readonly log: Log) {}

  static none(log: Log): ThawedCgroups {
    return new ThawedCgroups([], log);
  }

  /** Thaws `paths` (full paths of v2 cgroups, each frozen by its own cgroup.freeze). */
  static thaw(paths: readonly string[], log: Log): ThawedCgroups {
    const done: string[] = [];
    try {
      for (const path of paths) {
        Deno.writeTextFileSync(`${path}/cgroup.freeze`, "0");
        done.push(path);
        log.info(`Thawed the frozen cgroup ${path} while criu works on its tasks`);
      }
    } catch (e) {
      new ThawedCgroups(done, log).freezeAgain();
      throw e;
    }
    return new ThawedCgroups(done, log);
  }

  has(path: string): boolean {
    return this.paths.includes(path);
  }

  /** Freezes every cgroup thawed here again (once): its tasks stop as soon as ptrace lets them go. */
  freezeAgain(): void {
    if (this.#frozenAgain) return;
    this.#frozenAgain = true;
    for (const path of this.paths) {
      try {
        Deno.writeTextFileSync(`${path}/cgroup.freeze`, "1");
        this.log.info(`Froze the cgroup ${path} again`);
      } catch (e) {
        this.log.error(`Cannot freeze the cgroup ${path} again: ${(e as Error).message}`);
      }
    }
  }
}

/** Whether the v2 cgroup at `path` is frozen by its own cgroup.freeze. */
export function frozenByItself(path: string): boolean {
  try {
    return Deno.readTextFileSync(`${path}/cgroup.freeze`).trim() === "1";
  } catch {
    return false; // the root cgroup has no cgroup.freeze; a cgroup gone meanwhile is not frozen
  }
}

/**
 * The v2 cgroups (full paths) that freeze some task of `pids`: the task's own and those above it
 * whose cgroup.freeze is 1, outermost first.
 */
export function frozenCgroupsOf(pids: readonly number[], yard?: string): string[] {
  const mount = hierarchyMounts(yard)([""]);
  if (mount === undefined) return [];
  const found = new Set<string>();
  for (const pid of pids) {
    let path: string | undefined;
    try {
      path = cgroupsOf(pid).find((l) => l.name === "")?.path;
    } catch {
      continue; // gone (a zombie reaped meanwhile)
    }
    if (path === undefined) continue;
    const parts = path.split("/").filter((p) => p !== "");
    for (let i = 1; i <= parts.length; i++) {
      const full = `${mount}/${parts.slice(0, i).join("/")}`;
      if (frozenByItself(full)) found.add(full);
    }
  }
  return [...found];
}
