/**
 * A throwaway child for the probes that need another process: `sleep` started with posix_spawn
 * (no fd of ours reaches it), seized with PTRACE_O_EXITKILL (it dies with us, whatever happens),
 * stopped, and entered by an Agent so that probes can run syscalls in it. Probes may damage it
 * freely: `kill()` ends it and every task a probe made it create, and reaps them all.
 */
import { spawn } from "../../ffi/spawn.ts";
import * as pt from "../../ffi/ptrace.ts";
import { findSyscallInstruction } from "../../ffi/remote.ts";
import { type MapsEntry, readMaps } from "../../ffi/proc.ts";
import { isSyscallError, type SyscallError } from "../../ffi/errors.ts";
import { NR, SIG } from "../../ffi/syscalls.ts";
import { Agent } from "../agent.ts";

const SLEEP_PATHS = ["/usr/bin/sleep", "/bin/sleep"];
const SIGKILL = 9;

export const CHILD_PTRACE_OPTIONS = pt.PTRACE_O.EXITKILL | pt.PTRACE_O.TRACECLONE | pt.PTRACE_O.TRACEFORK;

function sleepBinary(): string {
  for (const p of SLEEP_PATHS) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // try the next one
    }
  }
  throw new Error(`No sleep binary for the probe child (looked at ${SLEEP_PATHS.join(", ")})`);
}

/**
 * Waits (briefly) until the child sits in its sleep: its libc is then set up (rseq registered) and
 * nothing in it is half done when it is stopped. Gives up quietly after 100 ms.
 */
function waitUntilSleeping(pid: number): void {
  const deadline = performance.now() + 100;
  while (performance.now() < deadline) {
    let nr: string;
    try {
      nr = Deno.readTextFileSync(`/proc/${pid}/syscall`).split(" ")[0]!;
    } catch {
      return;
    }
    if (nr === String(NR.clock_nanosleep) || nr === String(NR.nanosleep)) return;
  }
}

/** Sends SIGKILL to `pid` and waits until it is gone; quiet when it is gone already. */
function killAndReap(pid: number): void {
  try {
    pt.kill(pid, SIGKILL);
  } catch (e) {
    if (!isSyscallError(e, "ESRCH")) throw e;
  }
  for (;;) {
    let st;
    try {
      st = pt.wait(pid);
    } catch (e) {
      if (isSyscallError(e, "ECHILD")) return; // not ours to reap (or reaped already)
      throw e;
    }
    if (st && st.kind !== "stopped") return;
  }
}

export class ProbeChild {
  /** Tasks besides the child itself that must be killed and reaped with it. */
  readonly #extra = new Set<number>();
  #alive = true;

  private constructor(readonly pid: number, readonly agent: Agent, readonly vdso: MapsEntry) {}

  /** Starts, seizes and stops a child, and opens an agent in it. */
  static start(): ProbeChild {
    const pid = spawn(sleepBinary(), ["sleep", "60"], { fds: {}, env: {} });
    try {
      waitUntilSleeping(pid);
      pt.seize(pid, CHILD_PTRACE_OPTIONS);
      pt.interrupt(pid);
      for (;;) {
        const st = pt.wait(pid)!;
        if (st.kind !== "stopped") throw new Error(`Probe child ${pid} ended before it stopped`);
        if (st.event === pt.PTRACE_EVENT.STOP) break;
        pt.cont(pid, st.signal === SIG.STOP ? 0 : st.signal); // not the interrupt stop yet: let it on
      }
      const vdso = readMaps(pid).find((m) => m.path === "[vdso]");
      if (!vdso) throw new Error(`Probe child ${pid} has no [vdso]`);
      const agent = Agent.enter(pid, pid, findSyscallInstruction(pid, vdso.start, vdso.end));
      return new ProbeChild(pid, agent, vdso);
    } catch (e) {
      killAndReap(pid);
      throw e;
    }
  }

  /** Runs a syscall in the child; its result, or the SyscallError naming `name` when it failed. */
  attempt(name: string, nr: number, ...args: (bigint | number)[]): bigint | SyscallError {
    return this.agent.attempt(name, nr, ...args);
  }

  /** Runs a syscall in the child; throws a SyscallError naming `name` when it fails. */
  call(name: string, nr: number, ...args: (bigint | number)[]): bigint {
    return this.agent.call(name, nr, ...args);
  }

  /** Reserves scratch memory in the child, optionally filled with `data`. */
  alloc(len: number, data?: Uint8Array<ArrayBuffer>): bigint {
    return this.agent.alloc(len, data);
  }

  /** A NUL-terminated string in the child's scratch memory. */
  string(s: string): bigint {
    return this.agent.string(s);
  }

  /** Forgets earlier scratch allocations: each probe starts with the whole scratch area. */
  resetScratch(): void {
    this.agent.reset();
  }

  /** Where remote syscalls run from; changes when a probe moves the vDSO. */
  get syscallIp(): bigint {
    return this.agent.thread.syscallIp;
  }
  set syscallIp(ip: bigint) {
    this.agent.thread.syscallIp = ip;
  }

  read(addr: bigint, len: number): Uint8Array<ArrayBuffer> {
    return this.agent.read(addr, len);
  }

  maps(): MapsEntry[] {
    return readMaps(this.pid);
  }

  /** A task the child was made to create (a clone): it is killed and reaped with the child. */
  adopt(pid: number): void {
    this.#extra.add(pid);
  }

  /** Tasks created by remote clone/fork calls so far, as ptrace reported them. */
  get created(): number[] {
    return this.agent.thread.children.map((c) => c.pid);
  }

  /** Kills the child and every task adopted or created through it, and reaps them. */
  kill(): void {
    if (!this.#alive) return;
    this.#alive = false;
    for (const pid of this.created) this.#extra.add(pid);
    killAndReap(this.pid);
    for (const pid of this.#extra) killAndReap(pid);
  }
}

/** Runs `fn` with a fresh child and kills it afterwards, whatever happens. */
export function withChild<T>(fn: (child: ProbeChild) => T): T {
  const child = ProbeChild.start();
  try {
    return fn(child);
  } finally {
    child.kill();
  }
}
