/**
 * The files stage: every fd at its number, through the fd kinds (src/objects/files.ts), with the
 * fds in the way parked above them until every task has its own.
 */
import { getRlimit, setRlimit } from "../../../ffi/process.ts";
import { F, NR, RLIMIT } from "../../../ffi/syscalls.ts";
import type { Agent } from "../../agent.ts";
import { restoreFds, type SharedFiles } from "../../objects/files.ts";
import type { RestoreTaskImages } from "../images.ts";
import { pidfdsForNested } from "../../objects/pidns.ts";
import type { TaskRestoreContext } from "./context.ts";

export function restoreFiles(ctx: TaskRestoreContext, agent: Agent, t: RestoreTaskImages): void {
  const pid = agent.pid;
  // Room for every fd number the task had, and for parking fds above them.
  const hard = getRlimit(pid, RLIMIT.NOFILE).max;
  setRlimit(pid, RLIMIT.NOFILE, hard, hard);
  const parkBase = Math.max(64, ...t.fdinfos.map((f) => f.fd + 1));
  const park = (fd: number): number => {
    const moved = Number(agent.call("fcntl(F_DUPFD_CLOEXEC)", NR.fcntl, fd, F.DUPFD_CLOEXEC, parkBase));
    agent.later("close", NR.close, fd);
    ctx.shared.noteParked(pid, moved);
    return moved;
  };
  restoreFds(
    {
      agent,
      nsPid: t.entry.pid,
      nsSid: t.entry.sid,
      table: ctx.checkpoint.files,
      session: ctx.files,
      shared: ctx.shared,
      park,
      parkBase,
      ...pidfdsForNested(ctx.checkpoint.tasks, t, agent, park),
      options: ctx.options,
      log: ctx.log,
    },
    t.fdinfos,
  );
}

/** Closes what restoreFiles parked in a task; runs once every task has its files. */
export function closeParked(agent: Agent, shared: SharedFiles): void {
  const fds = shared.parked.get(agent.pid) ?? [];
  agent.batch(fds.map((fd) => ({ name: `close(${fd})`, nr: NR.close, args: [fd] })), true);
}
