/** The registers stage (RESUME): each thread's registers, FPU state and mask, loaded from outside. */
import { type core_entry, thread_core_entrySchema } from "../../images/gen/core_pb.ts";
import { isFieldSet } from "@bufbuild/protobuf";
import * as pt from "../../../ffi/ptrace.ts";
import type { Agent } from "../../agent.ts";
import { regsFromThreadInfo, xstateFromThreadInfo } from "../../objects/cpu.ts";
import { PUPPET_SCRATCH_SIZE } from "../puppet.ts";
import type { PendingThread } from "./context.ts";
import { fixRestart, sleepFixup } from "./restart.ts";

/**
 * A thread's own blocked mask when the image has one: CRIU writes the leader's in the task part
 * only (and an unset proto2 field still reads as 0, so presence is what tells).
 */
function threadMask(core: core_entry): bigint | undefined {
  const tcore = core.threadCore;
  return tcore && isFieldSet(tcore, thread_core_entrySchema.field.blkSigset) ? tcore.blkSigset : undefined;
}

/** Gives each thread its dumped registers and mask. The agents are closed; tasks stay stopped. */
export function loadRegisters(threads: readonly PendingThread[], tc: core_entry["tc"], awayNs: bigint): void {
  for (const { agent, core } of threads) {
    const ti = core.threadInfo!;
    const regs = regsFromThreadInfo(ti);
    fixRestart(regs, sleepFixup(agent.pid, awayNs));
    const xstate = xstateFromThreadInfo(ti, pt.getXstate(agent.tid));
    pt.setXstate(agent.tid, xstate);
    pt.setRegs(agent.tid, regs);
    pt.setSigmask(agent.tid, threadMask(core) ?? tc?.blkSigset ?? 0n);
  }
}

/** Unmaps the scratch page from inside the task: its last remote syscall. */
export function dropScratch(agent: Agent, scratch: bigint): void {
  agent.unmapRunner(scratch, PUPPET_SCRATCH_SIZE);
}
