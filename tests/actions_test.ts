/**
 * Action scripts (--action-script): every hook runs in order with CRIU's environment, and a script
 * that fails aborts the operation cleanly.
 */
import assert from "node:assert/strict";
import { criu, criuOk, exists, reap, tempDir, Workload } from "./lib/harness.ts";
import { withWorkload } from "./lib/matrix.ts";

/** A script that appends "hook pid imagesdir" to `log`, and fails at `failAt`. */
function recorder(log: string, failAt = ""): string {
  return `echo "$CRTOOLS_SCRIPT_ACTION \${CRTOOLS_INIT_PID:-none} $CRTOOLS_IMAGE_DIR" >> ${log}; ` +
    `[ "$CRTOOLS_SCRIPT_ACTION" != "${failAt}" ]`;
}

/** `criu dump` of `pid` into `images` with `script` as its action script. */
function dumpWithScript(pid: number, images: string, script: string) {
  return criu(["dump", "-t", `${pid}`, "-D", images, "--action-script", script]);
}

function hooks(log: string): string[] {
  return exists(log) ? Deno.readTextFileSync(log).trim().split("\n").map((l) => l.split(" ")[0]!) : [];
}

Deno.test("action scripts see every dump and restore hook in order, with CRIU's variables", async () => {
  const w = await Workload.start("counter");
  const images = tempDir();
  const log = `${images}/hooks.log`;
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "--action-script", recorder(log)]);
    assert.deepEqual(hooks(log), ["pre-dump", "post-dump"]);
    const dumpLines = Deno.readTextFileSync(log).trim().split("\n");
    assert.equal(dumpLines[0], `pre-dump none ${Deno.realPathSync(images)}`);
    await reap(w.pid);
    Deno.removeSync(log);
    await criuOk(["restore", "-D", images, "-d", "--action-script", recorder(log)]);
    assert.deepEqual(hooks(log), ["pre-restore", "post-restore", "pre-resume", "post-resume"]);
    assert.match(Deno.readTextFileSync(log), new RegExp(`post-restore ${w.pid} `));
    assert.equal(await w.finish(), "PASS");
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

for (const hook of ["pre-dump", "post-dump"]) {
  Deno.test(`a failing ${hook} script aborts the dump and the process runs on`, async () => {
    const w = await Workload.start("counter");
    const images = tempDir();
    try {
      const r = await dumpWithScript(w.pid, images, recorder(`${images}/h`, hook));
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`at the ${hook} hook`));
      assert.ok(!exists(`${images}/inventory.img`), "no checkpoint may be left");
      assert.match(Deno.readTextFileSync(`/proc/${w.pid}/status`), /TracerPid:\s+0\n/);
      assert.equal(await w.finish(), "PASS");
    } finally {
      w.cleanup();
      Deno.removeSync(images, { recursive: true });
    }
  });
}

// The namespace hooks run only for a restore that makes namespaces: netns has a network one.
for (
  const [hook, workload] of [
    ["pre-restore", "counter"],
    ["setup-namespaces", "netns"],
    ["post-setup-namespaces", "netns"],
    ["post-restore", "counter"],
    ["network-unlock", "netns"],
    ["pre-resume", "counter"],
  ] as const
) {
  Deno.test(`a failing ${hook} script aborts the restore and leaves no process`, async () => {
    const w = await Workload.start(workload);
    const images = tempDir();
    try {
      await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
      await reap(w.pid);
      const r = await criu(["restore", "-D", images, "-d", "--action-script", recorder(`${images}/h`, hook)]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`at the ${hook} hook`));
      await reap(w.pid);
      assert.ok(!exists(`/proc/${w.pid}`), "the half-restored process is still there");
    } finally {
      w.cleanup();
      Deno.removeSync(images, { recursive: true });
    }
  });
}

Deno.test("a tree with its own network namespace gets network-lock and network-unlock around it", () =>
  withWorkload({ name: "netns" }, async (w, images) => {
    const log = `${images}/hooks.log`;
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", "--action-script", recorder(log)]);
    assert.deepEqual(hooks(log), ["pre-dump", "network-lock", "post-dump", "network-unlock"]);
    assert.match(Deno.readTextFileSync(log), new RegExp(`network-lock ${w.pid} `));
    Deno.removeSync(log);
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "--action-script", recorder(log)]);
    assert.deepEqual(hooks(log), ["pre-dump", "network-lock", "post-dump"]);
    await reap(w.pid);
    Deno.removeSync(log);
    await criuOk(["restore", "-D", images, "-d", "--action-script", recorder(log)]);
    assert.deepEqual(hooks(log), [
      "pre-restore",
      "setup-namespaces",
      "post-setup-namespaces",
      "post-restore",
      "network-unlock",
      "pre-resume",
      "post-resume",
    ]);
    assert.match(Deno.readTextFileSync(log), new RegExp(`network-unlock ${w.pid} `));
  }));

Deno.test("a failing network-lock script aborts the dump, unlocks, and the process runs on", () =>
  withWorkload({ name: "netns" }, async (w, images) => {
    const log = `${images}/hooks.log`;
    const r = await dumpWithScript(w.pid, images, recorder(log, "network-lock"));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /at the network-lock hook/);
    assert.deepEqual(hooks(log), ["pre-dump", "network-lock", "network-unlock"]);
    assert.ok(
      !exists(`${images}/inventory.img`) && !exists(`${images}/netns-2.img`),
      "no checkpoint may be left",
    );
  }));

// (A tree in criu's network namespace stays there, as with CRIU: see tests/netdev_test.ts.)
Deno.test("restore --empty-ns net puts a tree that had a network namespace in a new, empty one", async () => {
  const w = await Workload.start("netns");
  const images = tempDir();
  try {
    const log = `${images}/hooks.log`;
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    await reap(w.pid);
    await criuOk(["restore", "-D", images, "-d", "--empty-ns", "net", "--action-script", recorder(log)]);
    assert.notEqual(Deno.readLinkSync(`/proc/${w.pid}/ns/net`), Deno.readLinkSync("/proc/self/ns/net"));
    assert.deepEqual(
      Deno.readTextFileSync(`/proc/${w.pid}/net/dev`).split("\n").slice(2).filter((l) => l).length,
      1,
    );
    assert.ok(hooks(log).includes("setup-namespaces") && hooks(log).includes("network-unlock"));
  } finally {
    await w.kill(); // its loopback stays down: its own check would fail
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});
