/**
 * Puppets: the tasks a restore builds. A helper process (coreutils `sleep`, seized before it can
 * do anything of interest) gets a scratch page holding a `syscall` instruction; every restored task
 * is cloned, with its dumped PID, from the helper or from its already-created parent, so it
 * inherits that page and can be driven by remote syscalls until it becomes the dumped program.
 */
import * as pt from "../../ffi/ptrace.ts";
import { ERRNO, isSyscallError } from "../../ffi/errors.ts";
import { spawn } from "../../ffi/spawn.ts";
import { readMaps, readStatus } from "../../ffi/proc.ts";
import { cloneSibling } from "../../ffi/sibling.ts";
import { BATCH_CODE, BATCH_CODE_ROOM, findSyscallInstruction, RemoteThread } from "../../ffi/remote.ts";
import { ProcMem } from "../../ffi/memory.ts";
import {
  CLONE_ARGS_SIZE,
  cloneArgs,
  int32ArrayBytes,
  INT_SIZE,
  KERNEL_SIGSET_SIZE,
  KSIGACTION_SIZE,
} from "../../ffi/structs.ts";
import { CLONE, MAP, NR, PR, PROT, SIG } from "../../ffi/syscalls.ts";
import { Agent, type BatchCall } from "../agent.ts";
import { RestoreError } from "../errors.ts";
import type { Log } from "../log.ts";
import { TreePids } from "./free_pid.ts";

export const PUPPET_SCRATCH_SIZE = 64 * 1024;
/** The scratch page starts with `syscall` then `int3`s, then the batch runner; data goes after. */
const BATCH_AT = 16;
const CODE_BYTES = BATCH_AT + BATCH_CODE_ROOM;
/** Threads cloned per batch: each takes 160 bytes of scratch (its slot, set_tid and clone_args). */
const THREADS_PER_BATCH = 256;
/** The ptrace options of every restored thread (seccomp.ts adds SUSPEND_SECCOMP at the end). */
export const TRACE_OPTIONS = pt.PTRACE_O.TRACECLONE | pt.PTRACE_O.TRACEFORK | pt.PTRACE_O.TRACEVFORK |
  pt.PTRACE_O.EXITKILL;

function helperBinary(): string {
  for (const p of ["/bin/sleep", "/usr/bin/sleep"]) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // try the next
    }
  }
  throw new RestoreError("Restore needs coreutils' sleep (/bin/sleep) as its helper process");
}

/** The lowest 256 MiB-aligned address whose `size` bytes overlap none of `taken`. */
export function findFreeArea(size: bigint, taken: readonly { start: bigint; end: bigint }[]): bigint {
  const step = 0x10000000n;
  for (let at = step; at < 1n << 46n; at += step) {
    if (!taken.some((t) => t.start < at + size && at < t.end)) return at;
  }
  throw new RestoreError("No free address range for the restore's scratch area");
}

export class PuppetMaster {
  /** Every task created so far (helper excluded), in creation order. */
  readonly created: number[] = [];
  #helper: number;
  #helperAgent: Agent;

  private constructor(
    helper: number,
    helperAgent: Agent,
    readonly scratch: bigint,
    private readonly log: Log,
    /** The pids of the tree, which the restore's own tasks (the helper, the holders) must leave free. */
    readonly treePids: TreePids,
  ) {
    this.#helper = helper;
    this.#helperAgent = helperAgent;
  }

  /**
   * Starts the helper, at a pid none of `treePids`, and gives it a scratch area that avoids
   * `occupied` (the dumped layouts).
   */
  static start(
    occupied: readonly { start: bigint; end: bigint }[],
    log: Log,
    keepFds: readonly number[] = [],
    treePids = TreePids.none(),
  ): PuppetMaster {
    // It never runs its own code once seized, so its sleep is only how long it outlives a criu
    // killed before seizing it. `keepFds` reach it at the same numbers, for the tasks cloned from it.
    const fds: Record<number, number> = { 0: 0, 1: 1, 2: 2 };
    for (const fd of keepFds) fds[fd] = fd;
    const helper = treePids.createOutside(
      "the restore helper",
      () => spawn(helperBinary(), ["sleep", "5"], { fds }),
      (pid) => killAndReap([pid]),
    );
    try {
      pt.seize(helper, TRACE_OPTIONS);
      pt.interrupt(helper);
      const st = pt.wait(helper);
      if (st?.kind !== "stopped") {
        throw new RestoreError(`Restore helper ${helper} did not stop (${st?.kind})`);
      }
      const live = readMaps(helper);
      const scratch = findFreeArea(BigInt(PUPPET_SCRATCH_SIZE), [...occupied, ...live]);
      const vdso = live.find((m) => m.path === "[vdso]");
      if (!vdso) throw new RestoreError("The restore helper has no [vdso]");
      const agent = makeScratch(helper, scratch, vdso.start, vdso.end);
      log.debug(`Restore helper ${helper}, scratch at 0x${scratch.toString(16)}`);
      return new PuppetMaster(helper, agent, scratch, log, treePids);
    } catch (e) {
      killAndReap([helper]);
      throw e;
    }
  }

  /**
   * For --restore-sibling: the root is made first, as a sibling of ours (CLONE_PARENT from our
   * own process), and becomes the first puppet; there is no helper. `nsFlags` (CLONE_NEWPID,
   * CLONE_NEWNET) give it namespaces of its own (pid 1 in a new PID namespace). It starts with a
   * copy of our fd table: all but stdio and `keepFds` are closed in it at once, as the helper's
   * spawn does, so that no fd of ours (nor one our caller left us, like LXC's) reaches the tree.
   */
  static startSibling(
    rootPid: number,
    nsFlags: bigint,
    occupied: readonly { start: bigint; end: bigint }[],
    log: Log,
    keepFds: readonly number[] = [],
    treePids = TreePids.none(),
  ): PuppetMaster {
    const root = cloneSibling(nsFlags & BigInt(CLONE.NEWPID) ? 0 : rootPid, nsFlags);
    try {
      pt.seize(root, TRACE_OPTIONS);
      pt.interrupt(root);
      const st = pt.wait(root);
      if (st?.kind !== "stopped") throw new RestoreError(`Sibling root ${root} did not stop (${st?.kind})`);
      const live = readMaps(root);
      const scratch = findFreeArea(BigInt(PUPPET_SCRATCH_SIZE), [...occupied, ...live]);
      const vdso = live.find((m) => m.path === "[vdso]");
      if (!vdso) throw new RestoreError("The sibling root has no [vdso]");
      const agent = makeScratch(root, scratch, vdso.start, vdso.end);
      closeAllBut(agent, keepFds);
      agent.thread.leave();
      const master = new PuppetMaster(0, agent, scratch, log, treePids);
      master.created.push(root);
      master.#siblingRoot = root;
      log.debug(`Sibling root ${root}, scratch at 0x${scratch.toString(16)}`);
      return master;
    } catch (e) {
      killAndReap([root]);
      throw e;
    }
  }

  #siblingRoot = 0;

  /** The agent of a created task's main thread, running from the scratch page. */
  agentFor(pid: number, tid = pid): Agent {
    return new Agent(
      pid,
      RemoteThread.enter(tid, this.scratch),
      this.scratch + BigInt(CODE_BYTES),
      PUPPET_SCRATCH_SIZE - CODE_BYTES,
      false,
      this.scratch + BigInt(BATCH_AT),
    );
  }

  /**
   * Creates a task with PID `pid` (as its PID namespace sees it; or its pid in each namespace from
   * its own up, clone3's set_tid) and returns its pid in ours.
   * With no parent agent it is cloned from the helper with CLONE_PARENT, so it becomes our child;
   * otherwise it is a child of the parent's task. `extraFlags` may ask for CLONE_NEWPID or CLONE_NEWNET.
   */
  createTask(pid: number | readonly number[], parent: Agent | null, extraFlags = 0n): number {
    if (!parent && this.#siblingRoot) return this.#siblingRoot; // made by startSibling
    const from = parent ?? this.#helperAgent;
    const flags = (parent ? 0n : BigInt(CLONE.PARENT)) | extraFlags;
    const exitSignal = parent ? SIG.CHLD : 0;
    return this.#clone(from, pid, { flags, exitSignal });
  }

  /**
   * Creates threads `tids` (as the task's PID namespace sees them) in the task `leader` drives,
   * many per batch; returns their tids in ours. Each new thread stops before its first
   * instruction (it is traced from birth), so it never runs the batch code it was cloned in.
   */
  createThreads(leader: Agent, tids: readonly (number | readonly number[])[]): number[] {
    const flags = BigInt(CLONE.VM | CLONE.FS | CLONE.FILES | CLONE.SIGHAND | CLONE.THREAD | CLONE.SYSVSEM);
    const out: number[] = [];
    for (let at = 0; at < tids.length; at += THREADS_PER_BATCH) {
      const chunk = tids.slice(at, at + THREADS_PER_BATCH);
      leader.reset();
      const calls = chunk.map((ids) => {
        const chain = [ids].flat();
        const tid = chain[0]!;
        const setTid = leader.alloc(INT_SIZE * chain.length, int32ArrayBytes(chain));
        const args = leader.alloc(
          CLONE_ARGS_SIZE,
          cloneArgs({ flags, exitSignal: 0, setTid, setTidSize: chain.length }),
        );
        return { name: `clone3(thread ${tid})`, nr: NR.clone3, args: [args, CLONE_ARGS_SIZE] };
      });
      const before = leader.thread.children.length;
      let results: bigint[];
      try {
        results = leader.batch(calls);
      } catch (e) {
        // The batch stopped at the first clone that failed; the ones before it made threads.
        const failed = [chunk[leader.thread.children.length - before] ?? chunk[0]!].flat()[0]!;
        this.created.push(...leader.thread.children.splice(before).map((c) => c.pid));
        if (isSyscallError(e, "EEXIST")) {
          throw new RestoreError(`PID ${failed} is already in use${describeHolder(failed)}`, ERRNO.EEXIST);
        }
        throw new RestoreError(`Cannot create thread ${failed}: ${(e as Error).message}`);
      }
      const born = leader.thread.children.splice(before).map((c) => c.pid);
      this.created.push(...born);
      chunk.forEach((ids, i) => {
        const tid = [ids].flat()[0]!; // the leader's namespace answers: the thread's own
        if (results[i] !== BigInt(tid)) {
          throw new RestoreError(`Thread came back as ${results[i]}, not ${tid}`);
        }
        const child = born[i];
        if (child === undefined) throw new RestoreError(`No clone event for thread ${tid}`);
        const st = pt.wait(child);
        if (st?.kind !== "stopped") throw new RestoreError(`New thread ${child} did not stop (${st?.kind})`);
        out.push(child);
      });
    }
    return out;
  }

  #clone(from: Agent, ids: number | readonly number[], a: { flags: bigint; exitSignal: number }): number {
    const chain = [ids].flat();
    const pid = chain[0]!;
    from.reset();
    const setTid = from.alloc(INT_SIZE * chain.length, int32ArrayBytes(chain));
    const args = from.alloc(
      CLONE_ARGS_SIZE,
      cloneArgs({ flags: a.flags, exitSignal: a.exitSignal, setTid, setTidSize: chain.length }),
    );
    const r = from.attempt(`clone3(${pid})`, NR.clone3, args, CLONE_ARGS_SIZE);
    if (isSyscallError(r, "EEXIST")) {
      // A pid of a nested namespace is no pid of ours: there is no holder to name.
      const what = chain.length > 1
        ? `PIDs ${chain.join(", ")} (its own namespace first) are not all free`
        : `PID ${pid} is already in use${describeHolder(pid)}`;
      throw new RestoreError(what, r.errno);
    }
    if (isSyscallError(r)) {
      throw new RestoreError(`Cannot create task ${chain.join("/")}: ${r.message}`, 0, { cause: r });
    }
    // clone3 answers with the pid the parent's namespace sees; ptrace tells us ours.
    const child = from.thread.children.pop()?.pid;
    if (child === undefined) throw new RestoreError(`No clone event for task ${pid}`);
    this.created.push(child);
    if (chain.length > 1) {
      // Born below its creator's namespace: clone3 answered with the pid up there; /proc has all.
      const seen = nsPids(child).slice(-chain.length).reverse();
      if (seen.join() !== chain.join()) {
        throw new RestoreError(
          `Task came back as ${seen.join("/")}, not ${chain.join("/")} (innermost first)`,
        );
      }
    } else {
      const seen = a.flags & BigInt(CLONE.NEWPID) ? nsPids(child).at(-1) : Number(r);
      if (seen !== pid) throw new RestoreError(`Task came back as ${seen}, not ${pid}`);
    }
    // The new task starts in a ptrace stop of its own before running anything.
    const st = pt.wait(child);
    if (st?.kind !== "stopped") throw new RestoreError(`New task ${child} did not stop (${st?.kind})`);
    return child;
  }

  /**
   * Turns a created task into a zombie of its parent: it ends with the dumped wait status (an exit
   * code, or the signal that killed it) under its dumped name, and we, its tracer, take only our
   * own notification. As in CRIU, a signal that would not end a task (one ignored or stopping by
   * default) is replaced by SIGABRT, and a zombie's end never writes a core file.
   */
  makeZombie(pid: number, status: number, comm = ""): void {
    const agent = this.agentFor(pid);
    const signal = fatalSignal(status & 0x7f);
    agent.reset();
    const calls: BatchCall[] = [];
    if (comm) {
      calls.push({
        name: "prctl(PR_SET_NAME)",
        nr: NR.prctl,
        args: [PR.SET_NAME, agent.string(comm), 0, 0, 0],
      });
    }
    if (signal !== 0) {
      calls.push({ name: "prctl(PR_SET_DUMPABLE)", nr: NR.prctl, args: [PR.SET_DUMPABLE, 0, 0, 0, 0] });
      // The puppet's disposition is its creator's, which may ignore the signal (nohup): default it.
      if (signal !== SIG.KILL) {
        const dfl = agent.alloc(KSIGACTION_SIZE, new Uint8Array(KSIGACTION_SIZE));
        calls.push({
          name: `rt_sigaction(${signal})`,
          nr: NR.rt_sigaction,
          args: [signal, dfl, 0, KERNEL_SIGSET_SIZE],
        });
      }
    }
    agent.batch(calls);
    const regs = agent.thread.savedRegs.clone();
    if (signal === 0) {
      regs.set("ax", NR.exit_group);
      regs.set("di", (status >> 8) & 0xff);
      regs.set("orig_ax", -1);
      regs.set("ip", this.scratch);
      pt.setRegs(pid, regs);
      pt.cont(pid);
    } else {
      pt.setSigmask(pid, 0n);
      pt.kill(pid, signal);
      // SIGKILL ends a traced task from its stop by itself; any other signal it must be let take.
      if (signal !== SIG.KILL) pt.cont(pid);
    }
    for (;;) {
      const st = pt.wait(pid);
      if (!st || st.kind !== "stopped") break;
      try {
        pt.cont(pid, st.event === 0 ? st.signal : 0);
      } catch (e) {
        if (!isSyscallError(e, "ESRCH")) throw e; // killed meanwhile: its end is still to be taken
      }
    }
  }

  /** Ends the helper: it has done its job once the tree exists. */
  releaseHelper(): void {
    if (this.#helper === 0) return; // none in sibling mode
    this.#helperAgent.thread.leave();
    killAndReap([this.#helper]);
    this.#helper = 0;
  }

  /**
   * Runs `work` in the task the root will be cloned from, before that clone (a namespace the root
   * must be born in, see NsRestorePlan.inCreator). With --restore-sibling the root is made first,
   * from our own process, so there is no such task.
   */
  inCreator(work: (creator: Agent) => void, takesItself = false): void {
    if (this.#siblingRoot && takesItself) {
      // The namespace is its caller's own as well: the sibling root makes it for itself (LXC).
      const root = this.agentFor(this.#siblingRoot);
      try {
        work(root);
      } finally {
        root.thread.leave();
      }
      return;
    }
    if (this.#siblingRoot) {
      throw new RestoreError(
        "The checkpoint has a namespace that must exist before its root is created, which --restore-sibling cannot make (restore without it)",
      );
    }
    this.#helperAgent.reset();
    work(this.#helperAgent);
  }

  /** Kills every task created and the helper; nothing is left stopped or traced. */
  abort(): void {
    this.log.info(`Killing ${this.created.length} half-restored task(s)`);
    const victims = [...this.created].reverse();
    if (this.#helper) victims.push(this.#helper);
    killAndReap(victims);
    this.#helper = 0;
  }
}

/** Signals whose default action does not end a task: ignored (CHLD, CONT, URG, WINCH) or stopping. */
const NOT_FATAL: ReadonlySet<number> = new Set([
  SIG.CHLD,
  SIG.CONT,
  SIG.STOP,
  SIG.TSTP,
  SIG.TTIN,
  SIG.TTOU,
  SIG.URG,
  SIG.WINCH,
]);

/** The signal that ends a task as `signal` did (0: it exited). */
function fatalSignal(signal: number): number {
  return NOT_FATAL.has(signal) ? SIG.ABRT : signal;
}

/** A task's pid in each PID namespace from ours down to its own (NSpid). */
function nsPids(pid: number): number[] {
  const ns = (readStatus(pid).get("NSpid") ?? "").split(/\s+/).filter((s) => s).map(Number);
  return ns.length ? ns : [pid];
}

function describeHolder(pid: number): string {
  try {
    const comm = Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
    return ` by process ${pid} (${comm})`;
  } catch {
    return "";
  }
}

/** Maps the scratch area in the helper and writes `syscall; int3...` at its start. */
/** Closes every fd of the agent's task but stdio and `keep` (close_range over the gaps). */
function closeAllBut(agent: Agent, keep: readonly number[]): void {
  const LAST_FD = 0xffffffff; // close_range's "to the end" (~0U)
  const kept = [...new Set(keep)].filter((fd) => fd > 2).sort((a, b) => a - b);
  const ranges: [number, number][] = [];
  let from = 3;
  for (const fd of kept) {
    if (fd > from) ranges.push([from, fd - 1]);
    from = fd + 1;
  }
  ranges.push([from, LAST_FD]);
  agent.batch(
    ranges.map(([a, b]) => ({ name: `close_range(${a}, ${b})`, nr: NR.close_range, args: [a, b, 0] })),
  );
}

function makeScratch(helper: number, scratch: bigint, vdsoStart: bigint, vdsoEnd: bigint): Agent {
  const entry = RemoteThread.enter(helper, findSyscallInstruction(helper, vdsoStart, vdsoEnd));
  const at = entry.call(
    "mmap(puppet scratch)",
    NR.mmap,
    scratch,
    PUPPET_SCRATCH_SIZE,
    PROT.READ | PROT.WRITE | PROT.EXEC,
    MAP.PRIVATE | MAP.ANONYMOUS | MAP.FIXED_NOREPLACE,
    -1,
    0,
  );
  if (BigInt.asUintN(64, at) !== scratch) throw new RestoreError("Scratch area was placed elsewhere");
  const mem = new ProcMem(helper);
  const code = new Uint8Array(CODE_BYTES).fill(0xcc);
  code[0] = 0x0f;
  code[1] = 0x05;
  code.set(BATCH_CODE, BATCH_AT);
  mem.write(scratch, code);
  mem.close();
  // From now on the helper runs its syscalls from the scratch page, like every puppet.
  entry.syscallIp = scratch;
  return new Agent(
    helper,
    entry,
    scratch + BigInt(CODE_BYTES),
    PUPPET_SCRATCH_SIZE - CODE_BYTES,
    false,
    scratch + BigInt(BATCH_AT),
  );
}

/** SIGKILL, then collect every notification so no zombie or traced task stays behind. */
export function killAndReap(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      pt.kill(pid, SIG.KILL);
    } catch {
      // already gone
    }
  }
  pt.reapAll(pids);
}
