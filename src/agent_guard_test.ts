/**
 * The guarded agent (Agent.enterGuarded), as a dump uses it: calls and batches work, and leaving
 * gives the task back exactly: registers, mask, fds, mappings, and the [vdso]'s bytes. What
 * happens when criu dies meanwhile is tests/kill_test.ts's part.
 */
import assert from "node:assert/strict";
import { spawn } from "../ffi/spawn.ts";
import * as pt from "../ffi/ptrace.ts";
import { quietSignal, RUNNER_ROOM } from "../ffi/remote.ts";
import { readMemory } from "../ffi/memory.ts";
import { readMaps, readStat } from "../ffi/proc.ts";
import { NR, PR } from "../ffi/syscalls.ts";
import { Agent } from "./agent.ts";

function seizedSleep(): number {
  const pid = spawn("/bin/sleep", ["sleep", "60"], { setsid: true });
  for (let i = 0; i < 500 && readStat(pid).state !== "S"; i++) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
  }
  pt.seize(pid, 0);
  pt.interrupt(pid);
  assert.equal(pt.wait(pid)?.kind, "stopped");
  return pid;
}

function finish(pid: number): void {
  pt.kill(pid, 9);
  while (pt.wait(pid)?.kind === "stopped") { /* collect the stop reports */ }
}

const vdsoOf = (pid: number) => readMaps(pid).find((m) => m.path === "[vdso]")!;
const fds = (pid: number) => [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) => e.name).sort().join();
const mapsOf = (pid: number) => readMaps(pid).map((m) => `${m.start}-${m.end} ${m.perms}`).join("\n");

Deno.test("a guarded agent runs calls and batches and leaves the task exactly as it found it", () => {
  const pid = seizedSleep();
  try {
    const vdso = vdsoOf(pid);
    const before = {
      regs: [...pt.getRegs(pid).raw],
      mask: pt.getSigmask(pid),
      vdso: readMemory(pid, vdso.start, Number(vdso.end - vdso.start)),
      fds: fds(pid),
      maps: mapsOf(pid),
    };
    const agent = Agent.enterGuarded(pid, vdso.start, vdso.end);
    assert.ok(
      agent.batchIp >= vdso.end - BigInt(RUNNER_ROOM) && agent.batchIp < vdso.end,
      "the runner is in [vdso]",
    );
    assert.equal(agent.call("getpid", NR.getpid), BigInt(pid));
    const fd = agent.raw(NR.open, agent.string("/dev/null"), 0, 0);
    assert.ok(fd >= 0n);
    assert.notEqual(fds(pid), before.fds);
    agent.call("close", NR.close, fd);
    const name = agent.string("guarded");
    const [self, renamed] = agent.batch([
      { name: "getpid", nr: NR.getpid, args: [] },
      { name: "prctl(PR_SET_NAME)", nr: NR.prctl, args: [PR.SET_NAME, name, 0, 0, 0] },
    ]);
    assert.deepEqual([self, renamed], [BigInt(pid), 0n]);
    assert.equal(Deno.readTextFileSync(`/proc/${pid}/comm`).trim(), "guarded");
    agent.call("prctl(PR_SET_NAME)", NR.prctl, PR.SET_NAME, agent.string("sleep"), 0, 0, 0);
    agent.leave();
    assert.deepEqual([...pt.getRegs(pid).raw], before.regs);
    assert.equal(pt.getSigmask(pid), before.mask);
    assert.deepEqual(readMemory(pid, vdso.start, Number(vdso.end - vdso.start)), before.vdso);
    assert.equal(fds(pid), before.fds);
    assert.equal(mapsOf(pid), before.maps);
    pt.detach(pid);
    assert.match(readStat(pid).state, /[SR]/);
    assert.match(Deno.readTextFileSync(`/proc/${pid}/status`), /TracerPid:\s+0\n/);
  } finally {
    finish(pid);
  }
});

Deno.test("the signal that ends a batch is one the task neither catches nor has to handle", () => {
  const bit = (s: number) => 1n << BigInt(s - 1);
  assert.equal(quietSignal(0n), 23); // SIGURG
  assert.equal(quietSignal(bit(23)), 28); // SIGWINCH
  assert.equal(quietSignal(bit(23) | bit(28)), 17); // SIGCHLD
  assert.equal(quietSignal(bit(23) | bit(28) | bit(17)), 23);
  // One the thread's mask lets through is better; one the task catches never is.
  assert.equal(quietSignal(0n, bit(23)), 28);
  assert.equal(quietSignal(bit(28), bit(23)), 17);
  assert.equal(quietSignal(bit(28) | bit(17), bit(23)), 23);
});
