/**
 * ptrace and waitpid. Every call here is synchronous on the main thread: the kernel answers ptrace
 * requests only from the thread that attached.
 */
import { addressOf, call, callBig, lastErrno, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";
import {
  parseRseqConfig,
  peeksiginfoArgs,
  Regs,
  RSEQ_CONFIG_SIZE,
  SIGINFO_SIZE,
  USER_REGS_SIZE,
} from "./structs.ts";
import { NR } from "./syscalls.ts";

export const PTRACE = {
  CONT: 7,
  KILL: 8,
  SINGLESTEP: 9,
  DETACH: 17,
  SETOPTIONS: 0x4200,
  GETEVENTMSG: 0x4201,
  GETSIGINFO: 0x4202,
  GETREGSET: 0x4204,
  SETREGSET: 0x4205,
  SEIZE: 0x4206,
  INTERRUPT: 0x4207,
  LISTEN: 0x4208,
  PEEKSIGINFO: 0x4209,
  GETSIGMASK: 0x420a,
  SETSIGMASK: 0x420b,
  SECCOMP_GET_FILTER: 0x420c,
  GET_RSEQ_CONFIGURATION: 0x420f,
} as const;

export const PTRACE_O = {
  TRACESYSGOOD: 0x1,
  TRACEFORK: 0x2,
  TRACEVFORK: 0x4,
  TRACECLONE: 0x8,
  TRACEEXEC: 0x10,
  TRACEEXIT: 0x40,
  EXITKILL: 0x100000,
  SUSPEND_SECCOMP: 0x200000,
} as const;

export const PTRACE_EVENT = { FORK: 1, VFORK: 2, CLONE: 3, EXEC: 4, EXIT: 6, STOP: 128 } as const;

export const NT_PRSTATUS = 1;
export const NT_X86_XSTATE = 0x202;

export const WALL = 0x40000000;
export const WNOHANG = 1;

/**
 * Tests of criu's own death (tests/kill_test.ts) name a step: with CRIU_TS_KILL_AT_STEP=N, criu
 * kills itself with SIGKILL just before its Nth ptrace request or write into a task's memory: the
 * points between which a tracee's state changes. Read once; 0 (unset) costs one comparison.
 */
const KILL_AT_STEP = Number(Deno.env.get("CRIU_TS_KILL_AT_STEP") ?? 0) || 0;
let steps = 0;

/** Counts one step towards CRIU_TS_KILL_AT_STEP (see above). */
export function killPoint(): void {
  if (KILL_AT_STEP === 0 || ++steps < KILL_AT_STEP) return;
  console.error(`Killed at step ${steps}: ${new Error().stack?.split("\n").slice(2, 7).join(" <")}`);
  libc.kill(Deno.pid, 9);
}

function ptrace(
  name: string,
  req: number,
  pid: number,
  addr: bigint | number,
  data: bigint | number,
): number {
  if (KILL_AT_STEP !== 0) killPoint();
  // The hottest call of the tool: nothing is built (not even the error text) unless it fails.
  const r = libc.ptrace(req, pid, BigInt(addr), BigInt(data));
  if (r === -1n) throw new SyscallError(`ptrace(${name})`, lastErrno(), `pid ${pid}`);
  return Number(r);
}

export function seize(pid: number, options: number): void {
  ptrace("PTRACE_SEIZE", PTRACE.SEIZE, pid, 0, options);
}
export function interrupt(pid: number): void {
  ptrace("PTRACE_INTERRUPT", PTRACE.INTERRUPT, pid, 0, 0);
}
export function setOptions(pid: number, options: number): void {
  ptrace("PTRACE_SETOPTIONS", PTRACE.SETOPTIONS, pid, 0, options);
}
export function detach(pid: number, signal = 0): void {
  ptrace("PTRACE_DETACH", PTRACE.DETACH, pid, 0, signal);
}
export function cont(pid: number, signal = 0): void {
  ptrace("PTRACE_CONT", PTRACE.CONT, pid, 0, signal);
}
export function listen(pid: number): void {
  ptrace("PTRACE_LISTEN", PTRACE.LISTEN, pid, 0, 0);
}
export function singlestep(pid: number): void {
  ptrace("PTRACE_SINGLESTEP", PTRACE.SINGLESTEP, pid, 0, 0);
}
export function eventMessage(pid: number): bigint {
  ptrace("PTRACE_GETEVENTMSG", PTRACE.GETEVENTMSG, pid, 0, addressOf(io.word));
  return io.word[0]!;
}

/**
 * The buffers register sets travel through, made once: a dump or restore moves a few thousand of
 * them, and a fresh buffer (whose address Deno must then find) costs more than the ptrace call.
 */
const io = {
  iov: new BigUint64Array(2),
  word: new BigUint64Array(1),
  regs: new Uint8Array(USER_REGS_SIZE),
  xstate: new Uint8Array(16384),
};

/** Reads a regset into `buf`; returns how many bytes the kernel filled. */
function getRegset(pid: number, type: number, buf: Uint8Array<ArrayBuffer>): number {
  io.iov[0] = addressOf(buf);
  io.iov[1] = BigInt(buf.byteLength);
  ptrace("PTRACE_GETREGSET", PTRACE.GETREGSET, pid, type, addressOf(io.iov));
  return Number(io.iov[1]);
}
function setRegset(pid: number, type: number, buf: Uint8Array<ArrayBuffer>): void {
  io.iov[0] = addressOf(buf);
  io.iov[1] = BigInt(buf.byteLength);
  ptrace("PTRACE_SETREGSET", PTRACE.SETREGSET, pid, type, addressOf(io.iov));
}

export function getRegs(pid: number): Regs {
  const n = getRegset(pid, NT_PRSTATUS, io.regs);
  if (n !== USER_REGS_SIZE) throw new SyscallError("ptrace(PTRACE_GETREGSET)", 22, `short NT_PRSTATUS: ${n}`);
  return new Regs(new BigUint64Array(io.regs.slice().buffer));
}
export function setRegs(pid: number, regs: Regs): void {
  io.regs.set(regs.bytes());
  setRegset(pid, NT_PRSTATUS, io.regs);
}

/** The whole XSAVE area (x87, SSE, AVX, ... as the CPU has them); its size is the kernel's answer. */
export function getXstate(pid: number): Uint8Array<ArrayBuffer> {
  const n = getRegset(pid, NT_X86_XSTATE, io.xstate);
  return io.xstate.slice(0, n);
}
export function setXstate(pid: number, xstate: Uint8Array<ArrayBuffer>): void {
  if (xstate.byteLength > io.xstate.byteLength) {
    throw new SyscallError("ptrace(PTRACE_SETREGSET)", 22, `xstate of ${xstate.byteLength} bytes`);
  }
  io.xstate.set(xstate);
  setRegset(pid, NT_X86_XSTATE, io.xstate.subarray(0, xstate.byteLength));
}

export function getSigmask(pid: number): bigint {
  ptrace("PTRACE_GETSIGMASK", PTRACE.GETSIGMASK, pid, 8, addressOf(io.word));
  return io.word[0]!;
}
export function setSigmask(pid: number, mask: bigint): void {
  io.word[0] = mask;
  ptrace("PTRACE_SETSIGMASK", PTRACE.SETSIGMASK, pid, 8, addressOf(io.word));
}

/**
 * The si_code of the signal a tracee is stopped for: above 0 when the kernel made it (a trap of
 * the tracee's own instructions), 0 or below when a process sent it (kill, tgkill, sigqueue).
 */
export function stopSignalCode(pid: number): number {
  const buf = new Uint8Array(SIGINFO_SIZE);
  ptrace("PTRACE_GETSIGINFO", PTRACE.GETSIGINFO, pid, 0, addressOf(buf));
  return new DataView(buf.buffer).getInt32(8, true);
}

/** Queued signals, private (per-thread) or shared (process-wide), as raw 128-byte siginfo records. */
export function peekSiginfo(pid: number, shared: boolean): Uint8Array<ArrayBuffer>[] {
  const out: Uint8Array<ArrayBuffer>[] = [];
  const batch = 32;
  const buf = new Uint8Array(SIGINFO_SIZE * batch);
  for (;;) {
    const args = peeksiginfoArgs(out.length, shared, batch);
    const n = ptrace("PTRACE_PEEKSIGINFO", PTRACE.PEEKSIGINFO, pid, addressOf(args), addressOf(buf));
    for (let i = 0; i < n; i++) out.push(buf.slice(i * SIGINFO_SIZE, (i + 1) * SIGINFO_SIZE));
    // A short count is not the end: the kernel stops early when a signal is pending for us (a
    // profiler's SIGPROF, a script's SIGCHLD). Only an empty answer is.
    if (n === 0) return out;
  }
}

export function rseqConfiguration(pid: number) {
  const buf = new Uint8Array(RSEQ_CONFIG_SIZE);
  ptrace(
    "PTRACE_GET_RSEQ_CONFIGURATION",
    PTRACE.GET_RSEQ_CONFIGURATION,
    pid,
    RSEQ_CONFIG_SIZE,
    addressOf(buf),
  );
  return parseRseqConfig(buf);
}

/** One classic BPF filter of a task's seccomp stack (index 0 = the oldest), or null past the end. */
export function seccompFilter(pid: number, index: number): Uint8Array<ArrayBuffer> | null {
  const count = libc.ptrace(PTRACE.SECCOMP_GET_FILTER, pid, BigInt(index), 0n);
  if (count === -1n) {
    const errno = lastErrno();
    if (errno === 2) return null; // ENOENT: no filter at this index
    throw new SyscallError("ptrace(PTRACE_SECCOMP_GET_FILTER)", errno, `pid ${pid}`);
  }
  const buf = new Uint8Array(Number(count) * 8);
  ptrace("PTRACE_SECCOMP_GET_FILTER", PTRACE.SECCOMP_GET_FILTER, pid, index, addressOf(buf));
  return buf;
}

/** What waitpid reported for one task. */
export type WaitStatus =
  | { kind: "exited"; pid: number; code: number }
  | { kind: "signaled"; pid: number; signal: number }
  | { kind: "stopped"; pid: number; signal: number; event: number };

export function decodeStatus(pid: number, status: number): WaitStatus {
  const low = status & 0x7f;
  if (low === 0) return { kind: "exited", pid, code: (status >> 8) & 0xff };
  if ((status & 0xff) === 0x7f) {
    return { kind: "stopped", pid, signal: (status >> 8) & 0xff, event: status >>> 16 };
  }
  return { kind: "signaled", pid, signal: low };
}

const waitStatus = new Uint8Array(4);

/** waitpid with __WALL; returns null only with WNOHANG when nothing changed. Retries EINTR. */
export function wait(pid: number, flags = 0): WaitStatus | null {
  for (;;) {
    const r = libc.waitpid(pid, waitStatus, flags | WALL);
    if (r === -1) {
      const errno = lastErrno();
      if (errno === 4) continue;
      throw new SyscallError("waitpid", errno, `pid ${pid}`);
    }
    if (r === 0) return null;
    return decodeStatus(r, new Int32Array(waitStatus.buffer)[0]!);
  }
}

export function kill(pid: number, signal: number): void {
  call("kill", libc.kill(pid, signal), `pid ${pid}, signal ${signal}`);
}

/** tgkill(tgid, tid, sig): signals exactly one thread. */
export function tgkill(tgid: number, tid: number, signal: number): void {
  callBig(
    "tgkill",
    libc.syscall(BigInt(NR.tgkill), BigInt(tgid), BigInt(tid), BigInt(signal), 0n, 0n, 0n),
    `tid ${tid}`,
  );
}

/**
 * Collects the end of every task in `tids` (as tracer or parent), in whatever order they end.
 * Waiting on one at a time can deadlock: a dying PID-namespace init waits for its children, and
 * those wait for their tracer to take their exit first. Returns the tids still there at `timeoutMs`,
 * or as soon as every one left has been inside do_exit for `stuckMs` (see allStuckExiting).
 */
export function reapAll(tids: readonly number[], timeoutMs = 10000, stuckMs = Infinity): number[] {
  let pending = [...tids];
  const deadline = Date.now() + timeoutMs;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const exitingSince = new Map<number, number>();
  while (pending.length && Date.now() < deadline) {
    pending = pending.filter((tid) => {
      try {
        const st = wait(tid, WNOHANG);
        if (st === null) return true;
        if (st.kind === "stopped") {
          cont(tid, 0); // a stop on the way out (signal or event): let it go on dying
          return true;
        }
        return false;
      } catch {
        return false; // ECHILD: not ours to wait for, or already collected
      }
    });
    if (pending.length && stuckMs !== Infinity && allStuckExiting(pending, exitingSince, stuckMs)) break;
    if (pending.length) Atomics.wait(pause, 0, 0, 1);
  }
  return pending;
}

/** PF_EXITING in /proc/TID/stat's flags: the thread is inside do_exit. */
const PF_EXITING = 0x4;

/**
 * Whether every thread of `tids` has been inside do_exit for `stuckMs` or more (`since` keeps when
 * each was first seen there). An exit that long is waiting on something outside the tracer: a
 * PID namespace's init waits until every other task of its namespace is reaped, by a parent that
 * may be the caller of criu.
 */
function allStuckExiting(tids: readonly number[], since: Map<number, number>, stuckMs: number): boolean {
  const now = Date.now();
  return tids.every((tid) => {
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${tid}/stat`);
    } catch {
      return true; // gone meanwhile
    }
    const flags = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[6]);
    if (!(flags & PF_EXITING)) return false;
    if (!since.has(tid)) since.set(tid, now);
    return now - since.get(tid)! >= stuckMs;
  });
}
