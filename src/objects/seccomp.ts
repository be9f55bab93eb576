/**
 * Seccomp, as CRIU saves and restores it.
 *
 * Dump: each thread's mode comes from /proc/TID/status (`Seccomp:`); a thread in filter mode has
 * its stack of classic BPF programs read with PTRACE_SECCOMP_GET_FILTER (and each one's flags with
 * PTRACE_SECCOMP_GET_METADATA). seccomp.img holds every filter of the dump in one list: a thread's
 * chain goes in newest first, each older one naming the next newer (`prev`, an index in the list),
 * and the thread's core names its oldest (`seccomp_filter`) with its mode (`seccomp_mode`): the
 * restore walks from there and installs in that order, as CRIU's does. As CRIU does, when every thread of a task has the same chain (a filter set
 * with SECCOMP_FILTER_FLAG_TSYNC, or one inherited by threads made after it), only the leader
 * keeps it, flagged TSYNC, and the other threads say no seccomp: the leader's install reaches them.
 *
 * Restore: each thread installs its chain, oldest first (seccomp(SECCOMP_SET_MODE_FILTER) with the
 * saved flags), or enters strict mode. PTRACE_O_SUSPEND_SECCOMP is set on the threads first, so
 * that no call criu makes in them afterwards is filtered; it ends when they are let go. The
 * leader's chain goes in before the task's credentials, as CRIU's restorer does: seccomp(2) wants
 * CAP_SYS_ADMIN or no_new_privs, and a container's task (Podman's default profile, without
 * no_new_privs) has neither once its own credentials are set; with TSYNC it reaches the threads
 * too. A thread's own chain goes in last, after everything else. The dump sets the same option
 * when it seizes a thread under seccomp, so that its own calls in the task are never filtered.
 */
import { create, isFieldSet } from "@bufbuild/protobuf";
import { type core_entry, seccomp_mode } from "../images/gen/core_pb.ts";
import {
  type seccomp_entry,
  seccomp_entrySchema,
  type seccomp_filter,
  seccomp_filterSchema,
} from "../images/gen/seccomp_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import type { Agent } from "../agent.ts";
import { NR } from "../../ffi/syscalls.ts";
import { PTRACE_O, seccompFilter, setOptions } from "../../ffi/ptrace.ts";
import {
  PR_SET_SECCOMP,
  SECCOMP_FILTER_FLAG,
  SECCOMP_MODE,
  SECCOMP_SET_MODE_FILTER,
  seccompFilterFlags,
  SOCK_FILTER_SIZE,
  SOCK_FPROG_SIZE,
  sockFprog,
} from "../../ffi/seccomp.ts";
import type { FileTable } from "./files.ts";
import { RestoreError } from "../errors.ts";

/** What a thread's core says about its seccomp. */
export interface ThreadSeccomp {
  mode: seccomp_mode;
  /** Index in seccomp.img of its oldest filter, where its chain starts (filter mode only). */
  filter?: number;
}

/** The seccomp mode of thread `tid` (/proc/TID/status). */
export function seccompModeOf(status: Map<string, string>): number {
  return Number(status.get("Seccomp") ?? "0");
}

/** The dump's seccomp.img, filled task by task. */
function dumpedFilters(table: FileTable): seccomp_filter[] {
  return table.stateOf("seccomp", () => [] as seccomp_filter[]);
}

/** A thread's filters, oldest first (PTRACE_SECCOMP_GET_FILTER's order), with their flags. */
function readChain(tid: number): seccomp_filter[] {
  const chain: seccomp_filter[] = [];
  for (let i = 0;; i++) {
    const program = seccompFilter(tid, i);
    if (program === null) return chain;
    chain.push(create(seccomp_filterSchema, { filter: program, flags: Number(seccompFilterFlags(tid, i)) }));
  }
}

function sameChain(a: readonly seccomp_filter[], b: readonly seccomp_filter[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((f, i) => {
    const g = b[i]!.filter;
    return f.filter.length === g.length && f.filter.every((byte, j) => byte === g[j]);
  });
}

/**
 * Reads the seccomp state of a frozen task's threads (`modes` from their status files), adds
 * their filters to the dump's list and returns what each thread's core is to say, by tid.
 */
export function collectSeccomp(
  table: FileTable,
  pid: number,
  tids: readonly number[],
  modes: readonly number[],
): Map<number, ThreadSeccomp> {
  const out = new Map<number, ThreadSeccomp>();
  if (modes.every((m) => m === SECCOMP_MODE.DISABLED)) return out;
  const chains = tids.map((tid, i) => modes[i] === SECCOMP_MODE.FILTER ? readChain(tid) : []);
  const leader = tids.indexOf(pid);
  const leaderMode = modes[leader];
  // CRIU's rule: identical chains everywhere are the leader's alone, installed with TSYNC.
  const tsync = leaderMode === SECCOMP_MODE.FILTER &&
    tids.every((_, i) => modes[i] === leaderMode && sameChain(chains[i]!, chains[leader]!));
  const list = dumpedFilters(table);
  tids.forEach((tid, i) => {
    if (tsync && i !== leader) return out.set(tid, { mode: seccomp_mode.disabled });
    if (modes[i] !== SECCOMP_MODE.FILTER) return out.set(tid, { mode: modes[i] as seccomp_mode });
    // CRIU's layout: newest first; each older one's prev is the one after it in time, and the
    // core names the oldest, from which the restore walks forward in the order of installing.
    [...chains[i]!].reverse().forEach((f, at) => {
      if (tsync) f.flags |= SECCOMP_FILTER_FLAG.TSYNC;
      if (at > 0) f.prev = list.length - 1;
      list.push(f);
    });
    out.set(tid, { mode: seccomp_mode.filter, filter: list.length - 1 });
  });
  return out;
}

/** Puts a thread's seccomp into its core. */
export function applySeccomp(core: core_entry, s: ThreadSeccomp | undefined): core_entry {
  if (!s || !core.threadCore) return core;
  core.threadCore.seccompMode = s.mode;
  if (s.filter !== undefined) core.threadCore.seccompFilter = s.filter;
  return core;
}

/** Writes seccomp.img when some task has filters. */
export function writeSeccomp(dir: ImageDir, table: FileTable): void {
  const list = dumpedFilters(table);
  if (list.length > 0) {
    dir.write(KINDS.SECCOMP, undefined, [create(seccomp_entrySchema, { seccompFilters: list })]);
  }
}

/** One thread's seccomp as the restore installs it: the mode, and for filters the chain, oldest first. */
export interface SeccompPlan {
  mode: number;
  chain: seccomp_filter[];
  /** Every filter of the chain also gets TSYNC (old images kept the mode in the task core). */
  forceTsync: boolean;
}

/** seccomp.img's filters, read at PREPARE (none when there is no image). */
export function readSeccompImage(dir: ImageDir): seccomp_filter[] {
  if (!dir.has(KINDS.SECCOMP)) return [];
  const [entry] = dir.read<seccomp_entry>(KINDS.SECCOMP);
  return entry?.seccompFilters ?? [];
}

/**
 * What thread `tid` installs, checked against seccomp.img before anything is restored: a bad index
 * or a filter whose length is not whole instructions is a damaged checkpoint. Undefined: nothing.
 */
export function seccompPlanOf(
  core: core_entry,
  filters: readonly seccomp_filter[],
  tid: number,
): SeccompPlan | undefined {
  const tcore = core.threadCore;
  let mode = tcore?.seccompMode ?? 0;
  let oldest = tcore?.seccompFilter;
  let forceTsync = false;
  // Images of old CRIUs kept the leader's seccomp in the task core, for every thread (TSYNC).
  if (mode === 0 && core.tc?.oldSeccompMode) {
    mode = core.tc.oldSeccompMode;
    oldest = core.tc.oldSeccompFilter;
    forceTsync = true;
  }
  if (mode === SECCOMP_MODE.DISABLED) return undefined;
  if (mode === SECCOMP_MODE.STRICT) return { mode, chain: [], forceTsync };
  if (mode !== SECCOMP_MODE.FILTER) {
    throw damaged(`core-${tid}.img has seccomp mode ${mode}, expected 0, 1 or 2`);
  }
  const chain: seccomp_filter[] = [];
  const seen = new Set<number>();
  for (let at: number | undefined = oldest ?? 0; at !== undefined;) {
    const f: seccomp_filter | undefined = filters[at];
    if (!f) throw damaged(`thread ${tid} names filter ${at} of seccomp.img, which has ${filters.length}`);
    if (f.filter.length === 0 || f.filter.length % SOCK_FILTER_SIZE !== 0) {
      throw damaged(`filter ${at} of seccomp.img is ${f.filter.length} bytes, not whole instructions`);
    }
    if (seen.has(at)) throw damaged(`the filters of seccomp.img chain back to filter ${at} in a loop`);
    seen.add(at);
    chain.push(f);
    at = isFieldSet(f, seccomp_filterSchema.field.prev) ? f.prev : undefined;
  }
  return { mode, chain, forceTsync };
}

function damaged(what: string): RestoreError {
  return new RestoreError(`Refusing the images: ${what}`);
}

/**
 * Installs a thread's seccomp from inside it: each filter of the chain, oldest first, or strict
 * mode. The thread must already have PTRACE_O_SUSPEND_SECCOMP set (see the top of this file).
 */
export function installSeccomp(agent: Agent, plan: SeccompPlan): void {
  agent.reset();
  if (plan.mode === SECCOMP_MODE.STRICT) {
    agent.call("prctl(PR_SET_SECCOMP, strict)", NR.prctl, PR_SET_SECCOMP, SECCOMP_MODE.STRICT, 0, 0, 0);
    return;
  }
  for (const f of plan.chain) {
    agent.reset();
    const program = agent.alloc(f.filter.length, f.filter);
    const fprog = agent.alloc(SOCK_FPROG_SIZE, sockFprog(f.filter.length / SOCK_FILTER_SIZE, program));
    const flags = (f.flags ?? 0) | (plan.forceTsync ? SECCOMP_FILTER_FLAG.TSYNC : 0);
    agent.call("seccomp(SECCOMP_SET_MODE_FILTER)", NR.seccomp, SECCOMP_SET_MODE_FILTER, flags, fprog);
  }
}

/** A restored task's thread as the seccomp restore needs it. */
interface RestoredThread {
  agent: Agent;
  core: core_entry;
}

/** PREPARE: every thread's seccomp plan, by its core, checked against seccomp.img. */
export function planSeccomp(
  dir: ImageDir,
  tasks: readonly {
    cores: readonly { tid: number; core: core_entry }[];
    zombie?: boolean;
    helper?: boolean;
  }[],
): Map<core_entry, SeccompPlan> {
  const plans = new Map<core_entry, SeccompPlan>();
  const filters = readSeccompImage(dir);
  for (const t of tasks) {
    if (t.zombie || t.helper) continue;
    for (const { tid, core } of t.cores) {
      const plan = seccompPlanOf(core, filters, tid);
      if (plan) plans.set(core, plan);
    }
  }
  return plans;
}

/**
 * Before a task's threads are made: PTRACE_O_SUSPEND_SECCOMP (with `traceOptions`, the ones it
 * has) on its leader when any of its threads has a chain, so that the threads made from it have
 * the option too. True when it was set.
 */
export function suspendSeccompEarly(
  agent: Agent,
  cores: readonly { core: core_entry }[],
  plans: ReadonlyMap<core_entry, SeccompPlan>,
  traceOptions: number,
): boolean {
  if (!cores.some((c) => plans.has(c.core))) return false;
  setOptions(agent.tid, traceOptions | PTRACE_O.SUSPEND_SECCOMP);
  return true;
}

/**
 * The leader's chain, before the task's credentials (see the top of this file); taken out of
 * `plans`, so that restoreSeccomp leaves it alone. suspendSeccompEarly must have run.
 */
export function installLeaderSeccomp(
  agent: Agent,
  core: core_entry,
  plans: Map<core_entry, SeccompPlan>,
): void {
  const plan = plans.get(core);
  if (!plan) return;
  installSeccomp(agent, plan);
  plans.delete(core);
}

/**
 * The last thing a task does by syscalls before its scratch goes: the seccomp of every thread
 * whose chain is still to go in. The threads get PTRACE_O_SUSPEND_SECCOMP (with `traceOptions`,
 * the ones they have) first.
 */
export function restoreSeccomp(
  threads: readonly RestoredThread[],
  plans: ReadonlyMap<core_entry, SeccompPlan>,
  traceOptions: number,
): void {
  if (!threads.some((t) => plans.has(t.core))) return;
  for (const t of threads) setOptions(t.agent.tid, traceOptions | PTRACE_O.SUSPEND_SECCOMP);
  for (const t of threads) {
    const plan = plans.get(t.core);
    if (plan) installSeccomp(t.agent, plan);
  }
}
