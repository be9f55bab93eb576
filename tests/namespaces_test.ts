/**
 * Namespaces other than criu's that are saved and made again: UTS (host and domain names), time
 * (the clocks' offsets) and IPC (its sysctls and SysV objects). Each workload unshares its
 * namespace itself, so the dump's root is the process in it, and checks its own view after restore.
 */
import assert from "node:assert/strict";
import { criu, criuOk, descendants, exists, reap, tempDir, waitFor, Workload } from "./lib/harness.ts";
import { type Case, registerMatrix, withWorkload } from "./lib/matrix.ts";

const CASES: Case[] = [
  { name: "utsns" },
  { name: "timens" },
  { name: "ipcns" },
  { name: "ipcns", args: ["attached"] },
  { name: "ipcns", args: ["attached-child"] },
];

registerMatrix(CASES);

/** Dumps workload `name`, which must be refused with `message`, and checks it runs on untouched. */
async function assertRefusedAndRunsOn(name: string, message: RegExp): Promise<void> {
  const w = await Workload.start(name);
  const images = tempDir();
  try {
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, message);
    const status = Deno.readTextFileSync(`/proc/${w.pid}/status`);
    assert.match(status, /TracerPid:\s+0\n/, "still traced after a failed dump");
    assert.doesNotMatch(status, /State:\s+[tT]/, "left stopped after a failed dump");
    assert.deepEqual([...Deno.readDirSync(images)], [], "the refused dump left files behind");
    assert.equal(await w.finish(), "PASS");
  } finally {
    if (exists(`/proc/${w.pid}`)) await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
}

Deno.test("a dump of a process with SysV shared memory attached in criu's IPC namespace is refused, and it runs on", () =>
  assertRefusedAndRunsOn(
    "sysv_host",
    /SysV shared memory segment \d+ at 0x[0-9a-f]+-0x[0-9a-f]+ of process \d+: .*IPC namespace of the tree's own/,
  ));

Deno.test("a dump of a process with a removed POSIX message queue open is refused by name, and it runs on", () =>
  assertRefusedAndRunsOn(
    "mqueue_fd",
    /POSIX message queue \/criu-ts-mq-\d+ \(deleted\) \(fd \d+\) of process \d+: its name was removed \(mq_unlink\)/,
  ));

Deno.test("a time namespace cannot come back with --restore-sibling: refused clearly, nothing left, then restored", () =>
  withWorkload({ name: "timens" }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    await reap(w.pid);
    const r = await criu(["restore", "-d", "--restore-sibling", "-D", images]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /must exist before its root is created, which --restore-sibling cannot make/);
    await reap(w.pid);
    await criuOk(["restore", "-d", "-D", images]);
  }));

// Nested UTS and IPC namespaces are saved (tests/nested_ns_test.ts); nested time ones are not.
Deno.test("a dump of a tree with a task in a nested time namespace is refused by name, and it runs on", async () => {
  const images = tempDir();
  const comm = (pid: number) => {
    try {
      return Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
    } catch {
      return "";
    }
  };
  try {
    for (const [flag, words] of [["--time", "time"]] as const) {
      // sh starts unshare (which forks sleep in a namespace of its own), then execs sleep: the root.
      const child = new Deno.Command("setsid", {
        args: ["sh", "-c", `unshare ${flag} --fork sleep 60 & exec sleep 60`],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        await waitFor(
          "the tree to start",
          () => comm(child.pid) === "sleep" && descendants(child.pid).some((d) => comm(d) === "sleep"),
        );
        const r = await criu(["dump", "-t", `${child.pid}`, "-D", images]);
        assert.equal(r.code, 1, flag);
        assert.match(
          r.stderr,
          new RegExp(`${words} namespace \\w+:\\[\\d+\\] of process \\d+: it differs from the root's`),
          flag,
        );
        const status = Deno.readTextFileSync(`/proc/${child.pid}/status`);
        assert.match(status, /TracerPid:\s+0\n/, `${flag}: still traced after a failed dump`);
        assert.doesNotMatch(status, /State:\s+[tT]/, `${flag}: left stopped after a failed dump`);
        assert.deepEqual([...Deno.readDirSync(images)], [], `${flag}: the refused dump left files behind`);
      } finally {
        const rest = descendants(child.pid);
        for (const p of rest) Deno.kill(p, "SIGKILL");
        child.kill("SIGKILL");
        await child.status;
        for (const p of rest) await reap(p);
      }
    }
  } finally {
    Deno.removeSync(images, { recursive: true });
  }
});
