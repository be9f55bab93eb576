/**
 * PID namespaces nested below the dump root's (src/objects/pidns.ts): the nested_pidns workload
 * (an init made after unshare, or with `clone` by clone(CLONE_NEWPID), with a zombie and a running
 * child, beside a plain child; with `pending` a root that unshared and forked nothing since; with
 * `thread`, `thread-ns` and `left` threads and a parent that left the namespace) in the usual
 * matrix; the pids it sees inside and each thread's pid_for_children come back. What cannot be
 * restored is refused at dump. A restore whose pids are taken fails and leaves nothing. CRIU 4.2
 * refuses to dump such a tree.
 */
import assert from "node:assert/strict";
import { criu, criuOk, descendants, reap, tempDir, Workload } from "./lib/harness.ts";
import { refusedDump, registerMatrix, withWorkload } from "./lib/matrix.ts";
import { UPSTREAM } from "./lib/upstream.ts";
import { critDecode } from "./lib/tools.ts";
import { create } from "@bufbuild/protobuf";
import { pstree_entrySchema } from "../src/images/gen/pstree_pb.ts";
import { task_kobj_ids_entrySchema } from "../src/images/gen/core_pb.ts";
import { PidNesting } from "../src/objects/pidns.ts";
import type { RestoreTaskImages } from "../src/restore/images.ts";

registerMatrix([
  { name: "nested_pidns" },
  { name: "nested_pidns", args: ["clone"] },
  // unshared, no child since: the restored root must make its next child a new namespace's init
  { name: "nested_pidns", args: ["pending"] },
  // A leads its own group and has a nested init J in it, which cannot see the group
  { name: "nested_pidns", args: ["group"] },
  // I and R hold O's pidfd of itself, inherited: a process their namespace cannot see, shared with O
  { name: "nested_pidns", args: ["outer-pidfd"] },
  // O unshared and has threads, one started after: they come back where O's children are its own
  { name: "nested_pidns", args: ["thread"] },
  // O's threads have a pid_for_children of their own: one with an init (K), one pending
  { name: "nested_pidns", args: ["thread-ns"] },
  // O has a member of I's namespace (not its init) and went back to its own namespace with setns
  { name: "nested_pidns", args: ["left"] },
]);

Deno.test("a dump refuses a pid_for_children namespace whose init ended, and the tree runs on", () =>
  refusedDump(
    "nested_pidns",
    ["deadns"],
    /Process \d+ makes its children in PID namespace pid:\[\d+\], which has no process left in the tree/,
  ));

/** The pids of every live process named like the workload (none must be left by a failed restore). */
function workloadProcesses(): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${e.name}/comm`).trim() === "nested_pidns") out.push(Number(e.name));
    } catch {
      // gone
    }
  }
  return out;
}

/** The NSpid line of a process, outermost first. */
function nsPids(pid: number): number[] {
  const line = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^NSpid:(.*)$/m)?.[1] ?? "";
  return line.trim().split(/\s+/).map(Number);
}

Deno.test("nested_pidns: each task comes back with its pid at each level", () =>
  withWorkload({ name: "nested_pidns" }, async (w, images) => {
    const tree = [w.pid, ...descendants(w.pid)];
    const before = tree.map(nsPids);
    assert.deepEqual(before.map((p) => p.length), [1, 1, 2, 2, 2], "the workload's shape");
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"]);
    for (const pid of tree) await reap(pid);
    await criuOk(["restore", "-D", images, "-d", "-o", "restore.log", "-v4"]);
    assert.deepEqual(tree.map(nsPids), before);
    const pstree = await criuOk(["crit", "decode", "-i", `${images}/pstree.img`]);
    const entries = JSON.parse(pstree.stdout).entries as { nested?: { pid: number }[] }[];
    assert.deepEqual(entries.map((e) => (e.nested ?? []).map((n) => n.pid)), [[], [], [1], [2], [3]]);
    // The pidfds (O's and R's of I, I's of R) name their process as pstree.img does, not as the
    // holder's namespace sees it.
    const files = await criuOk(["crit", "decode", "-i", `${images}/files.img`]);
    const pidfds = (JSON.parse(files.stdout).entries as { pidfd?: { nspid: number } }[])
      .flatMap((f) => f.pidfd ? [f.pidfd.nspid] : []);
    const byNumber = (a: number, b: number) => a - b;
    assert.deepEqual(pidfds.sort(byNumber), [tree[2]!, tree[2]!, tree[4]!].sort(byNumber));
  }));

Deno.test("nested_pidns thread-ns: each thread's pid_for_children is in its core image, which Debian's crit reads", () =>
  withWorkload({ name: "nested_pidns", args: ["thread-ns"] }, async (w, images) => {
    const threads = [...Deno.readDirSync(`/proc/${w.pid}/task`)].map((e) => Number(e.name)).sort((a, b) =>
      a - b
    );
    assert.equal(threads.length, 3, "O, T and U");
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const decode = async (image: string) =>
      JSON.parse((await criuOk(["crit", "decode", "-i", `${images}/${image}`])).stdout) as {
        entries: Record<string, unknown>[];
      };
    type Core = { thread_core?: { pid_for_children_ns_id?: number } };
    const childrenNs = await Promise.all(
      threads.slice(1).map(async (tid) =>
        ((await decode(`core-${tid}.img`)).entries[0] as Core).thread_core?.pid_for_children_ns_id
      ),
    );
    const ids = (await decode(`ids-${w.pid}.img`)).entries[0] as { pid_ns_id: number };
    const pstree = (await decode("pstree.img")).entries as { pid: number; nested?: { ns_id: number }[] }[];
    const nsOfTasks = pstree.flatMap((e) => (e.nested ?? []).map((n) => n.ns_id));
    // T's: the namespace K is the init of; U's: one no task is in (its next child makes it)
    const t = childrenNs.find((id) => id !== undefined && nsOfTasks.includes(id));
    const u = childrenNs.find((id) => id !== undefined && !nsOfTasks.includes(id));
    assert.ok(t !== undefined && u !== undefined, `the threads' ${childrenNs}, the tasks' ${nsOfTasks}`);
    assert.ok(t !== ids.pid_ns_id && u !== ids.pid_ns_id && t !== u);
    for (const tid of threads) critDecode(`${images}/core-${tid}.img`);
  }));

Deno.test("nested_pidns: a restore whose pids are taken is refused before anything is made", () =>
  withWorkload({ name: "nested_pidns" }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const running = workloadProcesses().sort();
    const r = await criu(["restore", "-D", images, "-d"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(`PID ${w.pid} is already in use by process ${w.pid} \\(nested_pidns\\)`),
    );
    // Only new processes count: other workloads on the machine may end meanwhile.
    const left = workloadProcesses().filter((p) => !running.includes(p));
    assert.deepEqual(left, [], "the failed restore left a process");
  }));

Deno.test("nested_pidns: a pid taken inside the nested namespace fails the restore half-way, leaving nothing", async () => {
  const w = await Workload.start("nested_pidns");
  const images = tempDir();
  try {
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"]);
    for (const pid of tree) await reap(pid);
    // R (pid 3 inside) asks for Z's pid 2: the clone fails once O, A, I and Z exist.
    const path = `${images}/pstree.img`;
    const dec = await criuOk(["crit", "decode", "-i", path]);
    const json = JSON.parse(dec.stdout) as { entries: { nested?: { pid: number; threads: number[] }[] }[] };
    const r = json.entries[4]!.nested![0]!;
    assert.equal(r.pid, 3);
    r.pid = 2;
    r.threads[0] = 2;
    Deno.writeTextFileSync(`${path}.json`, JSON.stringify(json));
    await criuOk(["crit", "encode", "-i", `${path}.json`, "-o", path]);
    const res = await criu(["restore", "-D", images, "-d", "-o", "restore.log", "-v4"]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /PIDs 2, \d+ \(its own namespace first\) are not all free/);
    assert.doesNotMatch(res.stderr, /\n\s+at /, "a stack trace");
    // Killed puppets may stay zombies for a moment (PID 1 reaps what criu's exit left it).
    for (const pid of tree) await reap(pid);
    assert.deepEqual(workloadProcesses(), [], "the failed restore left a process");
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test({
  name: "CRIU 4.2 refuses to dump a nested PID namespace, and the tree runs on",
  ignore: !UPSTREAM,
  fn: () =>
    withWorkload({ name: "nested_pidns" }, async (w, images) => {
      const out = await new Deno.Command(UPSTREAM!, {
        args: ["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"],
        stdout: "null",
        stderr: "null",
      }).output();
      assert.equal(out.code, 1);
      assert.match(Deno.readTextFileSync(`${images}/dump.log`), /Can't dump nested pid namespace/);
    }),
});

/** A task of a restore's images for PidNesting: pid, parent, nested levels, pid_for_children. */
function imagesOf(
  pid: number,
  ppid: number,
  nested: { nsId: number; pid: number }[],
  pidForChildrenNsId?: number,
): RestoreTaskImages {
  const levels = nested.map((n) => ({ ...n, pgid: 0, sid: 0, threads: [n.pid] }));
  return {
    entry: create(pstree_entrySchema, { pid, ppid, pgid: 1, sid: 1, threads: [pid], nested: levels }),
    hostPid: 0,
    cores: [],
    ids: create(task_kobj_ids_entrySchema, {
      pidNsId: nested.at(-1)?.nsId ?? 1,
      ...(pidForChildrenNsId ? { pidForChildrenNsId } : {}),
    }),
    pages: [],
    fdinfos: [],
    zombie: false,
    helper: false,
  };
}

Deno.test("PidNesting clones a member of a nested namespace after its init, made deeper in the tree", () => {
  // O (1) forks A (2), A forks Q (3), Q unshares and forks I (namespace 5's init); O enters
  // namespace 5 with setns and forks M there (pid 2 inside). Parents first alone would clone M,
  // a child of the root, before I, a great-grandchild, into a namespace without its init.
  const o = imagesOf(1, 0, []);
  const a = imagesOf(2, 1, []);
  const m = imagesOf(4, 1, [{ nsId: 5, pid: 2 }]);
  const q = imagesOf(3, 2, [], 5);
  const i = imagesOf(6, 3, [{ nsId: 5, pid: 1 }]);
  const order = new PidNesting([o, a, m, q, i]).order().map((t) => t.entry.pid);
  assert.deepEqual(order, [1, 2, 3, 6, 4]);
  // An init the images do not have: the member cannot be cloned, said by name.
  assert.throws(
    () => new PidNesting([o, a, m]).order(),
    /Process 4 needs PID namespace 5 \(pstree.img\), whose init \(pid 1 there\) is not in the images/,
  );
});
