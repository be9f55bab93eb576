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
  ns: { pid: number; ppid: number; pgid: number; sid: number; threads: number[]; nested: NestedIds[] };
  state: TaskState;
  /** Exit status for zombies (the wait status code). */
  exitCode: number;
  /** For a stopped task, the signal that stopped it (SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU). */
  stopSigno?: number;
}

/**
 * A task's ids in one PID namespace nested below the tree's (0: not seen from there), in the
 * order of the namespaces from the tree's child down to the task's own.
 */
export interface NestedIds {
  pid: number;
  pgid: number;
  sid: number;
  threads: number[];
}

/** The signals whose default action stops a task: a group stop names one of them. */
const STOP_SIGNALS: ReadonlySet<number> = new Set([SIG.STOP, SIG.TSTP, SIG.TTIN, SIG.TTOU]);

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

  /**
   * Detaches leaving every task in a group stop (SIGSTOP), as --leave-stopped asks. A task that was
   * stopped already stays in its own stop: the detach puts it back there.
   */
  leaveStopped(): void {
    const alive = this.tasks.filter((t) => t.state === "alive").map((t) => t.pid);
    for (const pid of alive) pt.kill(pid, SIG.STOP);
    this.resume();
    waitUntilStopped(alive, this.log);
  }

  /** Kills every task of the tree and collects the tracer's notifications. */
  kill(): void {
    if (this.#released) return;
    this.#released = true;
    for (const t of this.tasks) if (t.state !== "zombie") pt.kill(t.pid, SIG.KILL);
    // A nested PID namespace's init ends only once its other members are reaped; one whose parent
    // ended belongs to criu's caller now, which reaps it only once criu is done.
    const left = pt.reapAll(this.#seized, 10000, EXIT_STUCK_MS);
    if (left.length) {
      this.log.info(`Tasks ${left.join(", ")} are still ending (waiting for other processes to be reaped)`);
    }
  }
}

/** How long killed tasks may stay inside their exit before criu stops waiting for them. */
const EXIT_STUCK_MS = 500;

/** How many times a thread found in an earlier criu's runner is let go home before giving up. */
const MAX_WAYS_HOME = 200;

/** How long a task let go with a stop signal may take to show it is stopped. */
const STOP_TIMEOUT_MS = 2000;

/**
 * Waits until every task of `pids` is in state T. A stop signal sent before the detach takes
 * effect once the task runs again, which a loaded machine may delay: whoever looks right after
 * criu returns must find the tasks stopped. A task that ends meanwhile is no longer waited for.
 */
export function waitUntilStopped(pids: readonly number[], log: Log): void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  let left = [...pids];
  while (left.length) {
    left = left.filter((pid) => {
      try {
        const state = readStat(pid).state;
        return state !== "T" && state !== "Z";
      } catch {
        return false; // gone
      }
    });
    if (left.length === 0) return;
    if (Date.now() > deadline) {
      log.warn(`Tasks ${left.join(", ")} are not stopped yet`);
      return;
    }
    Atomics.wait(pause, 0, 0, 1);
  }
}

/**
 * Seizes one thread and waits until it stops. Answers the signal of the group stop the thread is
 * in (0 when it is not stopped), or null when it ended meanwhile (it is gone, or a zombie).
 */
function seizeThread(tree: FrozenTree, pid: number, tid: number, log: Log): number | null {
  try {
    pt.seize(tid, 0);
  } catch (e) {
    // ESRCH: gone; EPERM on a task that has just become a zombie.
    if (isSyscallError(e, "ESRCH") || (isSyscallError(e, "EPERM") && isZombie(tid))) return null;
    // Seized already by us: a v1 --freeze-cgroup seizes the cgroup's threads while it is frozen.
    if (!isSyscallError(e, "EPERM") || readStatus(tid).get("TracerPid") !== `${Deno.pid}`) throw e;
  }
  tree.noteSeized(tid);
  pt.interrupt(tid);
  const stop = waitForTrap(pid, tid, 0, log);
  if (stop === null) tree.forget(tid);
  // A stopped task may have more SIGSTOPs queued (sent while it was stopped); they would stop our
  // remote syscalls (SIGSTOP cannot be blocked). /proc is asked only then: it costs a running
  // thread more than its whole seize.
  if (stop && sigstopPending(tid)) return takeQueuedSigstop(tree, tid, stop, log);
  return stop;
}

/**
 * Waits for the interrupt trap of a thread just resumed (or interrupted), delivering the signals
 * that come first. Answers the signal of the group stop it is in (0: none), or null if it ended.
 * `groupStop` is what an earlier trap said, for a SIGSTOP that comes in a stopped task.
 */
function waitForTrap(pid: number, tid: number, groupStop: number, log: Log): number | null {
  let waysHome = 0;
  let trapped: pt.WaitStatus | null = null;
  for (let i = 0; i < MAX_SIGNAL_RETRIES; i++) {
    const st = trapped ?? pt.wait(tid)!;
    trapped = null;
    if (st.kind !== "stopped") return null;
    if (st.event === pt.PTRACE_EVENT.STOP) {
      // A criu killed mid-dump may have left it in its runner, on its way back to its own
      // registers (held by a group stop, or not there yet): let it finish, then stop it again.
      if (inRunner(pid, pt.getRegs(tid).get("ip"))) {
        if (++waysHome > MAX_WAYS_HOME) {
          throw new DumpError(`Task ${tid} does not leave an earlier criu's code`);
        }
        log.debug(`Task ${tid} is on its way home from a killed criu; letting it go on`);
        pt.cont(tid, 0);
        // Longer each time (1 to 20 ms, some 3.5 s in all): a loaded machine may hold it a while.
        Atomics.wait(PAUSE, 0, 0, Math.min(waysHome, 20));
        // A task in a group stop when the earlier criu died had its stop armed again by the
        // kernel: it traps by itself before it runs one instruction, and only the next resume
        // lets it run. That trap is the next one; an interrupt now would arm one more each time.
        // Any other stop (the runner's end signal, reported at its home) or none yet needs the
        // interrupt, or the next wait would block for good.
        trapped = pt.wait(tid, pt.WNOHANG);
        if (trapped === null || (trapped.kind === "stopped" && trapped.event !== pt.PTRACE_EVENT.STOP)) {
          pt.interrupt(tid);
        }
        i--;
        continue;
      }
      // The trap of a task in a group stop carries the signal that stopped it.
      return STOP_SIGNALS.has(st.signal) ? st.signal : 0;
    }
    if (st.event === 0 && st.signal === SIG.STOP && groupStop !== 0) {
      // Stopped already: a second SIGSTOP changes nothing (SIGCONT would discard it), so it is
      // dropped rather than stopping the group a second time.
      log.debug(`Task ${tid} is stopped and had another SIGSTOP queued; dropping it`);
      pt.interrupt(tid);
      resume(tid, 0);
      continue;
    }
    // A signal was on its way in: let it be delivered (a stop signal then makes the group stop it
    // would have made without us), then take the pending interrupt stop.
    log.debug(`Task ${tid} had signal ${st.signal} in flight; delivering it before freezing`);
    resume(tid, st.signal);
  }
  throw new DumpError(`Task ${tid} keeps receiving signals; cannot freeze it`);
}

/**
 * Lets a trapped thread take the SIGSTOPs queued for it or its process, and brings it back to a
 * trap: in a stopped task they are dropped, in a running one the first stops the group as it
 * would have without us. Answers the group stop's signal.
 */
function takeQueuedSigstop(tree: FrozenTree, tid: number, groupStop: number, log: Log): number {
  let stop: number | null = groupStop;
  for (let i = 0; i < MAX_SIGNAL_RETRIES && stop !== null && sigstopPending(tid); i++) {
    resume(tid, 0);
    stop = waitForTrap(tid, tid, stop, log); // /proc/TID shows the process's mappings too
  }
  if (stop === null) {
    tree.forget(tid);
    throw new DumpError(`Task ${tid} ended while being frozen`, 3);
  }
  return stop;
}

/**
 * Resumes a thread from a ptrace stop. A SIGKILL may have taken it out of the stop meanwhile (its
 * parent killing it as we froze it): ptrace then answers ESRCH, and the next wait sees it end.
 */
function resume(tid: number, signal: number): void {
  try {
    pt.cont(tid, signal);
  } catch (e) {
    if (!isSyscallError(e, "ESRCH")) throw e;
  }
}

/** Is a SIGSTOP queued for the thread or its process (/proc status SigPnd, ShdPnd)? */
function sigstopPending(tid: number): boolean {
  const st = readStatus(tid);
  const bit = 1n << BigInt(SIG.STOP - 1);
  return ((BigInt("0x" + (st.get("SigPnd") ?? "0")) | BigInt("0x" + (st.get("ShdPnd") ?? "0"))) & bit) !== 0n;
}

function isZombie(pid: number): boolean {
  try {
    return readStat(pid).state === "Z";
  } catch {
    return false;
  }
}

/**
 * Seizes every thread of `pid`, rescanning until its thread list is stable; null if it ended.
 * `stopSigno` is the signal of the group stop the task is in, 0 when it runs.
 */
function seizeTask(tree: FrozenTree, pid: number, log: Log): { threads: number[]; stopSigno: number } | null {
  const seized = new Set<number>();
  let stopSigno = 0;
  for (;;) {
    const fresh = listThreads(pid).filter((t) => !seized.has(t));
    if (fresh.length === 0) return { threads: [...seized].sort((a, b) => a - b), stopSigno };
    for (const tid of fresh) {
      const stop = seizeThread(tree, pid, tid, log);
      if (stop !== null) {
        seized.add(tid);
        stopSigno ||= stop;
      } else if (tid === pid) return null; // a thread that ends meanwhile is no error; the leader is
    }
    // A running task may have a SIGSTOP on its way in, mostly process-wide: asked once, of the
    // leader (its own queue and the process's).
    if (fresh.includes(pid) && stopSigno === 0 && sigstopPending(pid)) {
      stopSigno = takeQueuedSigstop(tree, pid, 0, log);
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

/** The values of an NSpid/NSpgid/NSsid line of /proc/PID/status, criu's namespace first. */
function levels(status: Map<string, string>, key: string, fallback: number): number[] {
  const values = (status.get(key) ?? "").split(/\s+/).filter((v) => v).map(Number);
  return values.length ? values : [fallback];
}

/**
 * The ids of a task as the tree's PID namespace sees them (ppid is filled in by the caller), and
 * in each namespace nested below it down to the task's own. `level` is the tree's namespace's
 * place in NSpid lines (criu's own is 0).
 */
function namespaceIds(d: Described, threads: number[], level: number): FrozenTask["ns"] {
  const st = readStatus(d.pid);
  const pids = levels(st, "NSpid", d.pid);
  const pgids = levels(st, "NSpgid", d.pgid);
  const sids = levels(st, "NSsid", d.sid);
  // A task of our own PID namespace has one id per thread, ours: no need to ask each thread.
  const tids = threads.map((tid) => {
    if (tid === d.pid) return pids;
    return pids.length > 1 ? levels(readStatus(tid), "NSpid", tid) : [tid];
  });
  const at = (values: number[], i: number) => values[i] ?? 0;
  const nested: NestedIds[] = [];
  for (let i = level + 1; i < pids.length; i++) {
    nested.push({
      pid: at(pids, i),
      pgid: at(pgids, i),
      sid: at(sids, i),
      threads: tids.map((t) => at(t, i)),
    });
  }
  return {
    pid: at(pids, level),
    ppid: 0,
    pgid: at(pgids, level),
    sid: at(sids, level),
    threads: tids.map((t) => at(t, level)),
    nested,
  };
}

/** Where the tree's PID namespace (the root's own) sits in NSpid lines. */
function treeLevel(rootPid: number): number {
  try {
    return levels(readStatus(rootPid), "NSpid", rootPid).length - 1;
  } catch {
    return 0; // gone: describe() says so
  }
}

export function freezeTree(rootPid: number, log: Log): FrozenTree {
  const tree = new FrozenTree(log);
  let pid = rootPid;
  try {
    const level = treeLevel(rootPid);
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
        tree.tasks.push({ ...info, threads: [pid], ns: namespaceIds(info, [pid], level) });
        continue;
      }
      if (pid === Deno.pid) {
        throw new DumpError(
          `The tree of ${rootPid} holds criu itself (process ${pid}); criu cannot dump itself`,
        );
      }
      const seized = seizeTask(tree, pid, log);
      if (seized === null) {
        // It ended while we froze it. Its parent is frozen already, so it waits as a zombie.
        if (pid === rootPid || !isZombie(pid)) {
          throw new DumpError(`Process ${pid} ended while being frozen`, 3);
        }
        const now = describe(pid);
        tree.tasks.push({ ...now, threads: [pid], ns: namespaceIds(now, [pid], level) });
        continue;
      }
      const { threads, stopSigno } = seized;
      // What the traps said, not what /proc said before: a stop may have come in between.
      const state: TaskState = stopSigno ? "stopped" : "alive";
      tree.tasks.push({ ...info, state, stopSigno, threads, ns: namespaceIds(info, threads, level) });
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
