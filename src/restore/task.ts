/**
 * Turning one puppet into the dumped task, as an ordered list of stages; each stage is a file of
 * ./stages/. restore.ts runs them across the tree in this order:
 *
 *   memory      (FORKING) as soon as the task is forked, parents first, so that its children are
 *               forked from it with what they shared copy-on-write (stages/memory.ts)
 *   group       (GROUPS) once every task exists, so that each group's leader is there before its
 *               members join it (stages/group.ts)
 *   restoreTask (RESTORE) the rest of the task from inside, in the order written there; the
 *               leader's seccomp goes in before the credentials (objects/seccomp.ts)
 *   dumpable    once every task has its fds: until then every task stays dumpable, so that the
 *               others may take fds from it after it changed its ids (stages/creds.ts)
 *   closeParked (RESUME) the fds this task held for its peers are closed (stages/files.ts)
 *   seccomp     a thread's own filters, last in it: a filter may forbid any call after it
 *               (objects/seccomp.ts)
 *   registers   the scratch page is unmapped (its last remote syscall), then registers,
 *               FPU state and masks are loaded from outside (stages/registers.ts, restart.ts)
 *   detach      last, when nothing can fail any more (stages/detach.ts)
 */
import { ownIds, ownTid, restorePidForChildren, type ThreadsPidForChildren } from "../objects/pidns.ts";
import { threadsForChildren } from "../objects/timens.ts";
import type { Agent, BatchCall } from "../agent.ts";
import { pendingSignalCalls, sigactionCalls } from "../objects/signals.ts";
import { restoreTimers } from "../objects/timers.ts";
import type { RestoreTaskImages } from "./images.ts";
import type { PendingThread, TaskRestoreContext } from "./stages/context.ts";
import { restoreFs } from "./stages/fs.ts";
import { restoreFiles } from "./stages/files.ts";
import { restoreTaskState } from "./stages/task_state.ts";
import { type LeaderCreds, leaderCreds, threadCredsCalls } from "./stages/creds.ts";
import { createThreads, runThreadBatches, threadStateCalls } from "./stages/threads.ts";
import { installLeaderSeccomp, suspendSeccompEarly } from "../objects/seccomp.ts";
import { TRACE_OPTIONS } from "./puppet.ts";

export type { PendingThread, TaskRestoreContext } from "./stages/context.ts";
export { restoreMemory } from "./stages/memory.ts";
export { restoreGroup } from "./stages/group.ts";
export { restoreDumpable } from "./stages/creds.ts";
export { closeParked } from "./stages/files.ts";
export { dropScratch, loadRegisters } from "./stages/registers.ts";
export { detachTask, restoredStopSignal } from "./stages/detach.ts";

/**
 * Rebuilds the task and creates its threads; returns them (leader first), still stopped inside
 * the agents, for `resumeThreads`. The order: fs and files first (a table or fs shared with the
 * parent, CLONE_FILES or CLONE_FS, was restored by the parent); then the process-wide state, whose
 * limits are set from outside once the files' queued calls are done; the leader's bounding set
 * before the threads exist, so that they inherit it; each thread's batch; timers last, since one
 * may notify a thread (SIGEV_THREAD_ID), which must exist by then.
 */
export function restoreTask(ctx: TaskRestoreContext, t: RestoreTaskImages, agent: Agent): PendingThread[] {
  const log = ctx.log;
  log.info(`Restoring task ${t.entry.pid}`);
  const parent = ctx.checkpoint.tasks.find((p) => p.entry.pid === t.entry.ppid && p !== t);
  if (!parent?.ids || parent.ids.fsId !== t.ids?.fsId) restoreFs(ctx, agent, t);
  if (!parent?.ids || parent.ids.filesId !== t.ids?.filesId) restoreFiles(ctx, agent, t);
  ctx.beforeTaskState?.(t, agent);
  restoreTaskState(agent, t, ctx.files.treeIds);
  const threads: PendingThread[] = [{ agent, core: t.cores[0]!.core }];
  const creds = leaderCreds(ctx, agent, t);
  const others = t.cores.slice(1);
  const seccomp = ctx.seccomp !== undefined &&
    suspendSeccompEarly(agent, t.cores, ctx.seccomp, TRACE_OPTIONS);
  const hostTids = createThreads(ctx, agent, t);
  // After the threads (made where the leader's children are its own namespace's), before the
  // credentials; the PID and time namespaces threads made for their children.
  const pidNs = restorePidForChildren(ctx.checkpoint.tasks, t, agent);
  const childrenNs = threadsForChildren(pidNs, t, agent, hostTids);
  // Before the credentials, while the puppet may still install it (as CRIU does), after the late
  // unshare, which a filter may forbid.
  if (seccomp) installLeaderSeccomp(agent, t.cores[0]!.core, ctx.seccomp!);
  const batchOf = (a: Agent, i: number) => threadBatch(a, t, i, creds, childrenNs);
  agent.batch(batchOf(agent, 0));
  runThreadBatches(agent, hostTids, batchOf).forEach((a, i) =>
    threads.push({ agent: a, core: others[i]!.core })
  );
  childrenNs.close();
  restoreTimers(agent, t.cores[0]!.core.tc!.timers);
  // Other tasks take fds from this one from now on: nothing may be left queued.
  agent.settle();
  if (others.length) log.debug(`Task ${t.entry.pid}: threads restored`);
  return threads;
}

/**
 * The batch thread `i` (the leader is 0) sets the rest of its state in: its own state, its queued
 * signals (the leader also the handlers and the signals queued to the process), credentials last
 * (after them the puppet may no longer be allowed the rest), and what a change of ids clears
 * after them.
 */
function threadBatch(
  a: Agent,
  t: RestoreTaskImages,
  i: number,
  creds: LeaderCreds,
  childrenNs: ThreadsPidForChildren,
): BatchCall[] {
  const leader = i === 0;
  const core = t.cores[i]!.core;
  const tc = t.cores[0]!.core.tc!;
  a.reset();
  const calls = threadStateCalls(a, core);
  // Queued again from inside: by the ids the task's own PID namespace knows.
  const pid = ownIds(t.entry).pid;
  if (leader) {
    calls.push(...sigactionCalls(a, tc.sigactions));
    calls.push(...pendingSignalCalls(a, pid, pid, tc.signalsS, true));
  }
  calls.push(
    ...pendingSignalCalls(a, pid, ownTid(t.entry, t.cores[i]!.tid), core.threadCore?.signalsP, false),
  );
  calls.push(...childrenNs.callsOf(i)); // setns and unshare want the capabilities the credentials may drop
  calls.push(...threadCredsCalls(a, t, i, creds));
  return calls;
}
