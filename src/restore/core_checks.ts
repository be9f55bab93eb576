/**
 * The values of a core image (core-TID.img) that the restore hands to the kernel, checked against
 * what the kernel accepts before any task exists: a damaged image is then refused by name instead
 * of failing a syscall half-way through a restore (or overrunning a buffer of ours).
 */
import type { core_entry } from "../images/gen/core_pb.ts";
import type { posix_timer_entry } from "../images/gen/timer_pb.ts";
import { dispositionSignals } from "../objects/signals.ts";
import { threadInfoProblem } from "../objects/cpu.ts";
import { SIGINFO_SIZE, siginfoSigno } from "../../ffi/structs.ts";
import { NGROUPS_MAX, RLIM_NLIMITS, SCHED, SIG } from "../../ffi/syscalls.ts";

/** Linux has 64 signals; a queued one is a siginfo_t. */
const SIGNALS = 64;
const RLIM_INFINITY = 0xffffffffffffffffn;
/** Clocks timer_create takes (besides the negative per-process and per-thread CPU clocks). */
const TIMER_CLOCKS = new Set([0, 1, 2, 3, 7, 8, 9, 11]);
const SIGEV = { SIGNAL: 0, NONE: 1, THREAD: 2, THREAD_ID: 4 } as const;
/** Policies sched_setscheduler sets (not DEADLINE). */
const SCHED_POLICIES = new Set<number>([SCHED.OTHER, SCHED.FIFO, SCHED.RR, SCHED.BATCH, SCHED.IDLE]);
/** set_robust_list takes exactly a struct robust_list_head; rseq a 32-byte aligned struct rseq. */
const ROBUST_LIST_HEAD_SIZE = 24;
const RSEQ_ALIGN = 32n;
const RSEQ_MIN_SIZE = 32;
const USER_SPACE_END = 1n << 47n;

/** What is wrong with a thread's core image, worded to follow "core-TID.img has", or undefined. */
export function coreProblem(core: core_entry, threads: readonly number[]): string | undefined {
  const ti = core.threadInfo;
  const regs = ti ? threadInfoProblem(ti) : undefined;
  if (regs) return regs;
  return taskProblem(core, threads) ?? threadProblem(core);
}

/** The task part: signal actions, shared queued signals, limits, timers. */
function taskProblem(core: core_entry, threads: readonly number[]): string | undefined {
  const tc = core.tc;
  if (!tc) return undefined;
  const max = dispositionSignals().length;
  if (tc.sigactions.length > max) return `${tc.sigactions.length} signal actions, at most ${max} exist`;
  const rl = tc.rlimits?.rlimits ?? [];
  if (rl.length > RLIM_NLIMITS) return `${rl.length} resource limits, at most ${RLIM_NLIMITS} exist`;
  for (const [i, r] of rl.entries()) {
    if (r.max !== RLIM_INFINITY && r.cur > r.max) return `limit ${i} at ${r.cur}, above its maximum ${r.max}`;
  }
  const ids = new Set<number>();
  for (const t of tc.timers?.posix ?? []) {
    if (t.itId < 0 || ids.has(t.itId)) return `POSIX timer id ${t.itId} twice or out of range`;
    ids.add(t.itId);
    const wrong = timerProblem(t, threads);
    if (wrong) return `POSIX timer ${t.itId} with ${wrong}`;
  }
  return signalsProblem(tc.signalsS?.signals ?? []);
}

/** What timer_create would refuse (kernel/time/posix-timers.c, good_sigevent). */
function timerProblem(t: posix_timer_entry, threads: readonly number[]): string | undefined {
  if (t.clockId >= 0 && !TIMER_CLOCKS.has(t.clockId)) return `an unknown clock ${t.clockId}`;
  const notify = t.itSigevNotify;
  if (
    notify !== SIGEV.SIGNAL && notify !== SIGEV.NONE && notify !== SIGEV.THREAD &&
    notify !== (SIGEV.THREAD_ID)
  ) {
    return `an unknown notification ${notify}`;
  }
  if (notify !== SIGEV.NONE && (t.siSigno < 1 || t.siSigno > SIGNALS)) return `signal ${t.siSigno}`;
  if (notify === SIGEV.THREAD_ID && !threads.includes(t.notifyThreadId ?? 0)) {
    return `a notification to thread ${t.notifyThreadId}, which is not one of the process's`;
  }
  return undefined;
}

/**
 * What sched_setscheduler and setpriority would refuse of a thread's policy (with its
 * reset-on-fork flag), real-time priority and nice value.
 */
export function schedulingProblem(schedPolicy: number, prio: number, nice: number): string | undefined {
  const policy = schedPolicy & ~SCHED.RESET_ON_FORK;
  if (!SCHED_POLICIES.has(policy)) return `an unknown scheduling policy ${schedPolicy}`;
  const realtime = policy === SCHED.FIFO || policy === SCHED.RR;
  if (realtime ? prio < 1 || prio > 99 : prio !== 0) {
    return `a priority ${prio} that policy ${policy} does not take`;
  }
  if (nice < -20 || nice > 19) return `a nice value of ${nice}, expected -20 to 19`;
  return undefined;
}

/** The thread part: its queued signals, credentials and scheduling. */
function threadProblem(core: core_entry): string | undefined {
  const th = core.threadCore;
  if (!th) return undefined;
  const c = th.creds;
  if (c && c.groups.length > NGROUPS_MAX) return `${c.groups.length} groups, at most ${NGROUPS_MAX} exist`;
  for (const caps of c ? [c.capInh, c.capPrm, c.capEff, c.capBnd, c.capAmb] : []) {
    if (caps.length > 2) return `a capability set of ${caps.length} words, expected 2`;
  }
  const sched = schedulingProblem(th.schedPolicy ?? 0, th.schedPrio ?? 0, th.schedNice ?? 0);
  if (sched) return sched;
  if (th.futexRla && th.futexRlaLen !== ROBUST_LIST_HEAD_SIZE) {
    return `a robust list head of ${th.futexRlaLen} bytes, expected ${ROBUST_LIST_HEAD_SIZE}`;
  }
  const rs = th.rseqEntry;
  if (rs && rs.rseqAbiPointer !== 0n) {
    if (rs.rseqAbiPointer % RSEQ_ALIGN || rs.rseqAbiPointer >= USER_SPACE_END) {
      return `an rseq area at 0x${
        rs.rseqAbiPointer.toString(16)
      }, not a ${RSEQ_ALIGN}-byte aligned user address`;
    }
    if (rs.rseqAbiSize < RSEQ_MIN_SIZE) {
      return `an rseq area of ${rs.rseqAbiSize} bytes, expected at least ${RSEQ_MIN_SIZE}`;
    }
  }
  const pdeath = th.pdeathSig ?? 0;
  if (pdeath < 0 || pdeath > SIGNALS) return `a parent-death signal ${pdeath}, expected 0 to ${SIGNALS}`;
  return signalsProblem(th.signalsP?.signals ?? []);
}

/**
 * Queued signals: a whole siginfo_t each, of a signal that exists and can be queued again (the
 * task queues them to itself: a SIGKILL or SIGSTOP would end or stop the restore there).
 */
function signalsProblem(signals: readonly { siginfo: Uint8Array }[]): string | undefined {
  for (const s of signals) {
    if (s.siginfo.byteLength !== SIGINFO_SIZE) {
      return `a queued signal of ${s.siginfo.byteLength} bytes, expected ${SIGINFO_SIZE}`;
    }
    const signo = siginfoSigno(s.siginfo);
    if (signo < 1 || signo > SIGNALS) return `a queued signal ${signo}, expected 1 to ${SIGNALS}`;
    if (signo === SIG.KILL || signo === SIG.STOP) {
      return `a queued signal ${signo}, which cannot be queued again`;
    }
  }
  return undefined;
}
