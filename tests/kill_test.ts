/**
 * criu killed with SIGKILL in the middle of its work (the OOM killer, a runtime's timeout) must
 * never cost the target. A dump killed at any instant leaves every task running on as before: not
 * stopped, not traced, its registers, signal mask, fds and memory its own (the workloads check
 * themselves afterwards). A restore killed at any instant leaves a correct tree or nothing.
 *
 * "Any instant" is tried two ways: at each step, with CRIU_TS_KILL_AT_STEP=N (criu kills itself
 * before its Nth ptrace request or write into a task's memory: the points between which a tracee
 * changes), and after random delays from fixed seeds.
 */
import assert from "node:assert/strict";
import { CRIU, criu, exists, reap, reapZombies, sleep, tempDir, waitFor, Workload } from "./lib/harness.ts";

const KILLED = 137;

/** One line per thread of `pid`: its state letter and TracerPid; null once the process is gone. */
function threadStates(pid: number): string[] | null {
  try {
    return [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => {
      const status = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/status`);
      const state = /^State:\s+(\S)/m.exec(status)?.[1] ?? "?";
      const tracer = /^TracerPid:\s+(\d+)/m.exec(status)?.[1] ?? "?";
      return `${e.name} ${state} traced by ${tracer}`;
    });
  } catch {
    return null;
  }
}

const fdsOf = (pid: number) => [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) => e.name).sort().join(",");

/** The mappings of `pid`, one "start-end perms" per line, [vdso]'s bytes aside. */
const mapsOf = (pid: number) =>
  Deno.readTextFileSync(`/proc/${pid}/maps`).trim().split("\n").map((l) =>
    l.split(/\s+/).slice(0, 2).join(" ")
  );

/**
 * What a killed dump must have left as it was. Mappings are compared only when `sameMaps`: a
 * kill while several threads are inside leaves the scratch area mapped (see GuardedThread).
 */
function snapshot(pid: number, sameMaps: boolean) {
  return { fds: fdsOf(pid), maps: sameMaps ? mapsOf(pid) : [] };
}

/** Asserts that a target survived a killed dump: running, untraced, as `before`. */
async function assertUntouched(w: Workload, before: ReturnType<typeof snapshot>, what: string) {
  // The kernel detaches the tracees while criu exits; a task may still be on its way home.
  let states: string[] | null = null;
  const ok = (s: string) => /^\d+ [RS] traced by 0$/.test(s);
  const end = Date.now() + 5000;
  while (Date.now() < end) {
    states = threadStates(w.pid);
    if (states === null || states.every(ok)) break;
    await sleep(10);
  }
  assert.ok(states !== null, `${what}: the target is gone\n${w.output()}`);
  assert.deepEqual(states.filter((s) => !ok(s)), [], `${what}: threads stopped or traced`);
  // A thread may still be on its way home (closing our fd, unmapping our scratch): give it time.
  const same = () =>
    fdsOf(w.pid) === before.fds && (!before.maps.length || mapsOf(w.pid).join() === before.maps.join());
  for (let i = 0; i < 300 && !same(); i++) await sleep(10);
  assert.equal(fdsOf(w.pid), before.fds, `${what}: the target's fds changed`);
  if (before.maps.length) {
    assert.deepEqual(mapsOf(w.pid), before.maps, `${what}: the target's mappings changed`);
  }
}

/** Runs criu with CRIU_TS_KILL_AT_STEP=step; its exit code (137 when it killed itself). */
async function criuKilledAt(step: number, args: string[]): Promise<{ code: number; stderr: string }> {
  return await criu(args, { env: { CRIU_TS_KILL_AT_STEP: `${step}` } });
}

/**
 * Dumps `w` with `args`, killed at step 1, 1 + stride, ... until a dump gets through; after each
 * kill the target must be untouched. Returns how many kills landed.
 */
async function killDumpAtEachStep(w: Workload, args: string[], stride: number, sameMaps: boolean) {
  const before = snapshot(w.pid, sameMaps);
  let kills = 0;
  for (let step = 1;; step += stride) {
    const images = tempDir();
    try {
      const r = await criuKilledAt(step, ["dump", "-t", `${w.pid}`, "-D", images, ...args]);
      if (r.code === 0) return kills;
      assert.equal(r.code, KILLED, `dump killed at step ${step} failed instead:\n${r.stderr}`);
      kills++;
      await assertUntouched(w, before, `dump killed at step ${step} (${r.stderr.trim()})`);
    } finally {
      Deno.removeSync(images, { recursive: true });
    }
  }
}

Deno.test("dump -R killed at each step leaves a 3-thread workload running as before", async () => {
  const w = await Workload.start("threads", ["3"]);
  try {
    const kills = await killDumpAtEachStep(w, ["-R"], 1, false);
    assert.ok(kills > 30, `only ${kills} steps`);
    assert.equal(await w.finish(), "PASS", w.output());
  } finally {
    await w.kill();
    w.cleanup();
  }
});

Deno.test("dump killed at each step leaves the counter running as before, mappings included", async () => {
  const w = await Workload.start("counter");
  try {
    // Without -R the last dump, which gets through, ends the counter: it is checked before that.
    const kills = await killDumpAtEachStep(w, [], 1, true);
    assert.ok(kills > 20, `only ${kills} steps`);
  } finally {
    await w.kill();
    w.cleanup();
  }
});

Deno.test("a stopped target stays stopped through killed dumps and runs on as before after SIGCONT", async () => {
  const w = await Workload.start("counter");
  try {
    Deno.kill(w.pid, "SIGSTOP");
    await waitFor("the counter to stop", () => threadStates(w.pid)?.every((s) => / T /.test(s)) ?? false);
    const fds = fdsOf(w.pid);
    // A task held by a group stop cannot go home until SIGCONT: the next dump lets it first.
    for (let step = 1;; step += 5) {
      const images = tempDir();
      try {
        const r = await criuKilledAt(step, ["dump", "-R", "-t", `${w.pid}`, "-D", images]);
        // Detached, a task takes its group stop again on its own (it may be seen running first).
        const stopped = (s: string) => / T traced by 0$/.test(s);
        for (let i = 0; i < 300 && !threadStates(w.pid)?.every(stopped); i++) await sleep(10);
        const states = threadStates(w.pid) ?? [];
        assert.deepEqual(states.filter((s) => !stopped(s)), [], `killed at step ${step}`);
        if (r.code === 0) break;
        assert.equal(r.code, KILLED, `dump killed at step ${step} failed instead:\n${r.stderr}`);
      } finally {
        Deno.removeSync(images, { recursive: true });
      }
    }
    Deno.kill(w.pid, "SIGCONT");
    await waitFor("the counter to go home", () => fdsOf(w.pid) === fds);
    assert.equal(await w.finish(), "PASS", w.output());
  } finally {
    await w.kill();
    w.cleanup();
  }
});

/** A small seeded generator (mulberry32): the same delays on every run. */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs criu with `args` and SIGKILLs it after `ms`; true if it was still running then. */
async function criuKilledAfter(args: string[], ms: number): Promise<boolean> {
  const child = new Deno.Command(CRIU, { args, stdin: "null", stdout: "null", stderr: "null" }).spawn();
  let done = false;
  const status = child.status.then((s) => {
    done = true;
    return s;
  });
  await sleep(ms);
  try {
    if (!done) child.kill("SIGKILL");
  } catch {
    // it ended meanwhile
  }
  const s = await status;
  return s.signal === "SIGKILL";
}

/** Where a dump killed at some point had got to, by its log: before, during or after its work. */
function dumpStage(images: string): "before" | "during" | "after" {
  let log = "";
  try {
    log = Deno.readTextFileSync(`${images}/dump.log`);
  } catch {
    return "before";
  }
  if (log.includes("Dumping finished successfully")) return "after";
  return log.includes("Freezing the tree") ? "during" : "before";
}

/** The milliseconds from starting criu to its first step, and of the dump itself, from its log. */
async function dumpTimes(pid: number): Promise<{ start: number; work: number }> {
  const images = tempDir();
  try {
    const t0 = performance.now();
    const r = await criu(["dump", "-R", "-t", `${pid}`, "-D", images, "-v4", "-o", "dump.log"]);
    const total = performance.now() - t0;
    assert.equal(r.code, 0, r.stderr);
    const stamps = Deno.readTextFileSync(`${images}/dump.log`).trim().split("\n").map((l) => l);
    const at = (l: string | undefined) => Number(/^\((\d+\.\d+)\)/.exec(l ?? "")?.[1] ?? NaN) * 1000;
    const work = at(stamps.at(-1)) - at(stamps.find((l) => l.includes("Freezing the tree")));
    assert.ok(work > 0, "the dump log has no timestamps");
    return { start: Math.max(0, total - work - 20), work };
  } finally {
    Deno.removeSync(images, { recursive: true });
  }
}

Deno.test("dump -R killed after random delays leaves a workload with threads and memory running", async () => {
  const w = await Workload.start("threads", ["20"]);
  const random = seeded(15);
  try {
    const before = snapshot(w.pid, false);
    // Delays spread over the dump itself, as measured here (the machine may be slow or loaded).
    const { start, work } = await dumpTimes(w.pid);
    const stages = { before: 0, during: 0, after: 0 };
    for (let i = 0; i < 12; i++) {
      const images = tempDir();
      const ms = Math.floor(start + random() * work * 1.2);
      try {
        await criuKilledAfter(["dump", "-R", "-t", `${w.pid}`, "-D", images, "-v4", "-o", "dump.log"], ms);
        stages[dumpStage(images)]++;
        await assertUntouched(w, before, `dump -R killed after ${ms} ms`);
      } finally {
        Deno.removeSync(images, { recursive: true });
      }
    }
    assert.ok(stages.during >= 3, `too few kills landed during the dump: ${JSON.stringify(stages)}`);
    assert.equal(await w.finish(), "PASS", w.output());
  } finally {
    await w.kill();
    w.cleanup();
  }
});

/** Waits until no process has `pid` (a killed restore's tasks may be zombies for a moment). */
async function waitGone(pid: number): Promise<boolean> {
  try {
    await waitFor(`process ${pid} to go`, () => {
      reapZombies();
      return !exists(`/proc/${pid}`);
    }, 5000);
    return true;
  } catch {
    return false;
  }
}

Deno.test("restore killed at steps leaves either the whole tree, correct, or nothing", async () => {
  const w = await Workload.start("threads", ["3"]);
  const images = tempDir();
  try {
    const pid = w.pid;
    const r = await criu(["dump", "-t", `${pid}`, "-D", images]);
    assert.equal(r.code, 0, r.stderr);
    await reap(pid);
    let kills = 0;
    for (let step = 1;; step += 3) {
      const run = await criuKilledAt(step, ["restore", "-D", images, "-d"]);
      if (run.code === 0) break;
      assert.equal(run.code, KILLED, `restore killed at step ${step} failed instead:\n${run.stderr}`);
      kills++;
      assert.ok(await waitGone(pid), `restore killed at step ${step} left ${threadStates(pid)}`);
    }
    assert.ok(kills > 20, `only ${kills} steps`);
    assert.ok(exists(`/proc/${pid}`), "the restore that got through left no process");
    assert.equal(await w.finish(), "PASS", w.output());
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("restore killed after random delays leaves either the whole tree, correct, or nothing", async () => {
  const w = await Workload.start("counter");
  const images = tempDir();
  const random = seeded(10);
  try {
    const pid = w.pid;
    const r = await criu(["dump", "-t", `${pid}`, "-D", images]);
    assert.equal(r.code, 0, r.stderr);
    await reap(pid);
    for (let i = 0; i < 8; i++) {
      const ms = Math.floor(random() * 400);
      const killed = await criuKilledAfter(["restore", "-D", images, "-d"], ms);
      if (!killed) {
        // It got through: the counter must be whole; it is ended for the next round.
        assert.ok(exists(`/proc/${pid}`), `restore not killed after ${ms} ms left no process`);
        assert.equal(await w.finish(), "PASS", w.output());
        Deno.removeSync(w.result);
        continue;
      }
      if (exists(`/proc/${pid}`) && !(await waitGone(pid))) {
        // A restore killed after the tree was complete: it must be whole and correct.
        assert.deepEqual(threadStates(pid)?.filter((s) => !/ [RS] traced by 0$/.test(s)), []);
        assert.equal(await w.finish(), "PASS", w.output());
        Deno.removeSync(w.result);
      }
    }
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});
