/**
 * Remote syscalls: make a ptrace-stopped thread run one syscall of ours and report its result.
 *
 * The thread's registers are loaded with the syscall number and arguments, its instruction pointer
 * is moved onto a `syscall` instruction already present in its address space (the vDSO has several;
 * a restore puppet has its own scratch page), orig_ax is set to -1 so the kernel does not treat the
 * stop as an interrupted syscall to restart, and one PTRACE_SINGLESTEP runs the instruction. The
 * original registers and signal mask are put back by `leave()`, so the task runs on as before.
 *
 * All signals are blocked while a session is open: a pending signal would otherwise be delivered at
 * the single step and run a handler in the middle of our work.
 */
import { ERRNO, SyscallError } from "./errors.ts";
import * as pt from "./ptrace.ts";
import { Regs } from "./structs.ts";
import { readMemory } from "./memory.ts";

const SIGTRAP = 5;
const ALL_SIGNALS = 0xffffffffffffffffn;

/** A clone/fork seen while running a remote syscall: the new task's id. */
export interface RemoteChild {
  pid: number;
  event: number;
}

export class RemoteThread {
  readonly savedRegs: Regs;
  readonly savedMask: bigint;
  /** Tasks created by remote clone/fork calls, reported by PTRACE_EVENT_{CLONE,FORK}. */
  readonly children: RemoteChild[] = [];
  #open = true;

  private constructor(readonly tid: number, public syscallIp: bigint) {
    this.savedRegs = pt.getRegs(tid);
    this.savedMask = pt.getSigmask(tid);
    pt.setSigmask(tid, ALL_SIGNALS);
  }

  /** Opens a session on a stopped thread; `syscallIp` is the address of a `syscall` (0f 05) instruction. */
  static enter(tid: number, syscallIp: bigint): RemoteThread {
    return new RemoteThread(tid, syscallIp);
  }

  /** Runs one syscall; returns the raw result (negative errno on failure). */
  raw(nr: number, ...args: (bigint | number)[]): bigint {
    if (!this.#open) throw new Error(`Remote session on ${this.tid} is closed`);
    const regs = this.savedRegs.clone();
    regs.set("ax", nr);
    regs.set("orig_ax", -1);
    regs.set("ip", this.syscallIp);
    const argRegs = ["di", "si", "dx", "r10", "r8", "r9"] as const;
    argRegs.forEach((r, i) => regs.set(r, args[i] ?? 0));
    pt.setRegs(this.tid, regs);
    this.#step();
    return pt.getRegs(this.tid).getSigned("ax");
  }

  /** Runs one syscall and throws a SyscallError naming it when it fails. */
  call(name: string, nr: number, ...args: (bigint | number)[]): bigint {
    const r = this.raw(nr, ...args);
    if (r < 0n && r > -4096n) throw new SyscallError(`remote ${name}`, Number(-r), `in task ${this.tid}`);
    return r;
  }

  /** Single-steps over the syscall instruction, collecting clone events on the way. */
  #step(): void {
    pt.singlestep(this.tid);
    for (;;) {
      const st = pt.wait(this.tid)!;
      if (st.kind !== "stopped") {
        this.#open = false;
        const how = st.kind === "exited" ? `exited with ${st.code}` : `was killed by signal ${st.signal}`;
        throw new SyscallError("remote syscall", ERRNO.ESRCH, `task ${this.tid} ${how}`);
      }
      if (st.signal === SIGTRAP && st.event === 0) return;
      if (st.event === pt.PTRACE_EVENT.CLONE || st.event === pt.PTRACE_EVENT.FORK) {
        this.children.push({ pid: Number(pt.eventMessage(this.tid)), event: st.event });
        pt.singlestep(this.tid);
        continue;
      }
      if (st.event === pt.PTRACE_EVENT.STOP) {
        // A group stop (SIGSTOP from someone) reached us mid-step: step again.
        pt.singlestep(this.tid);
        continue;
      }
      // Only SIGKILL/SIGSTOP escape the blocked mask; anything else is a bug worth reporting.
      throw new SyscallError(
        "remote syscall",
        ERRNO.EINTR,
        `task ${this.tid} stopped by signal ${st.signal}`,
      );
    }
  }

  /** Puts back the registers and signal mask; the task is left stopped, as it was found. */
  leave(): void {
    if (!this.#open) return;
    this.#open = false;
    pt.setRegs(this.tid, this.savedRegs);
    pt.setSigmask(this.tid, this.savedMask);
  }
}

/** Finds a `syscall` instruction (0f 05) in a task's vDSO. */
export function findSyscallInstruction(pid: number, vdsoStart: bigint, vdsoEnd: bigint): bigint {
  const bytes = readMemory(pid, vdsoStart, Number(vdsoEnd - vdsoStart));
  for (let i = 0; i + 1 < bytes.length; i++) {
    if (bytes[i] === 0x0f && bytes[i + 1] === 0x05) return vdsoStart + BigInt(i);
  }
  throw new SyscallError(
    "find syscall instruction",
    ERRNO.ENOENT,
    `no syscall instruction in [vdso] of ${pid}`,
  );
}

/** True when a raw result is an error (the kernel's -4095..-1 range). */
export function isRemoteError(r: bigint): boolean {
  return r < 0n && r > -4096n;
}
