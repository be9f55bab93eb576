import assert from "node:assert/strict";
import { spawn } from "./spawn.ts";
import * as pt from "./ptrace.ts";
import { findSyscallInstruction, RemoteThread } from "./remote.ts";
import { readMaps, readStat } from "./proc.ts";
import { NR } from "./syscalls.ts";
import { readMemory, writeMemory } from "./memory.ts";
import { addressOf, libc } from "./libc.ts";
import { isSyscallError } from "./errors.ts";

function startSleep(): number {
  const pid = spawn("/bin/sleep", ["sleep", "60"], { setsid: true });
  // posix_spawn returns once the child has exec'd; wait until it sleeps.
  for (let i = 0; i < 500 && readStat(pid).state !== "S"; i++) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
  }
  return pid;
}

function seized(pid: number): RemoteThread {
  pt.seize(pid, 0);
  pt.interrupt(pid);
  const st = pt.wait(pid);
  assert.equal(st?.kind, "stopped");
  const vdso = readMaps(pid).find((m) => m.path === "[vdso]")!;
  return RemoteThread.enter(pid, findSyscallInstruction(pid, vdso.start, vdso.end));
}

function finish(pid: number): void {
  pt.kill(pid, 9);
  while (pt.wait(pid)?.kind === "stopped") { /* collect the stop reports */ }
}

Deno.test("remote syscalls read brk and a sigaction and leave the task running as before", () => {
  const pid = startSleep();
  try {
    const statBefore = Deno.readTextFileSync(`/proc/${pid}/status`).match(/SigBlk:.*/)![0];
    const r = seized(pid);
    const regsBefore = r.savedRegs.clone();
    assert.equal(r.call("getpid", NR.getpid), BigInt(pid));
    const brk = r.call("brk", NR.brk, 0);
    const heap = readMaps(pid).find((m) => m.path === "[heap]");
    if (heap) assert.equal(brk, heap.end);
    // rt_sigaction(SIGTERM, NULL, &old) into a scratch mapping of the task
    const scratch = BigInt.asUintN(64, r.call("mmap", NR.mmap, 0, 4096, 3, 0x22, -1, 0));
    writeMemory(pid, scratch, new Uint8Array(32).fill(0xaa));
    r.call("rt_sigaction", NR.rt_sigaction, 15, 0, scratch, 8);
    const act = new DataView(readMemory(pid, scratch, 32).buffer);
    assert.equal(act.getBigUint64(0, true), 0n, "SIGTERM is SIG_DFL in sleep");
    r.call("munmap", NR.munmap, scratch, 4096);
    r.leave();
    assert.deepEqual([...pt.getRegs(pid).raw], [...regsBefore.raw]);
    pt.detach(pid);
    assert.equal(Deno.readTextFileSync(`/proc/${pid}/status`).match(/SigBlk:.*/)![0], statBefore);
    assert.ok(!readMaps(pid).some((m) => m.start === scratch), "the scratch mapping is gone");
    assert.match(readStat(pid).state, /[SR]/);
  } finally {
    finish(pid);
  }
});

Deno.test("a failing remote syscall reports its errno by name", () => {
  const pid = startSleep();
  try {
    const r = seized(pid);
    assert.throws(() => r.call("close", NR.close, 12345), (e) => isSyscallError(e, "EBADF"));
    r.leave();
    pt.detach(pid);
  } finally {
    finish(pid);
  }
});

Deno.test("spawn() hands the child only the fds it names", () => {
  const pid = spawn("/bin/sleep", ["sleep", "60"], { fds: { 0: 0 }, setsid: true });
  try {
    for (let i = 0; i < 500 && readStat(pid).state !== "S"; i++) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
    }
    const fds = [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) =>
      `${e.name} -> ${Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`)}`
    );
    assert.equal(fds.length, 1, `the child holds ${fds.join(", ")}`);
    assert.match(fds[0]!, /^0 -> /);
  } finally {
    finish(pid);
  }
});

/** A timer that signals this very thread every `us` microseconds, so its syscalls see a signal pending. */
function signalStorm(us: number): () => void {
  const onSignal = () => {};
  Deno.addSignalListener("SIGURG", onSignal);
  const tid = Number(libc.syscall(BigInt(NR.gettid), 0n, 0n, 0n, 0n, 0n, 0n));
  const event = new DataView(new ArrayBuffer(64)); // struct sigevent
  event.setInt32(8, 23, true); // sigev_signo = SIGURG, ignored by default should one come late
  event.setInt32(12, 4, true); // sigev_notify = SIGEV_THREAD_ID
  event.setInt32(16, tid, true);
  const id = new Int32Array(1);
  const ev = new Uint8Array(event.buffer);
  assert.equal(libc.syscall(BigInt(NR.timer_create), 1n, addressOf(ev), addressOf(id), 0n, 0n, 0n), 0n);
  const spec = new BigInt64Array([0n, BigInt(us * 1000), 0n, BigInt(us * 1000)]); // interval, first
  libc.syscall(BigInt(NR.timer_settime), BigInt(id[0]!), 0n, addressOf(spec), 0n, 0n, 0n);
  return () => {
    libc.syscall(BigInt(NR.timer_delete), BigInt(id[0]!), 0n, 0n, 0n, 0n, 0n);
    Deno.removeSignalListener("SIGURG", onSignal);
  };
}

Deno.test("peekSiginfo() reads the whole queue while signals interrupt the tracer", () => {
  const pid = startSleep();
  const count = 2000;
  try {
    seized(pid).leave();
    const info = new Int32Array(32); // siginfo: SIGRTMIN+1, SI_QUEUE, from us
    info[0] = 35;
    info[2] = -1;
    info[4] = Deno.pid;
    for (let i = 0; i < count; i++) {
      info[6] = i; // si_value
      const r = libc.syscall(BigInt(NR.rt_sigqueueinfo), BigInt(pid), 35n, addressOf(info), 0n, 0n, 0n);
      assert.equal(r, 0n, `queueing signal ${i}`);
    }
    // Every 200 µs: often enough to cut the reads short, seldom enough that a slow machine still
    // gets between two signals (at 50 µs a busy VM spent all its time in the handler).
    const stop = signalStorm(200);
    let got;
    try {
      got = pt.peekSiginfo(pid, true);
    } finally {
      stop();
    }
    assert.equal(got.length, count);
    assert.deepEqual(got.map((s) => new Int32Array(s.buffer)[6]), [...Array(count).keys()]);
  } finally {
    finish(pid);
  }
});
