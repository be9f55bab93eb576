/**
 * Real programs, started by the test, checkpointed and restored, and still working afterwards:
 * a Python interpreter, Node.js (threads, epoll, eventfd, pipes), coreutils sleep, bash reading a
 * script. Each writes a counter to a file; after restore the counter must go on.
 */
import assert from "node:assert/strict";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import { criuOk, exists, reap, sleep, tempDir, waitFor } from "./lib/harness.ts";
import { nodeBin, python3 } from "./lib/tools.ts";

function startProgram(argv: string[]): number {
  const nul = openFd("/dev/null", OPEN.RDWR | OPEN.CLOEXEC);
  try {
    return spawn(argv[0]!, argv.slice(1), { fds: { 0: nul, 1: nul, 2: nul }, setsid: true });
  } finally {
    closeFd(nul);
  }
}

/** The counter; 0 while the file is being rewritten (or was caught half-written by the dump). */
function readCount(path: string): number {
  return Number(Deno.readTextFileSync(path).trim() || "0");
}

async function checkpointAndContinue(argv: (out: string, dir: string) => string[]): Promise<void> {
  const dir = tempDir();
  const out = `${dir}/count`;
  const pid = startProgram(argv(out, dir));
  try {
    await waitFor(
      "the program to start counting",
      () => exists(out) && Deno.readTextFileSync(out).trim() !== "",
    );
    await sleep(300);
    await criuOk(["dump", "-t", `${pid}`, "-D", dir, "-o", "dump.log", "-v4"]);
    await reap(pid);
    const atDump = readCount(out);
    await criuOk(["restore", "-D", dir, "-d", "-o", "restore.log", "-v4"]);
    await waitFor("the counter to move on", () => readCount(out) > atDump + 2);
    assert.ok(atDump > 0 || readCount(out) > 2);
    assert.ok(exists(`/proc/${pid}`), "the restored program runs under its old PID");
  } finally {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
    await reap(pid);
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("a Python interpreter in a loop keeps counting after restore", () =>
  checkpointAndContinue((out) => [
    python3(),
    "python3",
    "-c",
    `import time\ni = 0\nwhile True:\n    i += 1\n    open(${
      JSON.stringify(out)
    }, "w").write(str(i))\n    time.sleep(0.02)`,
  ]));

Deno.test("a Node.js script with timers keeps counting after restore", () =>
  checkpointAndContinue((out) => [
    nodeBin(),
    "node",
    "-e",
    `let i = 0; setInterval(() => require("fs").writeFileSync(${JSON.stringify(out)}, String(++i)), 20);`,
  ]));

Deno.test("bash reading a script keeps counting after restore", () =>
  checkpointAndContinue((out, dir) => {
    const script = `${dir}/loop.sh`;
    Deno.writeTextFileSync(
      script,
      `i=0\nwhile :; do\n  i=$((i+1))\n  echo $i > ${out}\n  sleep 0.02\ndone\n`,
    );
    return ["/bin/bash", "bash", script];
  }));

Deno.test("coreutils sleep sleeps on after restore and exits 0 at its time", async () => {
  const dir = tempDir();
  const started = Date.now();
  const pid = startProgram(["/bin/sleep", "sleep", "1.5"]);
  try {
    await sleep(200);
    await criuOk(["dump", "-t", `${pid}`, "-D", dir]);
    await reap(pid);
    const restoring = Date.now() - started;
    await criuOk(["restore", "-D", dir]); // without -d: returns when sleep exits, with its status
    // The time it spent dumped counts, as for any stopped process: it ends 1.5 s after its start,
    // or at once when the dump took longer. A sleep that began again would end 1.5 s after the
    // restore started at the earliest: the limit grows with a dump slowed by a loaded machine.
    const took = Date.now() - started;
    const limit = Math.max(4000, restoring + 1500);
    assert.ok(
      took >= 1450 && took < limit,
      `sleep ended ${took} ms after it started (restore began at ${restoring})`,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
