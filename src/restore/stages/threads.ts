/**
 * The threads stage: each thread's own state (set from inside it), the threads other than the
 * leader created, and their batches run in them all at once.
 */
import type { core_entry } from "../../images/gen/core_pb.ts";
import { RemoteThread } from "../../../ffi/remote.ts";
import { NR, PR } from "../../../ffi/syscalls.ts";
import type { Agent, BatchCall } from "../../agent.ts";
import { sigaltstackCall } from "../../objects/signals.ts";
import type { RestoreTaskImages } from "../images.ts";
import type { TaskRestoreContext } from "./context.ts";
import { schedulingCalls } from "./scheduling.ts";
import { tidChain } from "../../objects/pidns.ts";

/** Per-thread state set from inside the thread itself. */
export function threadStateCalls(agent: Agent, core: core_entry): BatchCall[] {
  const tcore = core.threadCore;
  const ti = core.threadInfo!;
  const calls: BatchCall[] = [{ name: "set_tid_address", nr: NR.set_tid_address, args: [ti.clearTidAddr] }];
  if (tcore) {
    if (tcore.futexRla) {
      calls.push({
        name: "set_robust_list",
        nr: NR.set_robust_list,
        args: [tcore.futexRla, tcore.futexRlaLen],
      });
    }
    calls.push(...sigaltstackCall(agent, tcore.sas));
    if (tcore.comm) {
      const name = agent.string(tcore.comm.slice(0, 15));
      calls.push({ name: "prctl(PR_SET_NAME)", nr: NR.prctl, args: [PR.SET_NAME, name, 0, 0, 0] });
    }
    calls.push(...schedulingCalls(agent, tcore.schedPolicy ?? 0, tcore.schedPrio ?? 0, tcore.schedNice ?? 0));
    const rs = tcore.rseqEntry;
    if (rs && rs.rseqAbiPointer !== 0n) {
      calls.push({ name: "rseq", nr: NR.rseq, args: [rs.rseqAbiPointer, rs.rseqAbiSize, 0, rs.signature] });
    }
  }
  return calls;
}

/** Creates the task's threads but the leader, with their tids; answers their host tids. */
export function createThreads(ctx: TaskRestoreContext, agent: Agent, t: RestoreTaskImages): number[] {
  const others = t.cores.slice(1);
  const hostTids = ctx.master.createThreads(agent, others.map((c) => tidChain(t.entry, c.tid)));
  if (others.length) ctx.log.debug(`Task ${t.entry.pid}: created ${others.length} thread(s)`);
  return hostTids;
}

/** Scratch for each thread's batch while the threads run theirs at once (Agent.forThreads). */
const THREAD_SCRATCH = 4096;

/**
 * Enters the created threads and starts in each its batch (`batchOf(a, i)`, `i` its index in the
 * task's cores, the leader being 0). Answers their agents, still inside.
 */
export function runThreadBatches(
  agent: Agent,
  hostTids: readonly number[],
  batchOf: (a: Agent, i: number) => BatchCall[],
): Agent[] {
  const entered = hostTids.map((tid) => RemoteThread.enter(tid, agent.thread.syscallIp));
  return agent.forThreads(entered, THREAD_SCRATCH, (a, i) => a.startBatch(batchOf(a, i + 1)));
}
