/**
 * An agent is our hand inside a stopped task: remote syscalls run by one of its threads, plus a
 * scratch area in its address space for the structs and strings those syscalls read or fill.
 *
 * Dump (enterGuarded): the calls go through the guarded runner in the task's [vdso] (see
 * GuardedThread in ffi/remote.ts), which leaves the task able to go on as before should criu die
 * at any instant; the scratch area is read-write, at an address we pick, and unmapped when the
 * agent closes. Restore and `criu check` (enter, or a scratch area placed by the caller): the batch
 * runner (BATCH_CODE) sits in executable scratch and ends at an int3, a puppet being ours to
 * kill. Either way many syscalls cost one trap (see batch()).
 *
 * The agent keeps a copy of its scratch area: what alloc() puts there reaches the task in one write
 * just before the next syscall, and after a batch the whole used part comes back in one read, from
 * which the answers are taken. A batch of twenty queries thus costs two memory copies, not forty.
 */
import {
  BATCH_CODE,
  BATCH_CODE_ROOM,
  BATCH_NOT_RUN,
  BATCH_SLOT_WORDS,
  batchNrWord,
  findSyscallInstruction,
  GuardedThread,
  HOME,
  isRemoteError,
  RemoteThread,
  RUNNER,
  RUNNER_CODE,
  RUNNER_ROOM,
  type RunnerPlace,
  runnerPlace,
} from "../ffi/remote.ts";
import { ProcMem, readMemory, writeMemory } from "../ffi/memory.ts";
import { type MapsEntry, readMaps, readStatus } from "../ffi/proc.ts";
import { MAP, NR, PROT } from "../ffi/syscalls.ts";
import { ERRNO, isSyscallError, SyscallError } from "../ffi/errors.ts";

export const SCRATCH_SIZE = 64 * 1024;
/** A guarded agent keeps its fd word (GuardedThread.setFdWord) in the last word of its scratch. */
const GUARDED_SCRATCH = SCRATCH_SIZE - 8;
/** Calls per trap at most: a call takes 64 bytes of scratch in the batch's table. */
const BATCH_CALLS = 256;
/** BATCH_NOT_RUN as a signed result. */
const NOT_RUN = BigInt.asIntN(64, BATCH_NOT_RUN);
/** Room for the batch runner at the start of an agent's own scratch area. */
const CODE_ROOM = BATCH_CODE_ROOM;

/** One call of a batch: its name (for errors), number and arguments. */
export interface BatchCall {
  name: string;
  nr: number;
  args: readonly (bigint | number)[];
  /**
   * Argument `arg` is the result of the call `back` places earlier in the same batch (an fd it
   * made), filled in when this call runs: so a call can use what the one before returned without
   * a trap in between. With the batch stopping at the first failure, it is never an errno.
   */
  ref?: { arg: number; back: number };
}

/** Syscalls whose answer is read once they have run (in a batch with others): see Agent.ask(). */
export interface Query<T> {
  calls: BatchCall[];
  answer(results: readonly bigint[]): T;
}

type Answers<Q extends readonly Query<unknown>[]> = {
  [K in keyof Q]: Q[K] extends Query<infer R> ? R : never;
};

/** What alloc() throws when the scratch area is used up (see forThreads for who retries). */
class ScratchFullError extends SyscallError {
  constructor(needs: number, left: number) {
    super("agent scratch", ERRNO.ENOMEM, `needs ${needs} bytes, ${left} left`);
  }
}

/**
 * What a guarded agent (enterGuarded) keeps: the runner in [vdso], the signal that ends a batch,
 * and the home blocks of the task's other threads, past the scratch area proper.
 */
interface Guard {
  mem: ProcMem;
  place: RunnerPlace;
  /** The task's caught signals (SigCgt): each thread picks its quiet signal by them. */
  caught: bigint;
  /** The whole mapping: scratch, then the other threads' home blocks. */
  mapped: { addr: bigint; len: number };
  homes: bigint;
  homeSlots: number;
  nextSlot: number;
  /** Other threads entered and not left: while any is, the runner must stay. */
  inside: number;
}

const PAGE = 4096;

/**
 * A free range of `len` bytes in `pid`'s address space, as high as possible, as the kernel's own
 * top-down placement would pick: a page of distance from its neighbours, and none just above the
 * heap (brk grows there) or below a stack (its guard gap).
 */
function freeRange(pid: number, len: number, known?: readonly MapsEntry[]): bigint {
  const maps = [...(known ?? readMaps(pid))].sort((a, b) => (a.start < b.start ? -1 : 1));
  const need = BigInt(len + 2 * PAGE);
  for (let i = maps.length - 1; i > 0; i--) {
    const below = maps[i - 1]!;
    const above = maps[i]!;
    if (above.path === "[stack]" || above.path === "[vsyscall]" || below.path === "[heap]") continue;
    if (above.start - below.end >= need) return above.start - BigInt(PAGE + len);
  }
  throw new SyscallError("find scratch range", ERRNO.ENOMEM, `no free range of ${len} bytes in task ${pid}`);
}
const u64s = (...words: bigint[]) => new Uint8Array(BigUint64Array.from(words).buffer);

export class Agent {
  #next = 0;
  #ownsScratch: boolean;
  /** Calls queued by later(), for the next trap. */
  #later: BatchCall[] = [];
  /** Our copy of the used part of the scratch area; grows as allocations need. */
  #mirror = new Uint8Array(256);
  /** The part of the copy written since the last syscall, not yet in the task. */
  #dirtyFrom = Infinity;
  #dirtyTo = 0;
  /** The copy matches the task below this offset (read back after the last batch). */
  #freshTo = 0;
  /** Set when the agent runs through the guarded runner (enterGuarded). */
  #guard: Guard | null = null;

  constructor(
    readonly pid: number,
    readonly thread: RemoteThread,
    readonly scratch: bigint,
    readonly scratchSize: number,
    ownsScratch: boolean,
    /** Where BATCH_CODE is in the task. */
    readonly batchIp: bigint,
  ) {
    this.#ownsScratch = ownsScratch;
  }

  /** Enters a stopped thread and maps a scratch area in its process. */
  static enter(pid: number, tid: number, syscallIp: bigint): Agent {
    const thread = RemoteThread.enter(tid, syscallIp);
    try {
      const addr = BigInt.asUintN(
        64,
        thread.call(
          "mmap(scratch)",
          NR.mmap,
          0,
          SCRATCH_SIZE,
          PROT.READ | PROT.WRITE | PROT.EXEC,
          MAP.PRIVATE | MAP.ANONYMOUS,
          -1,
          0,
        ),
      );
      try {
        writeMemory(pid, addr, BATCH_CODE);
      } catch (e) {
        thread.raw(NR.munmap, addr, SCRATCH_SIZE);
        throw e;
      }
      return new Agent(pid, thread, addr + BigInt(CODE_ROOM), SCRATCH_SIZE - CODE_ROOM, true, addr);
    } catch (e) {
      thread.leave();
      throw e;
    }
  }

  /**
   * Enters a stopped task (its leader, in a PTRACE_INTERRUPT stop) so that it survives our death
   * at any instant: the calls go through the guarded runner (see GuardedThread in ffi/remote.ts),
   * placed in the padding of its [vdso]. `threads` is how many threads the task has: the others'
   * home blocks get room past the scratch area. `maps`, when the caller has them, spare a read.
   * A vDSO without room falls back to enter().
   */
  static enterGuarded(
    pid: number,
    vdsoStart: bigint,
    vdsoEnd: bigint,
    threads = 1,
    maps?: readonly MapsEntry[],
  ): Agent {
    let place: RunnerPlace;
    try {
      place = runnerPlace(pid, vdsoStart, vdsoEnd);
    } catch (e) {
      if (!isSyscallError(e, "ENOSPC")) throw e;
      return Agent.enter(pid, pid, findSyscallInstruction(pid, vdsoStart, vdsoEnd));
    }
    const caught = BigInt(`0x${readStatus(pid).get("SigCgt") ?? "0"}`);
    const mem = new ProcMem(pid);
    let thread: GuardedThread | null = null;
    try {
      mem.write(place.code, RUNNER_CODE);
      thread = GuardedThread.enterGuarded({
        tgid: pid,
        tid: pid,
        runner: place.code,
        home: place.home,
        caught,
        write: (addr, bytes) => mem.write(addr, bytes),
      });
      const homeSlots = Math.max(0, threads - 1);
      const len = SCRATCH_SIZE + Math.ceil((homeSlots * HOME.size) / PAGE) * PAGE;
      // The place is chosen here and noted in the home block before the mmap: a death at any
      // point, even while the mmap runs without us, ends with the leader's way home unmapping
      // it (the range is free otherwise, and the frozen task maps nothing meanwhile).
      const addr = freeRange(pid, len, maps);
      mem.write(place.home + BigInt(HOME.unmapAddr), u64s(addr, BigInt(len)));
      const flags = MAP.PRIVATE | MAP.ANONYMOUS | MAP.FIXED_NOREPLACE;
      const got = thread.raw(NR.mmap, addr, len, PROT.READ | PROT.WRITE, flags, -1, 0);
      if (got !== addr) {
        mem.write(place.home + BigInt(HOME.unmapLen), u64s(0n)); // not ours to unmap
        throw new SyscallError(
          "remote mmap(scratch)",
          isRemoteError(got) ? Number(-got) : ERRNO.EEXIST,
          `in task ${pid}`,
        );
      }
      thread.setFdWord(addr + BigInt(GUARDED_SCRATCH));
      const agent = new Agent(pid, thread, addr, GUARDED_SCRATCH, true, place.code + BigInt(RUNNER.batch));
      agent.#guard = {
        mem,
        place,
        caught,
        mapped: { addr, len },
        homes: addr + BigInt(SCRATCH_SIZE),
        homeSlots,
        nextSlot: 0,
        inside: 0,
      };
      return agent;
    } catch (e) {
      try {
        thread?.leave();
        mem.write(place.code, new Uint8Array(RUNNER_ROOM));
      } finally {
        mem.close();
      }
      throw e;
    }
  }

  /**
   * Enters other threads of this task, in PTRACE_INTERRUPT stops, for forThreads(). A guarded
   * agent gives each a home block; leave them with leaveThreads(). If one cannot be entered, those
   * entered are left before this throws.
   */
  enterThreads(tids: readonly number[]): RemoteThread[] {
    const g = this.#guard;
    const entered: RemoteThread[] = [];
    if (tids.length === 0) return entered;
    try {
      if (g) {
        if (g.nextSlot + tids.length > g.homeSlots) {
          throw new Error(`Task ${this.pid} has more threads than its agent has home blocks for`);
        }
        // Set before any thread is inside: the leader's way home then keeps the scratch area.
        g.mem.write(g.place.home + BigInt(HOME.othersInside), u64s(1n));
      }
      if (!g) {
        for (const tid of tids) entered.push(RemoteThread.enter(tid, this.thread.syscallIp));
        return entered;
      }
      // Every thread's state first, then all home blocks in one write, then the threads go over.
      const first = g.homes + BigInt(g.nextSlot * HOME.size);
      const ready = tids.map((tid) =>
        GuardedThread.prepareGuarded({
          tgid: this.pid,
          tid,
          runner: g.place.code,
          home: g.homes + BigInt(g.nextSlot++ * HOME.size),
          caught: g.caught,
          write: (addr, bytes) => writeMemory(this.pid, addr, bytes),
        })
      );
      const blocks = new Uint8Array(ready.length * HOME.size);
      ready.forEach((t, i) => blocks.set(t.homeBlock, i * HOME.size));
      writeMemory(this.pid, first, blocks);
      for (const t of ready) {
        t.land();
        entered.push(t);
        g.inside++;
      }
      return entered;
    } catch (e) {
      this.leaveThreads(entered);
      throw e;
    }
  }

  /** Leaves every thread, even when one of them fails; then throws the first failure. */
  leaveThreads(threads: readonly RemoteThread[]): void {
    let failure: unknown;
    // Guarded threads go to their interrupt stops all at once: one round trip, not one each.
    for (const t of threads) {
      try {
        if (t instanceof GuardedThread) t.startLeave();
      } catch {
        // leave() below tries again and reports it
      }
    }
    for (const t of threads) {
      try {
        t.leave();
        if (this.#guard && t instanceof GuardedThread) this.#guard.inside--;
      } catch (e) {
        failure ??= e;
      }
    }
    const g = this.#guard;
    if (g && g.inside === 0 && threads.length) {
      g.mem.write(g.place.home + BigInt(HOME.othersInside), u64s(0n));
    }
    if (failure !== undefined) throw failure;
  }

  get tid(): number {
    return this.thread.tid;
  }

  /**
   * Work in several threads of this task at once. For each thread, `start` builds its calls in an
   * agent that has `partSize` bytes of this agent's scratch to itself, sets them going
   * (startBatch, startAsk) and returns what collects them; collected results go to `take`, in
   * order, whenever the parts run out and at the end. So the threads run their batches (on
   * another CPU) while the next one is prepared. A thread whose calls do not fit its part waits
   * for the others and then has the whole area. Returns the threads' agents, still inside: the
   * caller leaves the threads (or kills them), also when this throws.
   */
  forThreads<T>(
    threads: readonly RemoteThread[],
    partSize: number,
    start: (a: Agent, i: number) => () => T,
    take: (result: T, i: number) => void = () => {},
  ): Agent[] {
    const parts = Math.floor(this.scratchSize / partSize);
    const agents: Agent[] = [];
    let running: { done: () => T; i: number }[] = [];
    const collect = () => {
      running.forEach(({ done, i }) => take(done(), i));
      running = [];
    };
    threads.forEach((thread, i) => {
      if (running.length === parts) collect();
      const part = (offset: number, size: number) =>
        new Agent(this.pid, thread, this.scratch + BigInt(offset), size, false, this.batchIp);
      agents[i] = part(running.length * partSize, partSize);
      let done: () => T;
      try {
        done = start(agents[i], i);
      } catch (e) {
        if (!(e instanceof ScratchFullError)) throw e;
        collect();
        agents[i] = part(0, this.scratchSize);
        done = start(agents[i], i);
      }
      running.push({ done, i });
    });
    collect();
    return agents;
  }

  /** Runs a syscall; throws a SyscallError naming `name` on failure. */
  call(name: string, nr: number, ...args: (bigint | number)[]): bigint {
    if (this.#later.length > 0) return this.#afterLater({ name, nr, args }, true);
    this.#flush();
    return this.thread.call(name, nr, ...args);
  }

  /**
   * Runs a syscall and answers its result or, not thrown, the SyscallError naming `name` that
   * call() would throw: for a caller that decides what a failure means (a best-effort close, an
   * errno it expects, which it names with isSyscallError(r, "EEXIST")).
   */
  attempt(name: string, nr: number, ...args: (bigint | number)[]): bigint | SyscallError {
    const r = this.#later.length > 0
      ? this.#afterLater({ name, nr, args }, false)
      : (this.#flush(), this.thread.raw(nr, ...args));
    return isRemoteError(r) ? this.#error(name, r) : r;
  }

  /** The SyscallError of `call` when `result`, its answer in a batch run with keepGoing, is a failure. */
  failureOf(call: BatchCall, result: bigint): SyscallError | undefined {
    return isRemoteError(result) ? this.#error(call.name, result) : undefined;
  }

  /**
   * Runs a syscall and returns its raw result (negative errno on failure). Only the agent's own
   * tests use it: callers above ffi/ go through call(), attempt() or later().
   */
  raw(nr: number, ...args: (bigint | number)[]): bigint {
    if (this.#later.length > 0) return this.#afterLater({ name: `syscall ${nr}`, nr, args }, false);
    this.#flush();
    return this.thread.raw(nr, ...args);
  }

  /**
   * Queues a call whose result nobody needs (a close, a madvise...): it runs at this agent's next
   * trap, before that trap's own calls, and a failure is thrown there, naming it. Each trap costs
   * a round trip through the scheduler, so a task restored with a dozen such calls saves a dozen.
   * The arguments must not point into scratch: scratch may be reused before the call runs.
   * Whatever looks at the task from outside must settle() first.
   */
  later(name: string, nr: number, ...args: (bigint | number)[]): void {
    this.#later.push({ name, nr, args });
  }

  /** Runs the queued calls now (no trap when there are none). */
  settle(): void {
    if (this.#later.length > 0) this.batch([]);
  }

  /** The queued calls and `last`, in as few traps as they fit; a failure of `last` is thrown only if `throws`. */
  #afterLater(last: BatchCall, throws: boolean): bigint {
    const calls = this.#takeLater();
    calls.push(last);
    return this.#runParts(calls, false, throws ? calls.length : calls.length - 1).at(-1)!;
  }

  #takeLater(): BatchCall[] {
    const calls = this.#later;
    this.#later = [];
    return calls;
  }

  /**
   * Sends the task what alloc() wrote. Whatever the task runs next may change its scratch, so
   * our copy is trusted again only after the next batch reads it back.
   */
  #flush(): void {
    if (this.#dirtyTo > this.#dirtyFrom) {
      writeMemory(
        this.pid,
        this.scratch + BigInt(this.#dirtyFrom),
        this.#mirror.subarray(this.#dirtyFrom, this.#dirtyTo),
      );
    }
    this.#dirtyFrom = Infinity;
    this.#dirtyTo = 0;
    this.#freshTo = 0;
  }

  /**
   * Runs `calls` in order and returns their raw results: up to BATCH_CALLS calls per trap. Unless
   * `keepGoing`, the batch stops at the first failure and throws a SyscallError naming that call;
   * with it, every call runs and failures come back as negative errnos. Arguments may point into
   * scratch allocated before this call.
   */
  batch(calls: readonly BatchCall[], keepGoing = false): bigint[] {
    // Queued calls never go on after a failure: under keepGoing they get a trap of their own.
    if (keepGoing) this.settle();
    const queued = this.#takeLater();
    const all = [...queued, ...calls];
    return this.#runParts(all, keepGoing, keepGoing ? 0 : all.length).slice(queued.length);
  }

  /**
   * Runs `calls` in parts of up to BATCH_CALLS, one trap each, and throws for the first failure
   * among the first `mustSucceed` calls (no later part runs then).
   */
  #runParts(calls: readonly BatchCall[], keepGoing: boolean, mustSucceed: number): bigint[] {
    const results: bigint[] = [];
    const tableAt = this.#next;
    for (let at = 0; at < calls.length; at += BATCH_CALLS) {
      this.#next = tableAt; // each part's table takes the room of the one before
      const part = calls.slice(at, at + BATCH_CALLS);
      const got = this.#runTable(part, keepGoing, results);
      const failed = got.findIndex((r, i) => at + i < mustSucceed && isRemoteError(r));
      if (failed >= 0) {
        this.#fail(part[failed]!, got[failed]!);
      }
      results.push(...got);
    }
    return results;
  }

  #fail(call: BatchCall, result: bigint): never {
    throw this.#error(call.name, result);
  }

  #error(name: string, result: bigint): SyscallError {
    return new SyscallError(`remote ${name}`, Number(-result), `in task ${this.tid}`);
  }

  /**
   * One trap: the calls' table goes to scratch, the batch runner walks it; returns the raw
   * results (BATCH_NOT_RUN for calls after a failure, unless `keepGoing`). `earlier` holds the
   * results of the parts before this one: a reference to one of them is filled in here.
   */
  #runTable(calls: readonly BatchCall[], keepGoing: boolean, earlier: readonly bigint[]): bigint[] {
    return calls.length === 0 ? [] : this.#startTable(calls, keepGoing, earlier)();
  }

  /** The first half of #runTable: the thread is set going; the function returned collects the results. */
  #startTable(calls: readonly BatchCall[], keepGoing: boolean, earlier: readonly bigint[]): () => bigint[] {
    const table = new BigUint64Array(calls.length * BATCH_SLOT_WORDS);
    calls.forEach((c, i) => {
      const slot = i * BATCH_SLOT_WORDS;
      const args = [...c.args];
      let ref = c.ref;
      if (ref) {
        const from = earlier.length + i - ref.back;
        if (ref.back < 1 || from < 0 || ref.arg < 0 || ref.arg > 5) {
          throw new Error(`Batch call ${c.name} refers to a result that does not come before it`);
        }
        if (ref.back > i) {
          args[ref.arg] = earlier[from]!;
          ref = undefined;
        }
      }
      table[slot] = batchNrWord(c.nr, ref);
      args.forEach((a, j) => table[slot + 1 + j] = BigInt.asUintN(64, BigInt(a)));
      table[slot + 7] = BATCH_NOT_RUN;
    });
    const addr = this.alloc(table.byteLength, new Uint8Array(table.buffer));
    this.#flush();
    this.thread.startBatch(this.batchIp, addr, calls.length, keepGoing);
    return () => {
      this.thread.waitBatch();
      readMemory(this.pid, this.scratch, this.#next, this.#mirror.subarray(0, this.#next));
      this.#freshTo = this.#next;
      const back = new BigUint64Array(this.read(addr, table.byteLength).buffer);
      const results = calls.map((_, i) => BigInt.asIntN(64, back[i * BATCH_SLOT_WORDS + 7]!));
      // A call is left unrun only after a failure; otherwise its slot must never pass for a result.
      const unrun = results.findIndex((r) => r === NOT_RUN);
      if (unrun >= 0 && !results.slice(0, unrun).some(isRemoteError)) {
        throw new SyscallError(
          `remote ${calls[unrun]!.name}`,
          ERRNO.EINTR,
          `the batch in task ${this.tid} ended before it`,
        );
      }
      return results;
    };
  }

  /** Runs the calls of every query for one trap (stopping at the first failure), then reads each answer. */
  ask<const Q extends readonly Query<unknown>[]>(queries: Q): Answers<Q> {
    return this.#answer(queries, this.batch(queries.flatMap((q) => q.calls)));
  }

  /**
   * batch() in two halves: the thread starts on the calls at once and runs them while the caller
   * goes on (say, to start the next thread's); the function returned waits for them and answers
   * their results, throwing for the first failure. Nothing else may be asked of this agent in
   * between. No calls, or more than one trap's worth, simply run now.
   */
  startBatch(calls: readonly BatchCall[]): () => bigint[] {
    const total = this.#later.length + calls.length;
    if (total === 0 || total > BATCH_CALLS) {
      const results = this.batch(calls);
      return () => results;
    }
    const queued = this.#takeLater();
    const all = [...queued, ...calls];
    const collect = this.#startTable(all, false, []);
    return () => {
      const got = collect();
      const failed = got.findIndex(isRemoteError);
      if (failed >= 0) this.#fail(all[failed]!, got[failed]!);
      return got.slice(queued.length);
    };
  }

  /** ask() in two halves, as startBatch() is batch(). */
  startAsk<const Q extends readonly Query<unknown>[]>(queries: Q): () => Answers<Q> {
    const collect = this.startBatch(queries.flatMap((q) => q.calls));
    return () => this.#answer(queries, collect());
  }

  #answer<const Q extends readonly Query<unknown>[]>(queries: Q, results: readonly bigint[]): Answers<Q> {
    let at = 0;
    return queries.map((q) => {
      const mine = results.slice(at, at + q.calls.length);
      at += q.calls.length;
      return q.answer(mine);
    }) as Answers<Q>;
  }

  /** A query for a syscall that fills a scratch buffer of `len` bytes; the answer is the buffer. */
  fetchQuery(
    name: string,
    len: number,
    build: (buf: bigint) => [number, ...(bigint | number)[]],
  ): Query<Uint8Array<ArrayBuffer>> {
    const buf = this.alloc(len, new Uint8Array(len));
    const [nr, ...args] = build(buf);
    return { calls: [{ name, nr, args }], answer: () => this.read(buf, len) };
  }

  /** A query whose answer is the syscall's result. */
  resultQuery(name: string, nr: number, ...args: (bigint | number)[]): Query<bigint> {
    return { calls: [{ name, nr, args }], answer: ([r]) => r! };
  }

  /** Forgets every scratch allocation; call between independent groups of syscalls. */
  reset(): void {
    this.#next = 0;
  }

  /** Reserves `len` bytes of scratch (8-byte aligned), optionally filled with `data`. */
  alloc(len: number, data?: Uint8Array): bigint {
    const start = (this.#next + 7) & ~7;
    if (start + len > this.scratchSize) {
      throw new ScratchFullError(len, this.scratchSize - start);
    }
    this.#next = start + len;
    if (this.#next > this.#mirror.length) {
      const bigger = new Uint8Array(
        Math.min(this.scratchSize, Math.max(this.#next, this.#mirror.length * 2)),
      );
      bigger.set(this.#mirror);
      this.#mirror = bigger;
    }
    if (data) {
      this.#mirror.set(data.subarray(0, len), start);
      this.#dirtyFrom = Math.min(this.#dirtyFrom, start);
      this.#dirtyTo = Math.max(this.#dirtyTo, start + len);
    }
    return this.scratch + BigInt(start);
  }

  /** A NUL-terminated string placed in scratch. */
  string(s: string): bigint {
    const bytes = new TextEncoder().encode(s);
    const buf = new Uint8Array(bytes.length + 1);
    buf.set(bytes);
    return this.alloc(buf.length, buf);
  }

  /** Reads task memory: scratch read back after a batch comes from our copy. */
  read(addr: bigint, len: number): Uint8Array<ArrayBuffer> {
    const at = Number(addr - this.scratch);
    if (addr >= this.scratch && at + len <= this.#freshTo) return this.#mirror.slice(at, at + len);
    this.#flush(); // what alloc() wrote must be there to be read
    return readMemory(this.pid, addr, len);
  }

  /** Runs a syscall that fills a scratch buffer of `len` bytes; returns the result and the buffer. */
  fetch(
    name: string,
    len: number,
    build: (buf: bigint) => [number, ...(bigint | number)[]],
  ): Uint8Array<ArrayBuffer> {
    const buf = this.alloc(len, new Uint8Array(len));
    const [nr, ...args] = build(buf);
    this.call(name, nr, ...args);
    return this.read(buf, len);
  }

  /**
   * Unmaps the area that holds the batch runner (the scratch), once the queued calls are done: on
   * its own, since a batch cannot unmap the code it runs from.
   */
  unmapRunner(addr: bigint, len: number): void {
    this.settle();
    this.thread.call("munmap(scratch)", NR.munmap, addr, len);
  }

  /** Unmaps the scratch area (when it is ours) and puts the thread back as it was. */
  leave(): void {
    if (this.#guard) return this.#leaveGuarded(this.#guard);
    try {
      if (this.#ownsScratch) this.unmapRunner(this.scratch - BigInt(CODE_ROOM), this.scratchSize + CODE_ROOM);
      else this.settle();
    } finally {
      this.thread.leave();
    }
  }

  /**
   * The guarded leader leaves: the scratch area is unmapped by a call from the runner (which is
   * not in it), the thread is put back, and the runner's bytes in [vdso] are zeroed again, unless
   * a thread that could not be left still needs them.
   */
  #leaveGuarded(g: Guard): void {
    try {
      this.settle();
      (this.thread as GuardedThread).setFdWord(0n);
      this.thread.call("munmap(scratch)", NR.munmap, g.mapped.addr, g.mapped.len);
      g.mem.write(g.place.home + BigInt(HOME.unmapLen), u64s(0n));
    } finally {
      try {
        this.thread.leave();
        if (g.inside === 0) g.mem.write(g.place.code, new Uint8Array(RUNNER_ROOM));
      } finally {
        g.mem.close();
      }
    }
  }
}
