/** The GROUPS stage: each task joins its process group. */
import { readStatus } from "../../../ffi/proc.ts";
import { processExists } from "../../../ffi/process.ts";
import { NR } from "../../../ffi/syscalls.ts";
import { isSyscallError } from "../../../ffi/errors.ts";
import type { Agent } from "../../agent.ts";
import { RestoreError } from "../../errors.ts";
import type { RestoreTaskImages } from "../images.ts";
import { joinGroupFromParent, ownIds } from "../../objects/pidns.ts";

/**
 * The process group, as dumped (the session was made when the task was forked). Tasks are
 * restored parents first, so a group's leader normally exists before its members join it. With
 * --shell-job a group outside the tree stays ours (the puppet inherited it).
 */
export function restoreGroup(agent: Agent, t: RestoreTaskImages, parent?: [Agent, RestoreTaskImages]): void {
  const { pid, pgid } = ownIds(t.entry); // setpgid names the group as the task's namespace sees it
  if (pgid === 0) {
    // A group outside the task's PID namespace: inherited, or (nested) set by its parent.
    if (parent) joinGroupFromParent(parent[0], parent[1], t);
    return;
  }
  if (pgid === currentGroup(agent.pid)) return;
  const r = agent.attempt(`setpgid(${pgid})`, NR.setpgid, 0, pgid);
  if (isSyscallError(r) && (pgid === pid || processExists(pgid))) {
    throw new RestoreError(`Cannot put ${pid} into process group ${pgid} (pstree.img): ${r.message}`, 0, {
      cause: r,
    });
  }
}

/** A task's process group as its own PID namespace sees it (/proc/PID/status, no trap needed). */
function currentGroup(pid: number): number {
  const ids = (readStatus(pid).get("NSpgid") ?? "").split(/\s+/).filter((s) => s);
  return Number(ids.at(-1) ?? -1);
}
