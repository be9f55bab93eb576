/**
 * A task created as our sibling (a child of our parent), for --restore-sibling: clone3 with
 * CLONE_PARENT issued from our own process.
 *
 * The child must never run JavaScript. It gets a stack of its own whose top holds the address
 * of a two-byte spin loop (`jmp .`): when clone3 returns in the child, libc's syscall() wrapper
 * executes `ret`, which pops that address, and the child spins there until it is seized. All
 * signals are blocked around the call, so the child starts with every signal blocked too.
 */
import { addressOf, callBig, lastErrno, libc } from "./libc.ts";
import { cloneArgs } from "./structs.ts";
import { SyscallError } from "./errors.ts";
import { NR } from "./syscalls.ts";

const PAGE = 4096;
const CLONE_PARENT = 0x8000n;

/** Our own memory for the child: page 0 holds the spin loop, page 1 its stack. */
function trampoline(): { spin: bigint; stackLow: bigint } {
  const PROT_RWX = 7n;
  const MAP_PRIVATE_ANON = 0x22n;
  const base = callBig(
    "mmap",
    libc.syscall(BigInt(NR.mmap), 0n, BigInt(2 * PAGE), PROT_RWX, MAP_PRIVATE_ANON, -1n, 0n),
  );
  const ptr = Deno.UnsafePointer.create(BigInt(base))!;
  const mem = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, 2 * PAGE));
  mem.set([0xeb, 0xfe], 0); // jmp . (spin)
  const stackTopSlot = 2 * PAGE - 16;
  new DataView(mem.buffer).setBigUint64(stackTopSlot, BigInt(base), true); // ret → spin loop
  return { spin: BigInt(base), stackLow: BigInt(base) + BigInt(PAGE) };
}

let cached: { spin: bigint; stackLow: bigint } | null = null;

/**
 * Creates a sibling task spinning at a known address; `setTid` asks for its pid (0: any) and
 * `extraFlags` may add CLONE_NEWPID and CLONE_NEWNET. Returns its pid as our namespace sees it.
 */
export function cloneSibling(setTid: number, extraFlags = 0n): number {
  cached ??= trampoline();
  const { stackLow } = cached;
  const tid = new Int32Array([setTid]);
  // The child's stack pointer is stack + stack_size: the slot holding the spin address.
  const args = cloneArgs({
    flags: CLONE_PARENT | extraFlags,
    exitSignal: 0,
    stack: stackLow,
    stackSize: BigInt(PAGE - 16),
    setTid: setTid ? addressOf(tid) : 0n,
    setTidSize: setTid ? 1 : 0,
  });
  const all = new BigUint64Array([0xffffffffffffffffn]);
  const old = new BigUint64Array(1);
  callBig(
    "rt_sigprocmask",
    libc.syscall(BigInt(NR.rt_sigprocmask), 2n, addressOf(all), addressOf(old), 8n, 0n, 0n),
  );
  try {
    const r = libc.syscall(BigInt(NR.clone3), addressOf(args), BigInt(args.byteLength), 0n, 0n, 0n, 0n);
    if (r === -1n) {
      throw new SyscallError("clone3(CLONE_PARENT)", lastErrno(), setTid ? `pid ${setTid}` : undefined);
    }
    return Number(r);
  } finally {
    libc.syscall(BigInt(NR.rt_sigprocmask), 2n, addressOf(old), 0n, 8n, 0n, 0n);
  }
}

/** The address the sibling spins at, for checking it was seized where expected. */
export function siblingSpinAddress(): bigint {
  cached ??= trampoline();
  return cached.spin;
}
