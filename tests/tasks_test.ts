/**
 * Core task behaviours (issue 15, "Tasks" and "State"): stopped tasks, zombies reaped after a
 * restore, a task without a vDSO, SIGTRAP, POSIX timers that notify a thread, scheduling per
 * thread, the audit loginuid and membarrier registrations. Each workload checks its own state
 * after every dump and restore of the matrix.
 */
import assert from "node:assert/strict";
import { spawn } from "../ffi/spawn.ts";
import {
  CRIU,
  criu,
  criuOk,
  descendants,
  exists,
  killTree,
  reap,
  sleep,
  tempDir,
  waitFor,
  workloadBin,
} from "./lib/harness.ts";
import { registerMatrix, withWorkload } from "./lib/matrix.ts";

registerMatrix([
  { name: "stopped" },
  { name: "zombie" },
  { name: "sigtrap" },
  { name: "thread_timers" },
  { name: "sched" },
  { name: "loginuid" },
  { name: "membarrier" },
  { name: "novdso" },
]);

for (const mode of ["pending", "pending-shared"]) {
  Deno.test(`a dump of a task with a SIGTRAP queued (${mode}) is refused, and the SIGTRAP stays queued`, () =>
    withWorkload({ name: "sigtrap", args: [mode] }, async (w, images) => {
      const status = Deno.readTextFileSync(`/proc/${w.pid}/status`);
      const r = await criu(["dump", "-t", `${w.pid}`, "-D", images]);
      assert.equal(r.code, 1, `the dump was not refused:\n${r.stderr}`);
      assert.match(r.stderr, /Cannot dump a SIGTRAP queued (for thread \d+|process-wide) of process \d+/);
      assert.doesNotMatch(r.stderr, /^\s+at /m, "a stack trace");
      const after = Deno.readTextFileSync(`/proc/${w.pid}/status`);
      for (const key of ["SigPnd", "ShdPnd", "SigBlk", "SigCgt", "State"]) {
        const line = (text: string) => text.split("\n").find((l) => l.startsWith(`${key}:`));
        assert.equal(line(after), line(status), `${key} changed`);
      }
    }));
}

Deno.test("sched comes back as dumped when criu restores it at nice 6 under SCHED_BATCH", () =>
  withWorkload({ name: "sched" }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    await reap(w.pid);
    const out = await new Deno.Command("chrt", {
      args: ["--batch", "0", "nice", "-n", "6", CRIU, "restore", "-D", images, "-d"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  }));

/** Every thread of `pid` is in state T (stopped). */
function allStopped(pid: number): boolean {
  const tids = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name);
  return tids.every((tid) => {
    const stat = Deno.readTextFileSync(`/proc/${pid}/task/${tid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "T";
  });
}

for (const leaveRunning of [false, true]) {
  Deno.test(
    `a stopped process with threads, dumped as the root${
      leaveRunning ? " with -R" : ""
    }, stays stopped until SIGCONT`,
    () =>
      withWorkload({ name: "threads", args: ["4"] }, async (w, images) => {
        Deno.kill(w.pid, "SIGSTOP");
        await waitFor("the threads to stop", () => allStopped(w.pid));
        if (leaveRunning) {
          await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
        } else {
          await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
          await reap(w.pid);
          await criuOk(["restore", "-D", images, "-d"]);
        }
        await sleep(200); // a task let run by mistake would show it by now
        assert.ok(allStopped(w.pid), "not every thread is stopped");
        Deno.kill(w.pid, "SIGCONT");
      }),
  );
}

Deno.test("timers notifying a thread come back in a tree that is the init of its own PID namespace", async () => {
  const dir = tempDir();
  const result = `${dir}/thread_timers.result`;
  // unshare forks the workload as pid 1 of a new namespace and waits for it, outside the tree.
  const launcher = spawn("/usr/bin/unshare", [
    "unshare",
    "--pid",
    "--fork",
    await workloadBin("thread_timers"),
    result,
  ], {
    setsid: true,
  });
  let init = 0;
  try {
    await waitFor("thread_timers to be ready", () => exists(`${result}.ready`) || exists(result));
    init = descendants(launcher)[0] ?? 0;
    assert.ok(
      init > 0,
      `no namespace init under unshare: ${exists(result) ? Deno.readTextFileSync(result) : ""}`,
    );
    const tree = [init, ...descendants(init)];
    // Its session is unshare's, outside the tree: a shell job.
    await criuOk(["dump", "-t", `${init}`, "-D", dir, "-j", "-o", "dump.log", "-v4"]);
    for (const pid of [...tree, launcher]) await reap(pid);
    await criuOk([
      "restore",
      "-D",
      dir,
      "-d",
      "-j",
      "--pidfile",
      `${dir}/restored.pid`,
      "-o",
      "restore.log",
      "-v4",
    ]);
    init = Number(Deno.readTextFileSync(`${dir}/restored.pid`).trim());
    Deno.kill(init, "SIGTERM");
    await waitFor("the verdict", () => exists(result) && Deno.readTextFileSync(result).endsWith("\n"));
    assert.equal(Deno.readTextFileSync(result).trim(), "PASS");
  } finally {
    await killTree(init);
    await killTree(launcher);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a SIGSTOP sent while the tree is frozen stops the task, and the dump goes on", () =>
  // The network-lock script runs once the tree is frozen and before any code of ours runs in it
  // (a tree in a network namespace of its own): the SIGSTOP waits there for our first trap.
  withWorkload({ name: "netns" }, async (w, images) => {
    const script = `[ "$CRTOOLS_SCRIPT_ACTION" = network-lock ] && kill -STOP ${w.pid}; exit 0`;
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images, "-R", "--action-script", script]);
    assert.equal(r.code, 0, r.stderr);
    await waitFor("the task to stop", () => allStopped(w.pid));
    Deno.kill(w.pid, "SIGCONT");
  }));
