/** The scheduling stage, per thread: policy, real-time priority and nice value. */
import { NR } from "../../../ffi/syscalls.ts";
import type { Agent, BatchCall } from "../../agent.ts";
import { RestoreError } from "../../errors.ts";

/** The policy flag that gives a thread's children the default policy back. */
const SCHED_RESET_ON_FORK = 0x40000000;
/** Policies sched_setscheduler sets: OTHER, FIFO, RR, BATCH, IDLE (not DEADLINE). */
const SETTABLE_POLICIES = [0, 1, 2, 3, 5];

/**
 * Scheduling policy (with its reset-on-fork flag), real-time priority and nice value of the
 * calling thread: always set, even to the defaults, since a puppet has what criu had (`nice criu
 * restore`) or the thread it was cloned from.
 */
export function schedulingCalls(agent: Agent, policy: number, prio: number, nice: number): BatchCall[] {
  const base = policy & ~SCHED_RESET_ON_FORK;
  const realtime = base === 1 || base === 2;
  if (
    !SETTABLE_POLICIES.includes(base) || (realtime ? prio < 1 || prio > 99 : prio !== 0) || nice < -20 ||
    nice > 19
  ) {
    throw new RestoreError(
      `Inconsistent scheduling in the image: policy ${policy}, priority ${prio}, nice ${nice}`,
    );
  }
  const param = agent.alloc(4, new Uint8Array(new Int32Array([prio]).buffer));
  return [
    { name: `sched_setscheduler(${policy}, ${prio})`, nr: NR.sched_setscheduler, args: [0, policy, param] },
    { name: `setpriority(${nice})`, nr: NR.setpriority, args: [/* PRIO_PROCESS */ 0, 0, nice] },
  ];
}
