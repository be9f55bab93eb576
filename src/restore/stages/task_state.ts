/**
 * The process-wide state stage: personality, rlimits, the audit loginuid, membarrier
 * registrations, child subreaper and OOM score.
 */
import { isSyscallError } from "../../../ffi/errors.ts";
import { getRlimit, setRlimit } from "../../../ffi/process.ts";
import { NR, PR } from "../../../ffi/syscalls.ts";
import type { Agent } from "../../agent.ts";
import { restoreLoginuid } from "../../objects/creds.ts";
import type { RestoreTaskImages } from "../images.ts";
import type { TreeIds } from "../../objects/tree_ids.ts";

export function restoreTaskState(agent: Agent, t: RestoreTaskImages, treeIds: TreeIds | undefined): void {
  const tc = t.cores[0]!.core.tc!;
  const pid = agent.pid;
  agent.later("personality", NR.personality, tc.personality);
  // Limits are set from outside: what the files left queued (dup3 to high fds) must be done.
  agent.settle();
  tc.rlimits?.rlimits.forEach((r, res) => restoreRlimit(pid, res, r.cur, r.max));
  restoreLoginuid(agent, t.entry.pid, tc.loginuid, treeIds);
  restoreMembarrier(agent, tc.membarrierRegistrationMask ?? 0);
  if (tc.childSubreaper) {
    agent.later("prctl(PR_SET_CHILD_SUBREAPER)", NR.prctl, PR.SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  }
  if (tc.oomScoreAdj !== undefined) writeProc(pid, "oom_score_adj", String(tc.oomScoreAdj));
}

/**
 * membarrier registrations belong to the address space: one call per registered command
 * (MEMBARRIER_CMD_REGISTER_*), each a bit of the dumped mask, as CRIU restores them.
 */
function restoreMembarrier(agent: Agent, mask: number): void {
  for (let bit = 0; bit < 32; bit++) {
    const cmd = (1 << bit) >>> 0;
    if (mask & cmd) agent.later(`membarrier(register ${cmd})`, NR.membarrier, cmd, 0, 0);
  }
}

/**
 * Sets one limit from outside. Raising a hard limit needs CAP_SYS_RESOURCE, which we may lack:
 * then the limit stays at the hard limit the task has, and the log says so.
 */
function restoreRlimit(pid: number, res: number, cur: bigint, max: bigint): void {
  try {
    setRlimit(pid, res, cur, max);
  } catch (e) {
    if (!isSyscallError(e, "EPERM")) throw e;
    const have = getRlimit(pid, res).max;
    setRlimit(pid, res, cur < have ? cur : have, have);
  }
}

function writeProc(pid: number, file: string, value: string): void {
  try {
    Deno.writeTextFileSync(`/proc/${pid}/${file}`, value);
  } catch {
    // best effort: the value is advisory
  }
}
