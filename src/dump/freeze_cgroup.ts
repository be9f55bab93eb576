/**
 * `--freeze-cgroup PATH`, the way runc asks: the whole cgroup is frozen at once through its v2
 * cgroup.freeze, so no task of it can fork or exit while the tree is seized; the tasks are then
 * seized as always (a ptrace interrupt takes a frozen task out of the freezer's trap into a ptrace
 * stop), and the cgroup goes back to the state it had (thawed, mostly) while ptrace holds them. A
 * dump that fails on the way thaws it too. cgroup v1's freezer.state is refused: its frozen tasks
 * cannot be brought to a ptrace stop before they are thawed.
 */
import { DumpError } from "../errors.ts";
import type { Log } from "../log.ts";

/** How long the kernel may take to report the cgroup frozen (cgroup.events "frozen 1"). */
const FREEZE_TIMEOUT_MS = 10_000;

export interface FrozenCgroup {
  /** Puts cgroup.freeze back as it was before the dump. */
  restore(): void;
}

/** Freezes the cgroup at `path` and waits until the kernel says every task in it is frozen. */
export function freezeCgroup(path: string, log: Log): FrozenCgroup {
  const control = `${path}/cgroup.freeze`;
  let before: string;
  try {
    before = Deno.readTextFileSync(control).trim();
  } catch (e) {
    let v1 = false;
    try {
      v1 = Deno.statSync(`${path}/freezer.state`).isFile;
    } catch {
      // neither
    }
    throw new DumpError(
      v1
        ? `--freeze-cgroup ${path} is a cgroup v1 freezer; only cgroup v2 (cgroup.freeze) is supported`
        : `--freeze-cgroup ${path} is not a cgroup v2 directory with cgroup.freeze: ${(e as Error).message}`,
    );
  }
  const put = (value: string) => {
    try {
      Deno.writeTextFileSync(control, value);
    } catch (e) {
      throw new DumpError(`Cannot write ${value} to ${control}: ${(e as Error).message}`);
    }
  };
  put("1");
  const restore = () => {
    if (before === "1") return;
    try {
      put(before);
      log.debug(`Thawed ${path}`);
    } catch (e) {
      log.error((e as Error).message);
    }
  };
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + FREEZE_TIMEOUT_MS;
  while (!/^frozen 1$/m.test(Deno.readTextFileSync(`${path}/cgroup.events`))) {
    if (Date.now() > deadline) {
      restore();
      throw new DumpError(`The cgroup ${path} did not freeze in ${FREEZE_TIMEOUT_MS / 1000} s`);
    }
    Atomics.wait(pause, 0, 0, 5);
  }
  log.info(`Froze the cgroup ${path}`);
  return { restore };
}
