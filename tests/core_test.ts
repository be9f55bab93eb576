/**
 * Core checkpoint/restore of single processes: every workload passes plain, after dump+restore,
 * after a --leave-running dump, and after ten dump/restore cycles in a row (gVisor's model: the
 * same test with a save/restore in the middle).
 */
import assert from "node:assert/strict";
import { criu, criuOk, exists, reap, sleep, tempDir, waitFor, Workload } from "./lib/harness.ts";
import { type Case, registerMatrix } from "./lib/matrix.ts";

/** The AVX-512 state (opmask, all of zmm0-31) where the CPU has it; the workload refuses to run without. */
const AVX512 = ["avx512f", "avx512bw"].every((flag) =>
  new RegExp(`\\b${flag}\\b`).test(Deno.readTextFileSync("/proc/cpuinfo"))
);

const CASES: Case[] = [
  { name: "counter" },
  { name: "taskstate" },
  { name: "files" },
  { name: "sleeper.sh", settleMs: 300 },
  { name: "mmap_zoo" },
  { name: "mmap_zoo", args: ["alias"] },
  { name: "fpu" },
  ...(AVX512 ? [{ name: "avx512" }] : []),
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
  { name: "netns" },
];

registerMatrix(CASES);

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
    // Above the kernel's pid_max: no process can have it, on any machine.
    const missing = Number(Deno.readTextFileSync("/proc/sys/kernel/pid_max").trim()) + 1;
    const r = await criu(["dump", "-t", `${missing}`, "-D", images]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`${missing}`));
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

Deno.test("restore -S -d makes the process a child of criu's parent; -S alone is refused", async () => {
  const w = await Workload.start("counter");
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    await reap(w.pid);
    const alone = await criu(["restore", "-D", images, "-S"]);
    assert.equal(alone.code, 1);
    assert.match(alone.stderr, /only makes sense with --restore-detached/);
    await criuOk(["restore", "-D", images, "-d", "-S"]);
    const ppid = Number(Deno.readTextFileSync(`/proc/${w.pid}/stat`).split(") ")[1]!.split(" ")[1]);
    assert.equal(ppid, Deno.pid, "criu's parent (this test) is the restored process's parent");
    assert.equal(await w.finish(), "PASS");
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});
