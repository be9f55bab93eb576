/**
 * Real programs, started by the test, checkpointed and restored, and still working afterwards:
 * a Python interpreter, Node.js (threads, epoll, eventfd, pipes), coreutils sleep, bash reading a
 * script. Each writes a counter to a file; after restore the counter must go on.
 */
import assert from "node:assert/strict";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import { criuOk, exists, reap, sleep, tempDir, waitFor } from "./lib/harness.ts";

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
    "/usr/bin/python3",
    "python3",
    "-c",
    `import time\ni = 0\nwhile True:\n    i += 1\n    open(${
      JSON.stringify(out)
    }, "w").write(str(i))\n    time.sleep(0.02)`,
  ]));

/** The node this machine runs (a fresh machine has Node, not necessarily in /usr/bin). */
function nodePath(): string {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/node`).isFile) return `${dir}/node`;
    } catch {
      // not here
    }
  }
  throw new Error("No node in PATH: the README's commands need Node and npm");
}

Deno.test("a Node.js script with timers keeps counting after restore", () =>
  checkpointAndContinue((out) => [
    nodePath(),
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
    await criuOk(["restore", "-D", dir]); // without -d: returns when sleep exits, with its status
    // The time it spent dumped counts, as for any stopped process: it ends 1.5 s after its start.
    const took = Date.now() - started;
    assert.ok(took >= 1450 && took < 4000, `sleep ended ${took} ms after it started`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
