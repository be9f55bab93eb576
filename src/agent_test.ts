import assert from "node:assert/strict";
import { spawn } from "../ffi/spawn.ts";
import * as pt from "../ffi/ptrace.ts";
import { findSyscallInstruction } from "../ffi/remote.ts";
import { readMaps, readStat } from "../ffi/proc.ts";
import { NR, PR } from "../ffi/syscalls.ts";
import { isSyscallError } from "../ffi/errors.ts";
import { Agent } from "./agent.ts";

function seizedSleep(): { pid: number; agent: Agent } {
  const pid = spawn("/bin/sleep", ["sleep", "60"], { setsid: true });
  for (let i = 0; i < 500 && readStat(pid).state !== "S"; i++) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
  }
  pt.seize(pid, 0);
  pt.interrupt(pid);
  assert.equal(pt.wait(pid)?.kind, "stopped");
  const vdso = readMaps(pid).find((m) => m.path === "[vdso]")!;
  return { pid, agent: Agent.enter(pid, pid, findSyscallInstruction(pid, vdso.start, vdso.end)) };
}

function finish(pid: number): void {
  pt.kill(pid, 9);
  while (pt.wait(pid)?.kind === "stopped") { /* collect the stop reports */ }
}

const comm = (pid: number) => Deno.readTextFileSync(`/proc/${pid}/comm`).trim();

Deno.test("Agent.batch() runs every call for one trap and stops at the first failure", () => {
  const { pid, agent } = seizedSleep();
  try {
    const regs = agent.thread.savedRegs.clone();
    const name = agent.string("renamed");
    const rename = { name: "prctl(PR_SET_NAME)", nr: NR.prctl, args: [PR.SET_NAME, name, 0, 0, 0] };
    const [self, brk] = agent.batch([
      { name: "getpid", nr: NR.getpid, args: [] },
      { name: "brk", nr: NR.brk, args: [0] },
    ]);
    assert.equal(self, BigInt(pid));
    assert.ok(brk! > 0n);
    assert.throws(
      () => agent.batch([{ name: "close(12345)", nr: NR.close, args: [12345] }, rename]),
      (e) => isSyscallError(e, "EBADF") && /remote close\(12345\)/.test(e.message),
    );
    assert.equal(comm(pid), "sleep", "a call after the failure ran");
    const results = agent.batch([{ name: "close(12345)", nr: NR.close, args: [12345] }, rename], true);
    assert.deepEqual(results, [-9n, 0n]);
    assert.equal(comm(pid), "renamed");
    agent.leave();
    assert.deepEqual([...pt.getRegs(pid).raw], [...regs.raw]);
    assert.ok(!readMaps(pid).some((m) => m.start === agent.batchIp), "the scratch mapping is gone");
    pt.detach(pid);
    assert.match(readStat(pid).state, /[SR]/);
  } finally {
    finish(pid);
  }
});

Deno.test("Agent.batch() takes more calls than one trap holds, in order, stopping at a failure", () => {
  const { pid, agent } = seizedSleep();
  try {
    const name = agent.string("late");
    const getpids = Array.from({ length: 600 }, () => ({ name: "getpid", nr: NR.getpid, args: [] }));
    const results = agent.batch([...getpids, {
      name: "prctl(PR_SET_NAME)",
      nr: NR.prctl,
      args: [PR.SET_NAME, name, 0, 0, 0],
    }]);
    assert.equal(results.length, 601);
    assert.ok(results.slice(0, 600).every((r) => r === BigInt(pid)));
    assert.equal(results[600], 0n);
    assert.equal(comm(pid), "late", "scratch allocated before the batch survives its parts");
    const rename = agent.string("never");
    assert.throws(
      () =>
        agent.batch([
          ...getpids.slice(0, 300),
          { name: "close(12345)", nr: NR.close, args: [12345] },
          ...getpids.slice(0, 300),
          { name: "prctl(PR_SET_NAME)", nr: NR.prctl, args: [PR.SET_NAME, rename, 0, 0, 0] },
        ]),
      (e) => isSyscallError(e, "EBADF"),
    );
    assert.equal(comm(pid), "late", "a part after the failing one ran");
    agent.leave();
  } finally {
    finish(pid);
  }
});

Deno.test("Agent.attempt() answers a failure as the SyscallError call() throws, naming the call and errno", () => {
  const { pid, agent } = seizedSleep();
  try {
    assert.equal(agent.attempt("getpid", NR.getpid), BigInt(pid));
    const failed = agent.attempt("close(12345)", NR.close, 12345);
    assert.ok(isSyscallError(failed, "EBADF"), "the errno by its name");
    assert.match(failed.message, /^remote close\(12345\) failed: EBADF \(in task \d+\)$/);
    const calls = [{ name: "close(12345)", nr: NR.close, args: [12345] }, {
      name: "getpid",
      nr: NR.getpid,
      args: [],
    }];
    const [closed, self] = agent.batch(calls, true);
    assert.ok(isSyscallError(agent.failureOf(calls[0]!, closed!), "EBADF"));
    assert.equal(agent.failureOf(calls[1]!, self!), undefined);
    agent.later("close(12346)", NR.close, 12346);
    assert.throws(
      () => agent.attempt("getpid", NR.getpid),
      (e) => isSyscallError(e, "EBADF"),
      "a queued call's failure is thrown",
    );
    agent.leave();
  } finally {
    finish(pid);
  }
});

Deno.test("Agent.later() calls run at the next trap, in order, and their failures are thrown there", () => {
  const { pid, agent } = seizedSleep();
  const hasFd = (fd: number) => {
    try {
      Deno.readLinkSync(`/proc/${pid}/fd/${fd}`);
      return true;
    } catch {
      return false;
    }
  };
  try {
    const fd = agent.call("open(/)", NR.open, agent.string("/"), 0, 0);
    agent.later("dup2(fd, 100)", NR.dup2, fd, 100);
    assert.ok(!hasFd(100), "a queued call ran before a trap");
    assert.equal(agent.call("getpid", NR.getpid), BigInt(pid));
    assert.ok(hasFd(100));
    agent.later("close(12345)", NR.close, 12345);
    agent.later("close(100)", NR.close, 100);
    assert.throws(
      () => agent.raw(NR.getpid),
      (e) => isSyscallError(e, "EBADF") && /remote close\(12345\)/.test(e.message),
    );
    assert.ok(hasFd(100), "a queued call after the failing one ran");
    agent.later("close(100)", NR.close, 100);
    assert.equal(agent.raw(NR.close, 12345), -9n, "raw() answers its own failure");
    assert.ok(!hasFd(100));
    agent.later("dup2(fd, 101)", NR.dup2, fd, 101);
    const [self] = agent.batch([{ name: "getpid", nr: NR.getpid, args: [] }]);
    assert.equal(self, BigInt(pid), "batch() answers for its own calls only");
    assert.ok(hasFd(101));
    agent.later("close(101)", NR.close, 101);
    agent.leave();
    assert.ok(!hasFd(101), "leave() runs what is queued");
  } finally {
    finish(pid);
  }
});

Deno.test("A batch call takes an argument from an earlier call's result, in its part or one before", () => {
  const { pid, agent } = seizedSleep();
  const target = (fd: number) => Deno.readLinkSync(`/proc/${pid}/fd/${fd}`);
  try {
    const slash = agent.string("/");
    const getpids = Array.from({ length: 300 }, () => ({ name: "getpid", nr: NR.getpid, args: [] }));
    const F_DUPFD = 0;
    const results = agent.batch([
      { name: "open(/)", nr: NR.open, args: [slash, 0, 0] },
      { name: "fcntl(F_DUPFD, 200)", nr: NR.fcntl, args: [0, F_DUPFD, 200], ref: { arg: 0, back: 1 } },
      { name: "close(opened)", nr: NR.close, args: [], ref: { arg: 0, back: 2 } },
      ...getpids, // the next reference crosses into an earlier part
      { name: "dup3(moved, 150)", nr: NR.dup3, args: [0, 150, 0], ref: { arg: 0, back: 302 } },
      { name: "getpid", nr: NR.getpid, args: [] },
    ]);
    const [opened, moved, closed] = results;
    assert.ok(opened! >= 0n);
    assert.ok(moved! >= 200n, "fcntl got the opened fd");
    assert.equal(closed, 0n);
    assert.equal(results[303], 150n);
    assert.equal(results[304], BigInt(pid), "the nr word carries the syscall number alone");
    assert.equal(target(Number(moved)), "/");
    assert.equal(target(150), "/");
    assert.throws(() => target(Number(opened)), "the first fd was closed through its reference");
    assert.throws(
      () => agent.batch([{ name: "close", nr: NR.close, args: [], ref: { arg: 0, back: 1 } }]),
      /refers to a result that does not come before it/,
    );
    agent.leave();
  } finally {
    finish(pid);
  }
});
