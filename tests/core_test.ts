/**
 * Core checkpoint/restore of single processes: every workload passes plain, after dump+restore,
 * after a --leave-running dump, and after ten dump/restore cycles in a row (gVisor's model: the
 * same test with a save/restore in the middle).
 */
import assert from "node:assert/strict";
import { criu, criuOk, exists, openFds, reap, sleep, tempDir, waitFor, Workload } from "./lib/harness.ts";

interface Case {
  name: string;
  args?: string[];
  /** How long the workload needs to run before its checks mean something. */
  settleMs?: number;
}

const CASES: Case[] = [
  { name: "counter" },
  { name: "taskstate" },
  { name: "files" },
  { name: "sleeper.sh", settleMs: 300 },
  { name: "mmap_zoo" },
  { name: "mmap_zoo", args: ["alias"] },
  { name: "fpu" },
  { name: "signals" },
  { name: "blocked", args: ["nanosleep"] },
  { name: "blocked", args: ["clock_nanosleep"] },
  { name: "blocked", args: ["poll", "eintr-ok"] },
  { name: "blocked", args: ["ppoll"] },
  { name: "blocked", args: ["select"] },
  { name: "blocked", args: ["pause"] },
  { name: "blocked", args: ["sigsuspend"] },
  { name: "blocked", args: ["futex", "eintr-ok"] },
  { name: "blocked", args: ["futex-inf"] },
  { name: "blocked", args: ["pipe-read"], settleMs: 700 },
  { name: "blocked", args: ["epoll", "eintr-ok"] },
];

function label(c: Case): string {
  return [c.name, ...(c.args ?? []).filter((a) => a !== "eintr-ok")].join(" ");
}

async function dumpRestore(w: Workload, images: string, extra: string[] = []): Promise<void> {
  await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4", ...extra]);
  await reap(w.pid); // the dump killed it; it must be gone before its PID is taken again
  await criuOk(["restore", "-D", images, "-d", "-o", "restore.log", "-v4"]);
  assert.ok(exists(`/proc/${w.pid}`), `${w.name} is not back after restore`);
}

async function withWorkload(c: Case, body: (w: Workload, images: string) => Promise<void>): Promise<void> {
  const fds = openFds();
  const w = await Workload.start(c.name, c.args ?? []);
  const images = tempDir();
  try {
    if (c.settleMs) await sleep(c.settleMs);
    await body(w, images);
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
}

for (const c of CASES) {
  Deno.test(`${label(c)} passes plain`, () => withWorkload(c, async () => {}));

  Deno.test(`${label(c)} passes after dump and restore`, () =>
    withWorkload(c, (w, images) => dumpRestore(w, images)));

  Deno.test(`${label(c)} keeps running after dump --leave-running`, () =>
    withWorkload(c, async (w, images) => {
      await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
      assert.ok(exists(`/proc/${w.pid}`));
      assert.ok(exists(`${images}/inventory.img`));
    }));

  Deno.test(`${label(c)} passes after 10 dump/restore cycles`, () =>
    withWorkload(c, async (w, images) => {
      for (let i = 0; i < 10; i++) await dumpRestore(w, images);
    }));
}

Deno.test("restore without -d waits for the process and exits with its status", async () => {
  const w = await Workload.start("counter");
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    await reap(w.pid);
    const restoring = criu(["restore", "-D", images]);
    await waitFor(
      "the restored process",
      () => exists(`/proc/${w.pid}/stat`) && !/ [tT] /.test(Deno.readTextFileSync(`/proc/${w.pid}/stat`)),
    );
    await sleep(100);
    Deno.kill(w.pid, "SIGTERM");
    const r = await restoring;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(Deno.readTextFileSync(w.result).trim(), "PASS");
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("dump of a missing pid fails with a message and writes no checkpoint", async () => {
  const images = tempDir();
  try {
    const r = await criu(["dump", "-t", "999999", "-D", images]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /999999/);
    assert.ok(!exists(`${images}/inventory.img`));
  } finally {
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("restore refuses a pid that is in use and names its holder", async () => {
  const w = await Workload.start("counter");
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const r = await criu(["restore", "-D", images, "-d"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`PID ${w.pid} is already in use by process ${w.pid} \\(counter\\)`));
    assert.equal(await w.finish(), "PASS");
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});
