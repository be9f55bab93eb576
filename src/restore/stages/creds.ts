/**
 * The credentials stage: ids, groups, capabilities and securebits of each thread, and what a
 * change of ids resets (the parent-death signal, the dumpable flag), set again after them.
 */
import type { creds_entry } from "../../images/gen/creds_pb.ts";
import { NR, PR } from "../../../ffi/syscalls.ts";
import type { Agent, BatchCall } from "../../agent.ts";
import {
  alreadyHas,
  credsCalls,
  restoreBoundingSet,
  sameCreds,
  sameIds,
  securebits,
} from "../../objects/creds.ts";
import type { RestoreTaskImages } from "../images.ts";
import type { TaskRestoreContext } from "./context.ts";

/** The leader's credentials, and whether the puppet has them already (then no thread sets them). */
export interface LeaderCreds {
  creds: creds_entry | undefined;
  alreadySet: boolean;
}

/** The bounding set goes first, in the leader, so that its threads inherit it. */
export function leaderCreds(ctx: TaskRestoreContext, agent: Agent, t: RestoreTaskImages): LeaderCreds {
  const creds = t.cores[0]!.core.threadCore?.creds;
  if (!creds) return { creds, alreadySet: false };
  restoreBoundingSet(agent, creds);
  ctx.puppetSecbits ??= securebits(agent);
  return { creds, alreadySet: alreadyHas(agent, creds, ctx.puppetSecbits) };
}

/**
 * The calls that end thread `i`'s batch: its credentials, then the parent-death signal (and, in
 * the leader, the dumpable flag), since a change of ids clears them.
 */
export function threadCredsCalls(
  a: Agent,
  t: RestoreTaskImages,
  i: number,
  leaderCreds: LeaderCreds,
): BatchCall[] {
  const leader = i === 0;
  const tcore = t.cores[i]!.core.threadCore;
  const calls: BatchCall[] = [];
  const creds = tcore?.creds;
  // A thread holds what the leader had when it was cloned.
  if (creds && !(leaderCreds.alreadySet && sameCreds(creds, leaderCreds.creds!))) {
    if (!leader && !sameIds(creds.capBnd, leaderCreds.creds?.capBnd ?? [])) restoreBoundingSet(a, creds);
    calls.push(...credsCalls(a, creds));
  }
  if (tcore?.pdeathSig) {
    calls.push({
      name: "prctl(PR_SET_PDEATHSIG)",
      nr: NR.prctl,
      args: [PR.SET_PDEATHSIG, tcore.pdeathSig, 0, 0, 0],
    });
  }
  const dumpable = t.mm?.dumpable;
  if (leader && dumpable !== undefined) {
    calls.push({
      name: "prctl(PR_SET_DUMPABLE)",
      nr: NR.prctl,
      args: [PR.SET_DUMPABLE, dumpable, 0, 0, 0],
    });
  }
  return calls;
}
