/** The scheduling stage, per thread: policy, real-time priority and nice value. */
import { SCHED_PARAM_SIZE, schedParam } from "../../../ffi/structs.ts";
import { NR, PRIO_PROCESS } from "../../../ffi/syscalls.ts";
import type { Agent, BatchCall } from "../../agent.ts";
import { RestoreError } from "../../errors.ts";
import { schedulingProblem } from "../core_checks.ts";

/**
 * Scheduling policy (with its reset-on-fork flag), real-time priority and nice value of the
 * calling thread: always set, even to the defaults, since a puppet has what criu had (`nice criu
 * restore`) or the thread it was cloned from.
 */
export function schedulingCalls(agent: Agent, policy: number, prio: number, nice: number): BatchCall[] {
  if (schedulingProblem(policy, prio, nice)) {
    throw new RestoreError(
      `Inconsistent scheduling in the image: policy ${policy}, priority ${prio}, nice ${nice}`,
    );
  }
  const param = agent.alloc(SCHED_PARAM_SIZE, schedParam(prio));
  return [
    { name: `sched_setscheduler(${policy}, ${prio})`, nr: NR.sched_setscheduler, args: [0, policy, param] },
    { name: `setpriority(${nice})`, nr: NR.setpriority, args: [PRIO_PROCESS, 0, nice] },
  ];
}
