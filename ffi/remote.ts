/**
 * Remote syscalls: make a ptrace-stopped thread run one syscall of ours and report its result.
 *
 * The thread's registers are loaded with the syscall number and arguments, its instruction pointer
 * is moved onto a `syscall` instruction already present in its address space (the vDSO has several;
 * a restore puppet has its own scratch page), orig_ax is set to -1 so the kernel does not treat the
 * stop as an interrupted syscall to restart, and one PTRACE_SINGLESTEP runs the instruction. The
 * original registers and signal mask are put back by `leave()`, so the task runs on as before.
 *
 * All signals but SIGTRAP are blocked while a session is open: a pending signal would otherwise be
 * delivered at the single step and run a handler in the middle of our work. SIGTRAP stays open for
 * our own traps (see AGENT_MASK); a task with one queued is refused before a session starts.
 *
 * Each trap costs a few ptrace round trips (~60 µs here), whatever the syscall. A batch runs many
 * syscalls for one trap: BATCH_CODE, placed once in an executable page of the task, walks a table
 * of calls and stops at an `int3` when done, or at the first failure.
 */
import { ERRNO, SyscallError } from "./errors.ts";
import * as pt from "./ptrace.ts";
import { Regs } from "./structs.ts";
import { readMemory } from "./memory.ts";

const SIGTRAP = 5;
const SIGSTOP = 19;
/**
 * The mask a thread has while we run code in it: every signal but SIGTRAP. Our own traps (int3,
 * single steps) are forced SIGTRAPs, and the kernel resets the handler of a forced signal that is
 * blocked (or ignored) to SIG_DFL: a blocked SIGTRAP would cost the task its SIGTRAP handler.
 */
const AGENT_MASK = 0xffffffffffffffffn & ~(1n << BigInt(SIGTRAP - 1));

/** A clone/fork seen while running a remote syscall: the new task's id. */
export interface RemoteChild {
  pid: number;
  event: number;
}

/**
 * The batch runner, run with r15 = table, r14 = number of calls, r13 = 1 to go on after a failure.
 * Each table slot is 8 words: nr, six arguments, and the result, written back in place. A call
 * may take one argument from the result of an earlier call of the table (a new fd passed on, see
 * batchNrWord): the nr word's upper half then says which argument and how many slots back. One
 * instruction per line, with its encoding.
 */
export const BATCH_CODE = Uint8Array.from(
  [
    "4d85f6", // loop: test r14,r14
    "7459", //         jz done (+0x59)
    "498b07", //       mov rax,[r15]
    "4889c1", //       mov rcx,rax
    "48c1e920", //     shr rcx,32          ; (argument + 1) | back << 8
    "741b", //         jz args (+0x1b)     ; no argument from an earlier result
    "0fb6d1", //       movzx edx,cl        ; argument + 1: its word in the slot
    "48c1e908", //     shr rcx,8
    "48c1e106", //     shl rcx,6           ; back * 64 bytes
    "4c89fe", //       mov rsi,r15
    "4829ce", //       sub rsi,rcx
    "488b7638", //     mov rsi,[rsi+56]    ; that slot's result
    "498934d7", //     mov [r15+rdx*8],rsi
    "89c0", //         mov eax,eax         ; the nr alone
    "498b7f08", // args: mov rdi,[r15+8]
    "498b7710", //     mov rsi,[r15+16]
    "498b5718", //     mov rdx,[r15+24]
    "4d8b5720", //     mov r10,[r15+32]
    "4d8b4728", //     mov r8,[r15+40]
    "4d8b4f30", //     mov r9,[r15+48]
    "0f05", //         syscall
    "49894738", //     mov [r15+56],rax
    "4983c740", //     add r15,64
    "49ffce", //       dec r14
    "483d01f0ffff", // cmp rax,-4095
    "72a7", //         jb loop (unsigned below: not an error)
    "4d85ed", //       test r13,r13
    "75a2", //         jnz loop
    "cc", //     done: int3
  ].join("").match(/../g)!,
  (h) => parseInt(h, 16),
);
/** Bytes to reserve for BATCH_CODE, rounded up. */
export const BATCH_CODE_ROOM = 128;

/**
 * The nr word of a table slot: the syscall number, and when argument `arg` (0-5) is to be the
 * result of the call `back` slots earlier, that reference.
 */
export function batchNrWord(nr: number, ref?: { arg: number; back: number }): bigint {
  if (!ref) return BigInt(nr);
  return BigInt(nr) | (BigInt(ref.arg + 1) << 32n) | (BigInt(ref.back) << 40n);
}
export const BATCH_SLOT_WORDS = 8;
/** What a result slot holds until its call has run: no syscall returns it. */
export const BATCH_NOT_RUN = 1n << 63n;

export class RemoteThread {
  readonly savedRegs: Regs;
  readonly savedMask: bigint;
  /** Tasks created by remote clone/fork calls, reported by PTRACE_EVENT_{CLONE,FORK}. */
  readonly children: RemoteChild[] = [];
  #open = true;
  /** A batch set going by startBatch() and not yet collected. */
  #running = false;

  private constructor(readonly tid: number, public syscallIp: bigint) {
    this.savedRegs = pt.getRegs(tid);
    this.savedMask = pt.getSigmask(tid);
    pt.setSigmask(tid, AGENT_MASK);
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

  /**
   * Runs the batch runner at `codeIp` over the table at `table` (already in the task's memory) and
   * waits for its `int3`. The caller reads the results back from the table.
   */
  runBatch(codeIp: bigint, table: bigint, count: number, keepGoing: boolean): void {
    this.startBatch(codeIp, table, count, keepGoing);
    this.waitBatch();
  }

  /**
   * runBatch() in two halves: the thread is set going here, and runs while the caller does
   * something else (prepares another thread's batch); waitBatch() collects it. Nothing else may be
   * asked of this thread in between.
   */
  startBatch(codeIp: bigint, table: bigint, count: number, keepGoing: boolean): void {
    if (!this.#open) throw new Error(`Remote session on ${this.tid} is closed`);
    const regs = this.savedRegs.clone();
    regs.set("orig_ax", -1);
    regs.set("ip", codeIp);
    regs.set("r15", table);
    regs.set("r14", count);
    regs.set("r13", keepGoing ? 1 : 0);
    pt.setRegs(this.tid, regs);
    pt.cont(this.tid, 0);
    this.#running = true;
  }

  /** Waits for the batch startBatch() set going to reach its `int3`. */
  waitBatch(): void {
    if (!this.#running) throw new Error(`No batch is running in ${this.tid}`);
    this.#running = false;
    this.#runUntilTrap(() => pt.cont(this.tid, 0), false);
  }

  /** Single-steps over the syscall instruction, collecting clone events on the way. */
  #step(): void {
    this.#runUntilTrap(() => pt.singlestep(this.tid));
  }

  /**
   * Resumes the thread with `resume` until it stops on SIGTRAP, collecting clone events; unless
   * `resumeFirst` is false (the thread was set going already).
   */
  #runUntilTrap(resume: () => void, resumeFirst = true): void {
    if (resumeFirst) resume();
    for (;;) {
      const st = pt.wait(this.tid)!;
      if (st.kind !== "stopped") {
        this.#open = false;
        const how = st.kind === "exited" ? `exited with ${st.code}` : `was killed by signal ${st.signal}`;
        throw new SyscallError("remote syscall", ERRNO.ESRCH, `task ${this.tid} ${how}`);
      }
      if (st.signal === SIGTRAP && st.event === 0) {
        if (pt.stopSignalCode(this.tid) > 0) return;
        // Not our trap: a SIGTRAP someone sent, which our mask lets through. Taking it for the end
        // of our code would read results that were never written.
        throw new SyscallError(
          "remote syscall",
          ERRNO.EINTR,
          `task ${this.tid} received a SIGTRAP from another process while criu ran code in it`,
        );
      }
      if (st.event === pt.PTRACE_EVENT.CLONE || st.event === pt.PTRACE_EVENT.FORK) {
        this.children.push({ pid: Number(pt.eventMessage(this.tid)), event: st.event });
        resume();
        continue;
      }
      if (st.event === pt.PTRACE_EVENT.STOP) {
        // A group stop (SIGSTOP from someone) reached us mid-step: go on.
        resume();
        continue;
      }
      if (st.event === 0 && st.signal === SIGSTOP) {
        // Someone stopped the task while we ran code in it (SIGSTOP cannot be blocked): the stop
        // takes effect, so the task stays stopped once we let it go, and its trap above goes on.
        pt.cont(this.tid, SIGSTOP);
        continue;
      }
      // Only SIGKILL, SIGSTOP and SIGTRAP escape the agent's mask; anything else is a bug worth reporting.
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
    if (this.#running) this.waitBatch(); // its registers can be set only once it stops
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
