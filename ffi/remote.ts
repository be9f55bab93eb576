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
 *
 * That is for tasks that are ours to kill (restore puppets, `criu check` children). A dump's target
 * must survive our death at any instant, which int3 and single steps do not allow: a dump uses the
 * guarded runner below (GuardedThread).
 */
import { ERRNO, SyscallError } from "./errors.ts";
import * as pt from "./ptrace.ts";
import { Regs } from "./structs.ts";
import { readMemory } from "./memory.ts";
import { NR } from "./syscalls.ts";

const SIGTRAP = 5;
const SIGSTOP = 19;
const ALL_SIGNALS = 0xffffffffffffffffn;
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
 * What both runners share: one call of the table a turn, from `loop` (the nr word may take an
 * argument from an earlier result), its result written back in place, until the table ends or,
 * unless r13 says to go on, a call fails. Each runner jumps into it with the same registers.
 */
const CALL_TABLE_LOOP: readonly string[] = [
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
];

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
    ...CALL_TABLE_LOOP,
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
  protected running = false;

  protected constructor(readonly tid: number, public syscallIp: bigint, blockAll = true) {
    this.savedRegs = pt.getRegs(tid);
    this.savedMask = pt.getSigmask(tid);
    if (blockAll) pt.setSigmask(tid, AGENT_MASK);
  }

  /** Opens a session on a stopped thread; `syscallIp` is the address of a `syscall` (0f 05) instruction. */
  static enter(tid: number, syscallIp: bigint): RemoteThread {
    return new RemoteThread(tid, syscallIp);
  }

  protected get isOpen(): boolean {
    return this.#open;
  }
  protected close(): void {
    this.#open = false;
  }
  protected checkOpen(): void {
    if (!this.#open) throw new Error(`Remote session on ${this.tid} is closed`);
  }

  /** Runs one syscall; returns the raw result (negative errno on failure). */
  raw(nr: number, ...args: (bigint | number)[]): bigint {
    this.checkOpen();
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
    this.checkOpen();
    const regs = this.savedRegs.clone();
    regs.set("orig_ax", -1);
    regs.set("ip", codeIp);
    regs.set("r15", table);
    regs.set("r14", count);
    regs.set("r13", keepGoing ? 1 : 0);
    pt.setRegs(this.tid, regs);
    pt.cont(this.tid, 0);
    this.running = true;
  }

  /** Waits for the batch startBatch() set going to reach its `int3`. */
  waitBatch(): void {
    if (!this.running) throw new Error(`No batch is running in ${this.tid}`);
    this.running = false;
    this.#runUntilTrap(() => pt.cont(this.tid, 0), false);
  }

  /** Single-steps over the syscall instruction, collecting clone events on the way. */
  #step(): void {
    this.#runUntilTrap(() => pt.singlestep(this.tid));
  }

  /** The thread's next stop; throws (and closes the session) when it ended instead. */
  protected waitStop(): { signal: number; event: number } {
    const st = pt.wait(this.tid)!;
    if (st.kind === "stopped") return st;
    this.#open = false;
    const how = st.kind === "exited" ? `exited with ${st.code}` : `was killed by signal ${st.signal}`;
    throw new SyscallError("remote syscall", ERRNO.ESRCH, `task ${this.tid} ${how}`);
  }

  /**
   * A stop on the way that is not the one awaited: a clone event is noted, a group stop passed
   * over (the caller resumes the thread); anything else throws.
   */
  protected onStop(st: { signal: number; event: number }): void {
    if (st.event === pt.PTRACE_EVENT.CLONE || st.event === pt.PTRACE_EVENT.FORK) {
      this.children.push({ pid: Number(pt.eventMessage(this.tid)), event: st.event });
      return;
    }
    // A group stop (SIGSTOP from someone) reached us mid-call: go on.
    if (st.event === pt.PTRACE_EVENT.STOP) return;
    // Only SIGKILL/SIGSTOP escape the blocked mask; anything else is a bug worth reporting.
    throw new SyscallError("remote syscall", ERRNO.EINTR, `task ${this.tid} stopped by signal ${st.signal}`);
  }

  /**
   * Resumes the thread with `resume` until it stops on SIGTRAP, collecting clone events; unless
   * `resumeFirst` is false (the thread was set going already).
   */
  #runUntilTrap(resume: () => void, resumeFirst = true): void {
    if (resumeFirst) resume();
    for (;;) {
      const st = this.waitStop();
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
      if (st.event === 0 && st.signal === SIGSTOP) {
        // Someone stopped the task while we ran code in it (SIGSTOP cannot be blocked): the stop
        // takes effect, so the task stays stopped once we let it go, and our code goes on.
        pt.cont(this.tid, SIGSTOP);
        continue;
      }
      this.onStop(st);
      resume();
    }
  }

  /** Puts back the registers and signal mask; the task is left stopped, as it was found. */
  leave(): void {
    if (!this.#open) return;
    if (this.running) this.waitBatch(); // its registers can be set only once it stops
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

// --- the guarded runner (dump) -------------------------------------------------------------------
//
// A dump must never cost its target, even when criu is killed (SIGKILL, the OOM killer) in the
// middle. When a tracer exits, the kernel detaches its tracees (exit_ptrace, __ptrace_unlink): a
// task in a ptrace stop wakes up with the registers it has at that instant, no ptrace_disable()
// clears a single-step flag, and a stop that reported a signal delivers that signal (the exit code
// is left as it was). So the remote code of a dump keeps two rules, at every instant:
//
//  - The thread's registers are either its own, or point into the runner below with r12 holding
//    its home block: a copy of its own registers (an interrupted syscall made ready to restart, as
//    the kernel would on resume) and signal mask. Run without a tracer, the runner finishes its
//    calls, puts the mask back, and returns to the thread's own code with `iretq` from the home
//    block: every general register, flag, ip and stack pointer as they were; FPU state is never
//    touched. Nothing of the task's own stack is used.
//  - No stop that carries a signal the task would act on. No int3 and no single step (their
//    SIGTRAP, forced, kills a task that has no tracer). A batch ends with the runner sending its
//    own thread one signal, chosen among those the task ignores (SIGURG, SIGWINCH, SIGCHLD with no
//    handler): its delivery stop tells us the batch is done, and delivered without a tracer it is
//    dropped. Before its registers are given back, a thread is moved from that stop to a
//    PTRACE_INTERRUPT stop, which carries nothing.
//
// The runner's code and the leader's home block sit in the zero padding at the end of the task's
// [vdso] (written through /proc/PID/mem, as a debugger writes a breakpoint): they exist before the
// scratch area is mapped and after it is unmapped, so mapping and unmapping it are safe too. The
// leader's home path unmaps the scratch area itself when no other thread still needs it.

/**
 * The runner, entered with r12 = home block. `batch`: r15 = table, r14 = calls, r13 = 1 to go on
 * after a failure (the table as BATCH_CODE's). `single`: rax = nr and the arguments in their
 * registers; the result lands in rbx. Both end at `done`, which sends the thread the home block's
 * signal and is reported at `home`, which returns the thread to its own code. One instruction per
 * line, with its encoding.
 */
export const RUNNER_CODE = Uint8Array.from(
  [
    "4d85f6", // batch: test r14,r14
    "746c", //          jz done (+0x6c)
    ...CALL_TABLE_LOOP,
    "eb11", //          jmp done
    "0f05", // owned:   syscall
    "498b4c2438", //    mov rcx,[r12+56]    ; the fd word, in scratch
    "488901", //        mov [rcx],rax       ; an fd of ours: closed on the way home
    "eb02", //          jmp got
    "0f05", // single:  syscall
    "4889c3", // got:   mov rbx,rax
    "b8ba000000", // done: mov eax,186 (gettid) ; ids as the task's PID namespace sees them
    "0f05", //          syscall
    "4889c6", //        mov rsi,rax
    "b827000000", //    mov eax,39 (getpid)
    "0f05", //          syscall
    "4889c7", //        mov rdi,rax
    "498b542430", //    mov rdx,[r12+48]    ; signal
    "b8ea000000", //    mov eax,234 (tgkill)
    "0f05", //          syscall             ; its delivery stop is reported at home
    "498b7c2438", // home: mov rdi,[r12+56] ; the fd word's address, or 0
    "4885ff", //        test rdi,rdi
    "740f", //          jz unmap (+0x0f)
    "488b3f", //        mov rdi,[rdi]
    "4885ff", //        test rdi,rdi
    "7807", //          js unmap (+0x07)    ; no fd of ours
    "b803000000", //    mov eax,3 (close)
    "0f05", //          syscall
    "498b742410", // unmap: mov rsi,[r12+16] ; scratch length (leader only)
    "4885f6", //        test rsi,rsi
    "7414", //          jz mask (+0x14)
    "49837c241800", //  cmp qword [r12+24],0 ; other threads still inside?
    "750c", //          jnz mask (+0x0c)
    "498b7c2408", //    mov rdi,[r12+8]
    "b80b000000", //    mov eax,11 (munmap)
    "0f05", //          syscall
    "b80e000000", // mask: mov eax,14 (rt_sigprocmask)
    "bf02000000", //    mov edi,2 (SIG_SETMASK)
    "498d3424", //      lea rsi,[r12]
    "31d2", //          xor edx,edx
    "41ba08000000", //  mov r10d,8
    "0f05", //          syscall
    "498d642440", //    lea rsp,[r12+64]
    "415f", //          pop r15
    "415e", //          pop r14
    "415d", //          pop r13
    "415c", //          pop r12
    "5d", //            pop rbp
    "5b", //            pop rbx
    "415b", //          pop r11
    "415a", //          pop r10
    "4159", //          pop r9
    "4158", //          pop r8
    "58", //            pop rax
    "59", //            pop rcx
    "5a", //            pop rdx
    "5e", //            pop rsi
    "5f", //            pop rdi
    "48cf", //          iretq               ; rip, cs, rflags, rsp, ss
  ].join("").match(/../g)!,
  (h) => parseInt(h, 16),
);
/** Entry points of RUNNER_CODE. */
export const RUNNER = { batch: 0x00, owned: 0x60, single: 0x6c, home: 0x91 } as const;

/**
 * The home block, 28 words: signal mask; scratch address and length (the leader unmaps it on its
 * way home, unless the next word says other threads are inside); tgid and tid as we see them
 * (the runner asks its own, which differ in a PID namespace); the signal that ends a batch; the address of a word in scratch holding an fd our calls made in the task, closed
 * on the way home (0: no such word; a negative fd: none); r15..rdi as user_regs_struct orders
 * them; then rip, cs, rflags, rsp, ss for iretq. The leader's block is in [vdso], which the task
 * cannot write: the runner writes only the fd word.
 */
export const HOME = {
  mask: 0,
  unmapAddr: 8,
  unmapLen: 16,
  othersInside: 24,
  tgid: 32,
  tid: 40,
  signal: 48,
  fdAt: 56,
  regs: 64,
  size: 224,
} as const;

/** Room the runner takes at the end of [vdso]: its code, then the leader's home block. */
export const RUNNER_ROOM = 512;
const RUNNER_HOME_AT = 256;
if (RUNNER_CODE.length > RUNNER_HOME_AT) throw new Error("RUNNER_CODE overlaps the leader's home block");

/** Signals whose default action is to ignore them, in the order tried as a batch's end mark. */
const QUIET_SIGNALS = [23, /* SIGURG */ 28, /* SIGWINCH */ 17 /* SIGCHLD */];

const has = (set: bigint, sig: number) => ((set >> BigInt(sig - 1)) & 1n) === 1n;

/**
 * The signal that ends a thread's batches, in a task whose caught signals are `caught` (SigCgt):
 * one it ignores, so it is dropped if it ever reaches the task; better, one the thread's own mask
 * `blocked` lets through too (see GuardedThread.leave). If it catches all three, SIGURG: a kill at
 * that instant would then run its handler once, as a stray SIGURG would.
 */
export function quietSignal(caught: bigint, blocked = 0n): number {
  return QUIET_SIGNALS.find((s) => !has(caught, s) && !has(blocked, s)) ??
    QUIET_SIGNALS.find((s) => !has(caught, s)) ?? QUIET_SIGNALS[0]!;
}

/** Where the runner goes in a task: its code and the leader's home block, in [vdso]'s padding. */
export interface RunnerPlace {
  code: bigint;
  home: bigint;
}

/**
 * Finds RUNNER_ROOM bytes past the end of the vDSO's ELF image (its headers, segments and section
 * table), at the end of the mapping: bytes the task never runs nor reads.
 */
export function runnerPlace(pid: number, vdsoStart: bigint, vdsoEnd: bigint): RunnerPlace {
  const image = readMemory(pid, vdsoStart, Number(vdsoEnd - vdsoStart));
  const v = new DataView(image.buffer);
  let end = 0;
  if (v.getUint32(0, false) === 0x7f454c46 && image[4] === 2) { // "\x7fELF", 64-bit
    const phoff = Number(v.getBigUint64(0x20, true));
    const shoff = Number(v.getBigUint64(0x28, true));
    const phentsize = v.getUint16(0x36, true);
    const phnum = v.getUint16(0x38, true);
    end = Math.max(phoff + phentsize * phnum, shoff + v.getUint16(0x3a, true) * v.getUint16(0x3c, true));
    for (let i = 0; i < phnum && phoff + (i + 1) * phentsize <= image.length; i++) {
      const at = phoff + i * phentsize;
      end = Math.max(end, Number(v.getBigUint64(at + 8, true) + v.getBigUint64(at + 32, true)));
    }
  }
  const room = image.length - RUNNER_ROOM;
  if (end === 0 || end > room) {
    throw new SyscallError(
      "find runner room",
      ERRNO.ENOSPC,
      `[vdso] of ${pid} has ${Math.max(0, image.length - end)} bytes past its image, ${RUNNER_ROOM} needed`,
    );
  }
  const code = vdsoStart + BigInt(room);
  return { code, home: code + BigInt(RUNNER_HOME_AT) };
}

/**
 * Whether a thread of `pid` stopped at `ip` is inside a runner (left by a criu killed mid-dump,
 * on its way home): the runner ends its page, so `ip` must be in the last RUNNER_ROOM bytes of
 * one, and the code there must be ours. Costs a memory read only for those few addresses.
 */
export function inRunner(pid: number, ip: bigint): boolean {
  const start = (ip | 0xfffn) + 1n - BigInt(RUNNER_ROOM);
  if (ip < start || ip >= start + BigInt(RUNNER_CODE.length)) return false;
  try {
    return readMemory(pid, start, RUNNER_CODE.length).every((b, i) => b === RUNNER_CODE[i]);
  } catch {
    return false;
  }
}

/** -ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND: the call is made again. */
const RESTART_AGAIN = new Set([512n, 513n, 514n]);
const ERESTART_RESTARTBLOCK = 516n;

/**
 * The registers a thread resumes with after a stop in which no signal was delivered: an
 * interrupted syscall made ready to run again, as the kernel does on its way out of the stop
 * (arch_do_signal_or_restart). The home block holds these, as iretq does no such thing.
 */
export function resumeRegs(regs: Regs): Regs {
  const out = regs.clone();
  if (regs.getSigned("orig_ax") < 0n) return out;
  const err = -regs.getSigned("ax");
  if (RESTART_AGAIN.has(err)) out.set("ax", regs.get("orig_ax"));
  else if (err === ERESTART_RESTARTBLOCK) out.set("ax", NR.restart_syscall);
  else return out;
  out.set("ip", regs.get("ip") - 2n);
  return out;
}

const NO_FD = BigInt.asUintN(64, -1n);
const word = (w: bigint) => new Uint8Array(BigUint64Array.of(w).buffer);

/** The home block of a thread stopped with `regs` and `mask`. */
export function homeBlock(
  regs: Regs,
  mask: bigint,
  ids: { tgid: number; tid: number; signal: number },
): Uint8Array<ArrayBuffer> {
  const w = new BigUint64Array(HOME.size / 8);
  const r = resumeRegs(regs);
  w[HOME.mask / 8] = mask;
  w[HOME.tgid / 8] = BigInt(ids.tgid);
  w[HOME.tid / 8] = BigInt(ids.tid);
  w[HOME.signal / 8] = BigInt(ids.signal);
  const at = HOME.regs / 8;
  for (let i = 0; i < 15; i++) w[at + i] = r.raw[i]!; // r15 .. rdi
  (["ip", "cs", "flags", "sp", "ss"] as const).forEach((name, i) => w[at + 15 + i] = r.get(name));
  return new Uint8Array(w.buffer);
}

/** What a caller gives a guarded thread: where the runner is, and how to write its home block. */
export interface GuardedEntry {
  tgid: number;
  tid: number;
  runner: bigint;
  home: bigint;
  /** The task's caught signals (SigCgt), for choosing the thread's quiet signal. */
  caught: bigint;
  /** Writes into the task's memory where the home block is (the [vdso] needs /proc/PID/mem). */
  write(addr: bigint, bytes: Uint8Array<ArrayBuffer>): void;
}

/** Calls whose result is an fd of ours in the task while it lives: open, openat, socket. */
const FD_MAKERS = new Set([2, 257, 41]);

/**
 * A thread run through the guarded runner: the same calls as RemoteThread, safe at every instant
 * against our own death (see above). Calls end at a signal-delivery stop of `signal` at the
 * runner's home; leave() moves the thread to an interrupt stop before giving its registers back.
 */
export class GuardedThread extends RemoteThread {
  readonly home: bigint;
  readonly #entry: GuardedEntry;
  readonly #tgid: number;
  /** The end-of-batch signal came from someone else meanwhile: sent again on leave. */
  #signalSeen = false;
  /** The fd the fd word holds for closing on the way home, or -1. */
  #ownedFd = -1n;
  /** startLeave() set it going towards its interrupt stop. */
  #leaving = false;
  /** The fd word (see HOME.fdAt), once there is scratch for it; 0 before. */
  #fdWord = 0n;
  /** The signal that ends this thread's batches (quietSignal). */
  readonly signal: number;

  private constructor(entry: GuardedEntry, writeHome: boolean) {
    super(entry.tid, entry.runner + BigInt(RUNNER.single), false);
    this.#entry = entry;
    this.#tgid = entry.tgid;
    this.home = entry.home;
    this.signal = quietSignal(entry.caught, this.savedMask);
    this.homeBlock = homeBlock(this.savedRegs, this.savedMask, { ...entry, signal: this.signal });
    if (!writeHome) return;
    entry.write(entry.home, this.homeBlock);
    this.land();
  }

  /** What goes at `home` before the thread's registers may point into the runner. */
  readonly homeBlock: Uint8Array<ArrayBuffer>;

  /** Enters a thread stopped in a signal-free stop (PTRACE_INTERRUPT); see GuardedEntry. */
  static enterGuarded(entry: GuardedEntry): GuardedThread {
    return new GuardedThread(entry, true);
  }

  /**
   * enterGuarded() for many threads at once: the thread's state is read and its home block made,
   * nothing of it changed. The caller writes homeBlock at home (all the threads' blocks in one
   * write) and then calls land().
   */
  static prepareGuarded(entry: GuardedEntry): GuardedThread {
    return new GuardedThread(entry, false);
  }

  /** Hands the thread over to the runner, its home block written. */
  land(): void {
    // Registers first: from here a thread that wakes without us goes home through the runner,
    // which also sets the mask back.
    pt.setRegs(this.tid, this.#runnerRegs(RUNNER.home));
    pt.setSigmask(this.tid, ALL_SIGNALS & ~(1n << BigInt(this.signal - 1)));
  }

  /**
   * Gives the thread a word at `addr` (writable by the task: scratch) to note an fd it makes for
   * us, closed on its way home; 0 takes it away, before that memory goes.
   */
  setFdWord(addr: bigint): void {
    if (addr !== 0n) this.#entry.write(addr, word(NO_FD));
    this.#entry.write(this.home + BigInt(HOME.fdAt), word(addr));
    this.#fdWord = addr;
  }

  /** Registers that run the runner from `entry` with this thread's home block. */
  #runnerRegs(entry: number): Regs {
    const regs = this.savedRegs.clone();
    regs.set("orig_ax", -1);
    regs.set("ip", this.#entry.runner + BigInt(entry));
    regs.set("r12", this.home);
    return regs;
  }

  /**
   * Runs one call. An fd it makes (open, openat, socket) is noted in the fd word by the runner
   * itself, so that a death before we close it still closes it; its close clears the word.
   */
  override raw(nr: number, ...args: (bigint | number)[]): bigint {
    this.checkOpen();
    const owns = this.#fdWord !== 0n && this.#ownedFd < 0n && FD_MAKERS.has(nr);
    const regs = this.#runnerRegs(owns ? RUNNER.owned : RUNNER.single);
    regs.set("ax", nr);
    const argRegs = ["di", "si", "dx", "r10", "r8", "r9"] as const;
    argRegs.forEach((r, i) => regs.set(r, args[i] ?? 0));
    pt.setRegs(this.tid, regs);
    pt.cont(this.tid, 0);
    const result = this.#waitHome().getSigned("bx");
    if (owns && result >= 0n) this.#ownedFd = result;
    if (nr === NR.close && this.#ownedFd >= 0n && BigInt(args[0] ?? -1) === this.#ownedFd) {
      // Closed: a second close on the way home would find it free (the task is frozen) anyway.
      this.#entry.write(this.#fdWord, word(NO_FD));
      this.#ownedFd = -1n;
    }
    return result;
  }

  override startBatch(codeIp: bigint, table: bigint, count: number, keepGoing: boolean): void {
    this.checkOpen();
    if (codeIp !== this.#entry.runner + BigInt(RUNNER.batch)) {
      throw new Error(`Guarded thread ${this.tid} runs batches only from its runner`);
    }
    const regs = this.#runnerRegs(RUNNER.batch);
    regs.set("r15", table);
    regs.set("r14", count);
    regs.set("r13", keepGoing ? 1 : 0);
    pt.setRegs(this.tid, regs);
    pt.cont(this.tid, 0);
    this.running = true;
  }

  override waitBatch(): void {
    if (!this.running) throw new Error(`No batch is running in ${this.tid}`);
    this.running = false;
    this.#waitHome();
  }

  /** Waits for the end-of-batch signal at the runner's home; returns the registers there. */
  #waitHome(): Regs {
    const home = this.#entry.runner + BigInt(RUNNER.home);
    for (;;) {
      const st = this.waitStop();
      if (st.event === 0 && st.signal === this.signal) {
        const regs = pt.getRegs(this.tid);
        if (regs.get("ip") === home) return regs;
        this.#signalSeen = true; // someone else's: the task would ignore it, or gets it on leave
      } else if (st.event === 0 && st.signal === SIGSTOP) {
        pt.cont(this.tid, SIGSTOP); // someone stopped the task: it stays stopped once let go
        continue;
      } else this.onStop(st);
      pt.cont(this.tid, 0);
    }
  }

  /**
   * Puts the thread back as it was: moved from the end-of-batch stop (which carries a signal) to
   * an interrupt stop, then the mask, then the registers, each step leaving it able to go home.
   */
  /**
   * Puts the thread back as it was. When its own mask lets the quiet signal through, it stays in
   * the signal's delivery stop, given back first its mask, then its registers: woken without us
   * at any point, it drops the signal and goes on (home through the runner, or from its own
   * registers). Otherwise a delivered signal would stay pending, blocked: it is first moved to an
   * interrupt stop (startLeave).
   */
  override leave(): void {
    if (this.isOpen && !this.#leaving && !(this.savedMask & (1n << BigInt(this.signal - 1)))) {
      if (this.running) this.waitBatch();
      this.close();
      pt.setSigmask(this.tid, this.savedMask);
      pt.setRegs(this.tid, this.savedRegs);
      if (this.#signalSeen) pt.tgkill(this.#tgid, this.tid, this.signal);
      return;
    }
    this.startLeave();
    this.finishLeave();
  }

  /**
   * leave() in two halves, so that many threads make their way to the interrupt stop at once
   * (see Agent.leaveThreads): here the thread is set going towards it.
   */
  startLeave(): void {
    if (!this.isOpen || this.#leaving || !(this.savedMask & (1n << BigInt(this.signal - 1)))) return;
    if (this.running) this.waitBatch();
    this.#leaving = true;
    pt.interrupt(this.tid);
    pt.cont(this.tid, 0);
  }

  /** Waits for the interrupt stop startLeave() asked for, then gives back the mask and registers. */
  finishLeave(): void {
    if (!this.isOpen) return;
    if (!this.#leaving) return this.leave();
    this.close();
    for (;;) {
      const st = this.waitStop();
      if (st.event === pt.PTRACE_EVENT.STOP) break;
      if (st.event === 0 && st.signal === this.signal) this.#signalSeen = true;
      else if (st.event === 0 && st.signal === SIGSTOP) {
        pt.cont(this.tid, SIGSTOP); // someone stopped the task: it stays stopped once let go
        continue;
      } else this.onStop(st);
      pt.cont(this.tid, 0);
    }
    pt.setSigmask(this.tid, this.savedMask);
    pt.setRegs(this.tid, this.savedRegs);
    if (this.#signalSeen) pt.tgkill(this.#tgid, this.tid, this.signal);
  }
}
