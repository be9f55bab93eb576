/**
 * An agent is our hand inside a stopped task: remote syscalls run by one of its threads, plus a
 * scratch area in its address space for the structs and strings those syscalls read or fill.
 *
 * Dump: the scratch area is mapped at an address the kernel picks and unmapped when the agent
 * closes, so the task is left as found. Restore: the puppet's scratch area is placed by the caller
 * and also holds the `syscall` instruction the agent runs.
 */
import { isRemoteError, RemoteThread } from "../ffi/remote.ts";
import { readMemory, writeMemory } from "../ffi/memory.ts";
import { MAP, NR, PROT } from "../ffi/syscalls.ts";
import { SyscallError } from "../ffi/errors.ts";

export const SCRATCH_SIZE = 64 * 1024;

export class Agent {
  #next = 0;
  #ownsScratch: boolean;

  constructor(
    readonly pid: number,
    readonly thread: RemoteThread,
    readonly scratch: bigint,
    readonly scratchSize: number,
    ownsScratch: boolean,
  ) {
    this.#ownsScratch = ownsScratch;
  }

  /** Enters a stopped thread and maps a scratch area in its process. */
  static enter(pid: number, tid: number, syscallIp: bigint): Agent {
    const thread = RemoteThread.enter(tid, syscallIp);
    try {
      const addr = thread.call(
        "mmap(scratch)",
        NR.mmap,
        0,
        SCRATCH_SIZE,
        PROT.READ | PROT.WRITE,
        MAP.PRIVATE | MAP.ANONYMOUS,
        -1,
        0,
      );
      return new Agent(pid, thread, BigInt.asUintN(64, addr), SCRATCH_SIZE, true);
    } catch (e) {
      thread.leave();
      throw e;
    }
  }

  get tid(): number {
    return this.thread.tid;
  }

  /** Runs a syscall; throws a SyscallError naming `name` on failure. */
  call(name: string, nr: number, ...args: (bigint | number)[]): bigint {
    return this.thread.call(name, nr, ...args);
  }

  /** Runs a syscall and returns its raw result (negative errno on failure). */
  raw(nr: number, ...args: (bigint | number)[]): bigint {
    return this.thread.raw(nr, ...args);
  }

  /** Forgets every scratch allocation; call between independent groups of syscalls. */
  reset(): void {
    this.#next = 0;
  }

  /** Reserves `len` bytes of scratch (8-byte aligned), optionally filled with `data`. */
  alloc(len: number, data?: Uint8Array<ArrayBuffer>): bigint {
    const start = (this.#next + 7) & ~7;
    if (start + len > this.scratchSize) {
      throw new SyscallError("agent scratch", 12, `needs ${len} bytes, ${this.scratchSize - start} left`);
    }
    this.#next = start + len;
    const addr = this.scratch + BigInt(start);
    if (data) writeMemory(this.pid, addr, data);
    return addr;
  }

  /** A NUL-terminated string placed in scratch. */
  string(s: string): bigint {
    const bytes = new TextEncoder().encode(s);
    const buf = new Uint8Array(bytes.length + 1);
    buf.set(bytes);
    return this.alloc(buf.length, buf);
  }

  read(addr: bigint, len: number): Uint8Array<ArrayBuffer> {
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

  /** Unmaps the scratch area (when it is ours) and puts the thread back as it was. */
  leave(): void {
    try {
      if (this.#ownsScratch) {
        const r = this.thread.raw(NR.munmap, this.scratch, this.scratchSize);
        if (isRemoteError(r)) throw new SyscallError("remote munmap(scratch)", Number(-r));
      }
    } finally {
      this.thread.leave();
    }
  }
}
