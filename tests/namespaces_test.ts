/**
 * Namespaces other than criu's that are saved and made again: UTS (host and domain names), time
 * (the clocks' offsets) and IPC (its sysctls and SysV objects). Each workload unshares its
 * namespace itself, so the dump's root is the process in it, and checks its own view after restore.
 */
import assert from "node:assert/strict";
import { criu, criuOk, descendants, exists, reap, tempDir, Workload } from "./lib/harness.ts";
import { type Case, registerMatrix, withWorkload } from "./lib/matrix.ts";
import { critDecode } from "./lib/tools.ts";
import { UPSTREAM } from "./lib/upstream.ts";

const CASES: Case[] = [
  { name: "utsns" },
  { name: "timens" },
  { name: "nested_timens" },
  // The root in criu's time namespace, which is not saved; those below it are.
  { name: "nested_timens", args: ["host-root"] },
  // A namespace no task makes its children in: C's (it unshared again), B1's (B went back).
  { name: "nested_timens", args: ["unreadable"] },
  { name: "nested_timens", args: ["left"] },
  // Threads of one process making their children in namespaces of their own.
  { name: "nested_timens", args: ["threads"] },
  { name: "ipcns" },
  { name: "ipcns", args: ["attached"] },
  { name: "ipcns", args: ["attached-child"] },
];

registerMatrix(CASES);

/** Dumps workload `name`, which must be refused with `message`, and checks it runs on untouched. */
async function assertRefusedAndRunsOn(name: string, message: RegExp, args: string[] = []): Promise<void> {
  const w = await Workload.start(name, args);
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

/** The tree's pids, parents first by the workload's order of forks. */
function treeOf(root: number): number[] {
  return [root, ...descendants(root)];
}

/** Which of the tree's tasks share a time namespace: for each task, the index of the first in its. */
function timeNsPattern(pids: readonly number[]): number[] {
  const links = pids.map((p) => Deno.readLinkSync(`/proc/${p}/ns/time`));
  return links.map((l) => links.indexOf(l));
}

Deno.test("a dump of a process whose threads share a time namespace for children one of them unshared is refused by name, and it runs on", () =>
  assertRefusedAndRunsOn(
    "nested_timens",
    /time namespace for children time:\[\d+\] of process \d+: thread \d+ of process \d+ also makes its children in it from another time namespace; criu-ts clones every thread from its leader/,
    ["thread-shared"],
  ));

for (const mode of ["unreadable", "threads"]) {
  Deno.test({
    name: `CRIU 4.2 refuses to dump nested_timens ${mode} (nested time namespaces), and the tree runs on`,
    ignore: !UPSTREAM,
    fn: () =>
      withWorkload({ name: "nested_timens", args: [mode] }, async (w, images) => {
        const out = await new Deno.Command(UPSTREAM!, {
          args: ["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"],
          stdout: "null",
          stderr: "null",
        }).output();
        assert.equal(out.code, 1);
        assert.match(Deno.readTextFileSync(`${images}/dump.log`), /Can't dump nested time namespace/);
      }),
  });
}

Deno.test("a time namespace comes back with --restore-sibling, its clocks going on", () =>
  withWorkload({ name: "timens" }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    await reap(w.pid);
    await criuOk(["restore", "-d", "--restore-sibling", "-D", images, "-o", "restore.log", "-v4"]);
    assert.notEqual(Deno.readLinkSync(`/proc/${w.pid}/ns/time`), Deno.readLinkSync("/proc/self/ns/time"));
  }));

Deno.test("nested time namespaces come back with --restore-sibling, each task where it was", () =>
  withWorkload({ name: "nested_timens" }, async (w, images) => {
    const tree = treeOf(w.pid);
    assert.equal(tree.length, 7, `expected 7 tasks, found ${tree.join(" ")}`);
    const before = timeNsPattern(tree);
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    for (const pid of tree) await reap(pid);
    await criuOk(["restore", "-d", "--restore-sibling", "-D", images, "-o", "restore.log", "-v4"]);
    assert.deepEqual(timeNsPattern(tree), before);
  }));

Deno.test("time namespaces threads made for their children come back with --restore-sibling, each thread's where it was", () =>
  withWorkload({ name: "nested_timens", args: ["threads"] }, async (w, images) => {
    const tree = treeOf(w.pid);
    const threads = tree.flatMap((p) =>
      [...Deno.readDirSync(`/proc/${p}/task`)].map((e) => `${p}/task/${e.name}`)
    );
    const pattern = () => {
      const links = threads.map((t) => Deno.readLinkSync(`/proc/${t}/ns/time_for_children`));
      return links.map((l) => links.indexOf(l));
    };
    const before = pattern();
    // The root's leader and its threads X and Y each make their children in a namespace of their own.
    assert.equal(new Set(before.slice(0, 3)).size, 3, `the root's threads: ${before.join(" ")}`);
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    for (const pid of tree) await reap(pid);
    await criuOk(["restore", "-d", "--restore-sibling", "-D", images, "-o", "restore.log", "-v4"]);
    assert.deepEqual(pattern(), before);
  }));

Deno.test("a restore whose images lack a nested time namespace is refused before any process exists, then restored", () =>
  withWorkload({ name: "nested_timens" }, async (w, images) => {
    const tree = treeOf(w.pid);
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    for (const pid of tree) await reap(pid);
    const [rootIds] = critDecode(`${images}/ids-${w.pid}.img`).entries as { time_ns_id: number }[];
    const nested = [...Deno.readDirSync(images)].map((e) => e.name)
      .find((n) => /^timens-\d+\.img$/.test(n) && n !== `timens-${rootIds!.time_ns_id}.img`)!;
    Deno.renameSync(`${images}/${nested}`, `${images}/${nested}.away`);
    const r = await criu(["restore", "-d", "-D", images]);
    assert.equal(r.code, 1);
    const id = /\d+/.exec(nested)![0];
    assert.match(
      r.stderr,
      new RegExp(`Process \\d+ is in time namespace ${id}, but there is no timens-${id}\\.img`),
    );
    for (const pid of tree) assert.ok(!exists(`/proc/${pid}`), `process ${pid} was left behind`);
    Deno.renameSync(`${images}/${nested}.away`, `${images}/${nested}`);
    await criuOk(["restore", "-d", "-D", images]);
  }));

Deno.test("each time namespace of a tree has its own image, which Debian's crit decodes, and each task's ids name its namespace", () =>
  withWorkload({ name: "nested_timens" }, async (w, images) => {
    const tree = treeOf(w.pid);
    const criuNs = Deno.readLinkSync("/proc/self/ns/time");
    const links = tree.map((p) => Deno.readLinkSync(`/proc/${p}/ns/time`));
    const forChildren = tree.map((p) => Deno.readLinkSync(`/proc/${p}/ns/time_for_children`));
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const ids = tree.map((p) =>
      (critDecode(`${images}/ids-${p}.img`).entries as { time_ns_id: number }[])[0]!.time_ns_id
    );
    // Tasks in one namespace share one id; two namespaces never do.
    for (let i = 0; i < tree.length; i++) {
      for (let j = 0; j < tree.length; j++) {
        assert.equal(ids[i] === ids[j], links[i] === links[j], `tasks ${tree[i]} and ${tree[j]}`);
      }
    }
    // One image per namespace but criu's, for those tasks are in and the one only made for children.
    const saved = new Set([...links, ...forChildren].filter((l) => l !== criuNs));
    const files = [...Deno.readDirSync(images)].map((e) => e.name).filter((n) => /^timens-\d+\.img$/.test(n));
    assert.equal(files.length, saved.size, files.join(" "));
    for (let i = 0; i < tree.length; i++) {
      if (links[i] !== criuNs) {
        assert.ok(files.includes(`timens-${ids[i]}.img`), `no image for task ${tree[i]}`);
      }
    }
    for (const f of files) {
      const [entry] = critDecode(`${images}/${f}`).entries as { monotonic: { tv_sec: number } }[];
      assert.ok(entry!.monotonic.tv_sec > 0, `${f} has no monotonic clock`);
    }
  }));
