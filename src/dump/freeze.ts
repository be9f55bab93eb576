/**
 * Freezing a process tree: every thread of every task is seized and stopped with PTRACE_INTERRUPT.
 * Thread and child lists are re-read until a pass finds nothing new, so tasks created while we
 * freeze are caught. Zombies cannot be seized and need not be: they are recorded as they are.
 */
import * as pt from "../../ffi/ptrace.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { listChildren, listThreads, readStat, readStatus } from "../../ffi/proc.ts";
import { inRunner } from "../../ffi/remote.ts";
import { SIG } from "../../ffi/syscalls.ts";
import { DumpError } from "../errors.ts";
import type { Log } from "../log.ts";

export type TaskState = "alive" | "zombie" | "stopped";

export interface FrozenTask {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  threads: number[];
  /**
   * The same ids as the tree's own PID namespace sees them, which is what images hold: equal to
   * the host ids unless the root is the init of a namespace of its own. 0 stands for a process
   * outside that namespace (the root's parent, a session leader outside it).
   */
  ns: { pid: number; ppid: number; pgid: number; sid: number; threads: number[] };
  state: TaskState;
  /** Exit status for zombies (the wait status code). */
  exitCode: number;
}

const MAX_SIGNAL_RETRIES = 64;
const PAUSE = new Int32Array(new SharedArrayBuffer(4));

export class FrozenTree {
  readonly tasks: FrozenTask[] = [];
  readonly #seized: number[] = [];
  #released = false;

  constructor(private readonly log: Log) {}

  get root(): FrozenTask {
    return this.tasks[0]!;
  }

  noteSeized(tid: number): void {
    this.#seized.push(tid);
  }

  /** A seized thread ended: there is nothing left to detach. */
  forget(tid: number): void {
    const i = this.#seized.indexOf(tid);
    if (i >= 0) this.#seized.splice(i, 1);
  }

  /** Detaches every thread; tasks run on (stopped ones stay stopped). */
  resume(): void {
    if (this.#released) return;
    this.#released = true;
    for (const tid of this.#seized) {
      try {
        pt.detach(tid);
      } catch (e) {
        this.log.warn(`Cannot detach ${tid}: ${(e as Error).message}`);
      }
    }
  }

  /** Detaches leaving every task in a group stop (SIGSTOP), as --leave-stopped asks. */
  leaveStopped(): void {
    for (const t of this.tasks) if (t.state !== "zombie") pt.kill(t.pid, SIG.STOP);
    this.resume();
  }

  /** Kills every task of the tree and collects the tracer's notifications. */
  kill(): void {
    if (this.#released) return;
    this.#released = true;
    for (const t of this.tasks) if (t.state !== "zombie") pt.kill(t.pid, SIG.KILL);
    const left = pt.reapAll(this.#seized);
    if (left.length) this.log.warn(`Tasks ${left.join(", ")} did not end after SIGKILL`);
  }
}

/** How many times a thread found in an earlier criu's runner is let go home before giving up. */
const MAX_WAYS_HOME = 200;

/** Seizes one thread and waits until it stops; false when it ended meanwhile (it is gone, or a zombie). */
function seizeThread(tree: FrozenTree, pid: number, tid: number, log: Log): boolean {
  try {
    pt.seize(tid, 0);
  } catch (e) {
    // ESRCH: gone; EPERM on a task that has just become a zombie.
    if (isSyscallError(e, "ESRCH") || (isSyscallError(e, "EPERM") && isZombie(tid))) return false;
    throw e;
  }
  tree.noteSeized(tid);
  pt.interrupt(tid);
  let waysHome = 0;
  for (let i = 0; i < MAX_SIGNAL_RETRIES; i++) {
    const st = pt.wait(tid)!;
    if (st.kind !== "stopped") {
      tree.forget(tid);
      return false;
    }
    if (st.event === pt.PTRACE_EVENT.STOP) {
      // A criu killed mid-dump may have left it in its runner, on its way back to its own
      // registers (held by a group stop, or not there yet): let it finish, then stop it again.
      if (!inRunner(pid, pt.getRegs(tid).get("ip"))) return true;
      if (++waysHome > MAX_WAYS_HOME) {
        throw new DumpError(`Task ${tid} does not leave an earlier criu's code`);
      }
      log.debug(`Task ${tid} is on its way home from a killed criu; letting it go on`);
      pt.cont(tid, 0);
      Atomics.wait(PAUSE, 0, 0, 1);
      pt.interrupt(tid);
      i--;
      continue;
    }
    // A signal was on its way in: let it be delivered, then take the pending interrupt stop.
    log.debug(`Task ${tid} had signal ${st.signal} in flight; delivering it before freezing`);
    pt.cont(tid, st.signal);
  }
  throw new DumpError(`Task ${tid} keeps receiving signals; cannot freeze it`);
}

function isZombie(pid: number): boolean {
  try {
    return readStat(pid).state === "Z";
  } catch {
    return false;
  }
}

/** Seizes every thread of `pid`, rescanning until its thread list is stable; null if it ended. */
function seizeTask(tree: FrozenTree, pid: number, log: Log): number[] | null {
  const seized = new Set<number>();
  for (;;) {
    const fresh = listThreads(pid).filter((t) => !seized.has(t));
    if (fresh.length === 0) return [...seized].sort((a, b) => a - b);
    for (const tid of fresh) {
      if (seizeThread(tree, pid, tid, log)) seized.add(tid);
      else if (tid === pid) return null; // a thread that ends meanwhile is no error; the leader is
    }
  }
}

type Described = Omit<FrozenTask, "threads" | "ns">;

function describe(pid: number): Described {
  const stat = readStat(pid);
  const state: TaskState = stat.state === "Z" ? "zombie" : stat.state === "T" ? "stopped" : "alive";
  return {
    pid,
    ppid: Number(stat.field(4)),
    pgid: Number(stat.field(5)),
    sid: Number(stat.field(6)),
    state,
    exitCode: Number(stat.field(52)),
  };
}

/** The innermost value of an NSpid/NSpgid/NSsid line of /proc/PID/status. */
function innermost(status: Map<string, string>, key: string, fallback: number): number {
  const values = (status.get(key) ?? "").split(/\s+/).filter((v) => v);
  return values.length ? Number(values[values.length - 1]) : fallback;
}

/** The ids of a task as its own PID namespace sees them (ppid is filled in by the caller). */
function namespaceIds(d: Described, threads: number[]): FrozenTask["ns"] {
  const st = readStatus(d.pid);
  // A task of our own PID namespace has one id per thread, ours: no need to ask each thread.
  const nested = (st.get("NSpid") ?? "").split(/\s+/).filter((v) => v).length > 1;
  return {
    pid: innermost(st, "NSpid", d.pid),
    ppid: 0,
    pgid: innermost(st, "NSpgid", d.pgid),
    sid: innermost(st, "NSsid", d.sid),
    threads: threads.map((tid) => {
      if (tid === d.pid) return innermost(st, "NSpid", tid);
      return nested ? innermost(readStatus(tid), "NSpid", tid) : tid;
    }),
  };
}

export function freezeTree(rootPid: number, log: Log): FrozenTree {
  const tree = new FrozenTree(log);
  let pid = rootPid;
  try {
    const queue = [rootPid];
    while (queue.length) {
      pid = queue.shift()!;
      let info: Described;
      try {
        info = describe(pid);
      } catch {
        throw new DumpError(`Process ${pid} does not exist`, 3);
      }
      if (info.state === "zombie") {
        tree.tasks.push({ ...info, threads: [pid], ns: namespaceIds(info, [pid]) });
        continue;
      }
      if (pid === Deno.pid) {
        throw new DumpError(
          `The tree of ${rootPid} holds criu itself (process ${pid}); criu cannot dump itself`,
        );
      }
      const threads = seizeTask(tree, pid, log);
      if (threads === null) {
        // It ended while we froze it. Its parent is frozen already, so it waits as a zombie.
        if (pid === rootPid || !isZombie(pid)) {
          throw new DumpError(`Process ${pid} ended while being frozen`, 3);
        }
        const now = describe(pid);
        tree.tasks.push({ ...now, threads: [pid], ns: namespaceIds(now, [pid]) });
        continue;
      }
      tree.tasks.push({ ...info, threads, ns: namespaceIds(info, threads) });
      for (const tid of threads) queue.push(...listChildren(pid, tid));
    }
    const vpid = new Map(tree.tasks.map((t) => [t.pid, t.ns.pid]));
    for (const t of tree.tasks) t.ns.ppid = vpid.get(t.ppid) ?? 0;
    return tree;
  } catch (e) {
    tree.resume();
    if (isSyscallError(e, "EPERM")) {
      throw new DumpError(`Cannot seize process ${pid}: ${e.message} (is it traced by someone else?)`);
    }
    if (isSyscallError(e, "ESRCH")) throw new DumpError(`Process ${rootPid} does not exist or exited`, 3);
    throw e;
  }
}
