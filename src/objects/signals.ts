/**
 * Signal state: handlers (sigactions, per process), the alternate signal stack (per thread) and
 * queued signals (shared per process, private per thread). The blocked mask travels in the core
 * image and is set by the restore's last stage.
 */
import { create } from "@bufbuild/protobuf";
import { type sa_entry, sa_entrySchema } from "../images/gen/sa_pb.ts";
import {
  siginfo_entrySchema,
  type signal_queue_entry,
  signal_queue_entrySchema,
} from "../images/gen/siginfo_pb.ts";
import { type thread_sas_entry, thread_sas_entrySchema } from "../images/gen/core_pb.ts";
import {
  KERNEL_SIGSET_SIZE,
  kernelSigaction,
  KSIGACTION_SIZE,
  parseKernelSigaction,
  parseStackT,
  SIGINFO_SIZE,
  siginfoSigno,
  STACK_T_SIZE,
  stackT,
} from "../../ffi/structs.ts";
import { NR, SIG, SS } from "../../ffi/syscalls.ts";
import * as pt from "../../ffi/ptrace.ts";
import { readStatus } from "../../ffi/proc.ts";
import type { Agent, BatchCall, Query } from "../agent.ts";
import { RestoreError } from "../errors.ts";

const SIGMAX = 64;

/** Signals whose disposition is stored, in CRIU's order: 1..64 without SIGKILL and SIGSTOP. */
export function dispositionSignals(): number[] {
  const out: number[] = [];
  for (let s = 1; s <= SIGMAX; s++) if (s !== SIG.KILL && s !== SIG.STOP) out.push(s);
  return out;
}

/**
 * Signals whose disposition is worth asking the task for: those it catches or ignores (from
 * /proc status), and SIGCHLD, whose SA_NOCLDWAIT/SA_NOCLDSTOP flags matter even with SIG_DFL.
 * Every other one is SIG_DFL with no flags, which saves ~60 remote calls per process.
 */
function customized(pid: number): Set<number> {
  const st = readStatus(pid);
  const bits = BigInt("0x" + (st.get("SigCgt") ?? "0")) | BigInt("0x" + (st.get("SigIgn") ?? "0"));
  const out = new Set<number>([SIG.CHLD]);
  for (let sig = 1; sig <= SIGMAX; sig++) if (bits & (1n << BigInt(sig - 1))) out.add(sig);
  return out;
}

const DEFAULT_ACTION = () => create(sa_entrySchema, { sigaction: 0n, flags: 0n, restorer: 0n, mask: 0n });

/** The handlers of the task, asked for those signals it catches or ignores (one buffer each). */
export function sigactionsQuery(agent: Agent): Query<sa_entry[]> {
  const asked = customized(agent.pid);
  const signals = dispositionSignals();
  const bufs = new Map<number, bigint>();
  for (const sig of signals) if (asked.has(sig)) bufs.set(sig, agent.alloc(KSIGACTION_SIZE));
  return {
    calls: [...bufs].map(([sig, buf]) => ({
      name: `rt_sigaction(${sig})`,
      nr: NR.rt_sigaction,
      args: [sig, 0, buf, KERNEL_SIGSET_SIZE],
    })),
    answer: () =>
      signals.map((sig) => {
        const buf = bufs.get(sig);
        if (buf === undefined) return DEFAULT_ACTION();
        const a = parseKernelSigaction(agent.read(buf, KSIGACTION_SIZE));
        return create(sa_entrySchema, {
          sigaction: a.handler,
          flags: a.flags,
          restorer: a.restorer,
          mask: a.mask,
        });
      }),
  };
}

/** The calls that give the task its dumped signal dispositions (scratch for them from `agent`). */
export function sigactionCalls(agent: Agent, actions: readonly sa_entry[]): BatchCall[] {
  const signals = dispositionSignals();
  if (actions.length > signals.length) {
    throw new RestoreError(
      `The core image has ${actions.length} sigactions; at most ${signals.length} exist`,
    );
  }
  const calls: BatchCall[] = [];
  actions.forEach((sa, i) => {
    const sig = signals[i]!;
    if (sa.sigaction === 0n && sa.flags === 0n && sa.mask === 0n) return; // default: the puppet has it
    const act = kernelSigaction({
      handler: sa.sigaction,
      flags: sa.flags,
      restorer: sa.restorer,
      mask: sa.mask,
    });
    const buf = agent.alloc(KSIGACTION_SIZE, act);
    calls.push({
      name: `rt_sigaction(${sig})`,
      nr: NR.rt_sigaction,
      args: [sig, buf, 0, KERNEL_SIGSET_SIZE],
    });
  });
  return calls;
}

/** The thread's alternate signal stack. */
export function sigaltstackQuery(agent: Agent): Query<thread_sas_entry> {
  const q = agent.fetchQuery("sigaltstack", STACK_T_SIZE, (buf) => [NR.sigaltstack, 0, buf]);
  return {
    calls: q.calls,
    answer: (r) => {
      const s = parseStackT(q.answer(r)); // flags unsigned: SS_AUTODISARM is bit 31
      return create(thread_sas_entrySchema, { ssSp: s.sp, ssFlags: s.flags, ssSize: s.size });
    },
  };
}

/** The call that sets the thread's alternate stack (its struct placed in scratch); none when disabled. */
export function sigaltstackCall(agent: Agent, sas: thread_sas_entry | undefined): BatchCall[] {
  if (!sas || (sas.ssFlags & SS.DISABLE) !== 0) return [];
  // SS_ONSTACK is a state, not a flag one can set.
  const stack = stackT({ sp: sas.ssSp, flags: sas.ssFlags & ~SS.ONSTACK, size: sas.ssSize });
  return [{ name: "sigaltstack", nr: NR.sigaltstack, args: [agent.alloc(STACK_T_SIZE, stack), 0] }];
}

export function dumpPendingSignals(tid: number, shared: boolean): signal_queue_entry | undefined {
  const infos = pt.peekSiginfo(tid, shared);
  if (infos.length === 0) return undefined;
  return create(signal_queue_entrySchema, {
    signals: infos.map((siginfo) => create(siginfo_entrySchema, { siginfo })),
  });
}

/**
 * The calls that queue the signals again, for the thread's batch. The task must send them to
 * itself: the kernel refuses kernel-style si_code values from any other sender.
 */
export function pendingSignalCalls(
  agent: Agent,
  pid: number,
  tid: number,
  q: signal_queue_entry | undefined,
  shared: boolean,
): BatchCall[] {
  return (q?.signals ?? []).map((s) => {
    if (s.siginfo.byteLength !== SIGINFO_SIZE) {
      throw new RestoreError(
        `Queued signal record is ${s.siginfo.byteLength} bytes, expected ${SIGINFO_SIZE}`,
      );
    }
    const signo = siginfoSigno(s.siginfo);
    const info = agent.alloc(SIGINFO_SIZE, s.siginfo);
    return shared
      ? { name: `rt_sigqueueinfo(${signo})`, nr: NR.rt_sigqueueinfo, args: [pid, signo, info] }
      : { name: `rt_tgsigqueueinfo(${signo})`, nr: NR.rt_tgsigqueueinfo, args: [pid, tid, signo, info] };
  });
}
