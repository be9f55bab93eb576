/** The detach stage: the task's threads let go, a task dumped stopped stopped again first. */
import type { core_entry } from "../../images/gen/core_pb.ts";
import * as pt from "../../../ffi/ptrace.ts";
import { SIG } from "../../../ffi/syscalls.ts";
import { TASK_STATE } from "../../dump/task.ts";
import type { PendingThread } from "./context.ts";

/**
 * Lets the task's threads go. A task dumped stopped is sent the signal that had stopped it first,
 * so it stops again before it runs, and its parent is told of the stop (as after SIGSTOP or ^Z).
 */
export function detachTask(threads: readonly PendingThread[], stopSigno: number | undefined): void {
  const leader = threads[0]!.agent.pid;
  if (stopSigno !== undefined) pt.kill(leader, stopSigno);
  for (const th of threads) pt.detach(th.agent.tid);
}

/** The signal to stop a task with again, for a task dumped stopped; images without one say SIGSTOP. */
export function restoredStopSignal(tc: core_entry["tc"]): number | undefined {
  if (tc?.taskState !== TASK_STATE.stopped) return undefined;
  const signo = tc.stopSigno ?? 0;
  return STOP_SIGNALS.includes(signo) ? signo : SIG.STOP;
}

/** The signals a stopped task may have been stopped by. */
const STOP_SIGNALS: readonly number[] = [SIG.STOP, SIG.TSTP, SIG.TTIN, SIG.TTOU];
