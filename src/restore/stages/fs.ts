/** The fs stage: root, working directory and umask, entered from inside the task. */
import { isSyscallError } from "../../../ffi/errors.ts";
import { NR } from "../../../ffi/syscalls.ts";
import type { Agent, BatchCall } from "../../agent.ts";
import { RestoreError } from "../../errors.ts";
import type { RestoreTaskImages } from "../images.ts";
import { pathToOpen } from "../../objects/remap.ts";
import type { TaskRestoreContext } from "./context.ts";

export function restoreFs(ctx: TaskRestoreContext, agent: Agent, t: RestoreTaskImages): void {
  if (!t.fs) return;
  const dirOf = (id: number) => pathToOpen(ctx.checkpoint.files, id, agent.pid); // a removed one: its ghost
  const root = dirOf(t.fs.rootId);
  const cwd = dirOf(t.fs.cwdId);
  agent.reset();
  const calls: BatchCall[] = [];
  if (root !== "/") calls.push({ name: `chroot(${root})`, nr: NR.chroot, args: [agent.string(root)] });
  calls.push({ name: `chdir(${cwd})`, nr: NR.chdir, args: [agent.string(cwd)] });
  if (t.fs.umask !== undefined) calls.push({ name: "umask", nr: NR.umask, args: [t.fs.umask] });
  try {
    agent.batch(calls);
  } catch (e) {
    const errno = isSyscallError(e) ? e.errno : 0;
    throw new RestoreError(
      `Cannot enter the root or working directory of ${t.entry.pid}: ${(e as Error).message}`,
      errno,
      { cause: e },
    );
  }
}
