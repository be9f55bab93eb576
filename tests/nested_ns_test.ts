/**
 * Nested network, UTS and IPC namespaces: the nested_ns workload's root has a network namespace of
 * its own; one child unshares another (loopback with its MTU, a veth pair inside with 198.18.5.x
 * addresses, a TCP listener and an established connection on 127.0.0.1) and its child goes back to
 * the root's with setns; another child unshares UTS and IPC namespaces (its host name, a SysV
 * segment kept attached) and its child goes back to the root's UTS namespace, criu's own. Each
 * task checks its own view after restore; variants put a veth pair between the root's network
 * namespace and the child's, or leave the root in criu's, or put the whole tree in a user
 * namespace of its own (rootless-style) that must own every nested namespace again. Also: the images (one set per namespace
 * id, each task's ids pointing at them), a restore failing late leaving no process or namespace,
 * images missing a namespace refused, and cross-checks with CRIU 4.2 (which saves nested network
 * namespaces, but refuses nested UTS and IPC ones).
 */
import assert from "node:assert/strict";
import { criu, criuOk, descendants, exists, reap, waitFor } from "./lib/harness.ts";
import { type Case, registerMatrix, withWorkload } from "./lib/matrix.ts";
import { registerCross } from "./lib/upstream.ts";
import { critDecode } from "./lib/tools.ts";
import { lockRules } from "./lib/netfilter.ts";

const TCP = ["--tcp-established"];
const CASE: Case = { name: "nested_ns", criuArgs: TCP };

registerMatrix([
  CASE,
  { name: "nested_ns", args: ["uts-ipc"] },
  // The root in criu's network namespace, which is not saved; the child's below it is.
  { name: "nested_ns", args: ["net", "host-root"], criuArgs: TCP },
  // A veth pair between the root's network namespace and the child's, made again with both ends.
  { name: "nested_ns", args: ["net", "veth-between"], criuArgs: TCP },
  // The whole tree in a user namespace of its own (criu's PID namespace): each nested namespace
  // must come back owned by it, which every task checks (NS_GET_USERNS).
  { name: "nested_ns", args: ["net", "uts-ipc", "userns"], criuArgs: TCP },
]);

const KINDS = ["net", "uts", "ipc"] as const;

/** The entries of an image, as Debian's crit decodes them. */
function entries<T>(path: string): T[] {
  return critDecode(path).entries as T[];
}

function nsLinks(pid: number | "self"): Record<string, string> {
  return Object.fromEntries(KINDS.map((k) => [k, Deno.readLinkSync(`/proc/${pid}/ns/${k}`)]));
}

/** The tree's pids, parents first: root, N, NB, U, UB (by the workload's order of forks). */
function treeOf(root: number): number[] {
  return [root, ...descendants(root)];
}

Deno.test("each namespace of the tree has its own images, and every task's ids point at its namespace's", () =>
  withWorkload(CASE, async (w, images) => {
    const tree = treeOf(w.pid);
    assert.equal(tree.length, 5, `expected 5 tasks, found ${tree.join(" ")}`);
    const before = new Map(tree.map((p) => [p, nsLinks(p)]));
    const criuNs = nsLinks("self");
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4", "-R", ...TCP]);
    const files = new Set([...Deno.readDirSync(images)].map((e) => e.name));
    for (const kind of KINDS) {
      // Tasks in one namespace share one id; two namespaces never do.
      const idOf = new Map<string, number>();
      for (const pid of tree) {
        const [ids] = entries<Record<string, number>>(`${images}/ids-${pid}.img`);
        const id = ids![`${kind}_ns_id`]!;
        const link = before.get(pid)![kind]!;
        if (idOf.has(link)) assert.equal(id, idOf.get(link), `${kind} id of ${pid}`);
        else {
          assert.ok(![...idOf.values()].includes(id), `${kind} id ${id} of ${pid} names two namespaces`);
          idOf.set(link, id);
        }
        const image = { net: `netns-${id}.img`, uts: `utsns-${id}.img`, ipc: `ipcns-var-${id}.img` }[kind];
        // criu's own namespaces are not saved; every other one is.
        assert.equal(files.has(image), link !== criuNs[kind], `${image} for process ${pid}`);
      }
    }
    const idOf = (pid: number, kind: string) =>
      entries<Record<string, number>>(`${images}/ids-${pid}.img`)[0]![kind]!;
    const devices = entries<{ name: string }>(`${images}/netdev-${idOf(tree[1]!, "net_ns_id")}.img`);
    assert.deepEqual(devices.map((d) => d.name).sort(), ["lo", "nv0", "nv1"]);
    // NB's packet socket was made in N's namespace: its entry names that one, not NB's.
    const packets = entries<{ psk?: { ns_id?: number } }>(`${images}/files.img`).filter((f) => f.psk);
    assert.deepEqual(packets.map((f) => f.psk!.ns_id), [idOf(tree[1]!, "net_ns_id")]);
    const [uts] = entries<{ nodename: string }>(`${images}/utsns-${idOf(tree[3]!, "uts_ns_id")}.img`);
    assert.equal(uts?.nodename, "nested-uts");
  }));

/** Every namespace link held by a task (as its namespace or an open fd) anywhere on the machine. */
function namespacesHeld(): Set<string> {
  const held = new Set<string>();
  for (const p of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(p.name)) continue;
    for (const dir of [`/proc/${p.name}/ns`, `/proc/${p.name}/fd`]) {
      try {
        for (const e of Deno.readDirSync(dir)) {
          try {
            const link = Deno.readLinkSync(`${dir}/${e.name}`);
            if (/^(net|uts|ipc):\[\d+\]$/.test(link)) held.add(link);
          } catch {
            // closed meanwhile
          }
        }
      } catch {
        // gone, or hidden
      }
    }
  }
  return held;
}

Deno.test("a restore failing late (a post-restore script) leaves no process and no namespace of the tree, then restores", () =>
  withWorkload(CASE, async (w, images) => {
    const tree = treeOf(w.pid);
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4", ...TCP]);
    for (const pid of tree) await reap(pid);
    const record = `${images}/made`;
    const script = `${images}/fail.sh`;
    Deno.writeTextFileSync(
      script,
      `#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = post-restore ] || exit 0
for p in ${tree.join(" ")}; do for ns in ${
        KINDS.join(" ")
      }; do readlink /proc/$p/ns/$ns; done; done > ${record}
exit 1
`,
    );
    Deno.chmodSync(script, 0o755);
    const r = await criu([
      "restore",
      "-D",
      images,
      "-d",
      "-o",
      "restore.log",
      "-v4",
      "--action-script",
      script,
      ...TCP,
    ]);
    assert.equal(r.code, 1, `the restore should fail: ${r.stderr}`);
    assert.match(r.stderr, /post-restore/);
    assert.doesNotMatch(r.stderr, /\bat .*\.ts:\d+/, "no stack trace");
    const criuNs = new Set(Object.values(nsLinks("self")));
    const made = [...new Set(Deno.readTextFileSync(record).trim().split("\n"))].filter((l) => !criuNs.has(l));
    // The root's network namespace, N's, U's UTS and IPC ones.
    assert.equal(made.length, 4, `namespaces made: ${made.join(" ")}`);
    // The orphans of the killed root come to the test (a subreaper), which reaps them.
    for (const pid of tree) await reap(pid);
    for (const pid of tree) assert.ok(!exists(`/proc/${pid}`), `process ${pid} was left behind`);
    await waitFor("the namespaces made to be let go", () => {
      const held = namespacesHeld();
      return made.every((l) => !held.has(l));
    }, 20000);
    Deno.removeSync(script);
    await criuOk(["restore", "-D", images, "-d", "-o", "restore.log", "-v4", ...TCP]);
  }));

Deno.test("images missing a nested namespace's are refused by name before any process exists", () =>
  withWorkload({ name: "nested_ns", args: ["uts-ipc"] }, async (w, images) => {
    const tree = treeOf(w.pid);
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"]);
    for (const pid of tree) await reap(pid);
    const nested = tree[1]!;
    const id = entries<Record<string, number>>(`${images}/ids-${nested}.img`)[0]!.uts_ns_id!;
    Deno.renameSync(`${images}/utsns-${id}.img`, `${images}/utsns-${id}.img.away`);
    const r = await criu(["restore", "-D", images, "-d", "-o", "restore.log", "-v4"]);
    assert.equal(r.code, 1, `the restore should fail: ${r.stderr}`);
    assert.match(
      r.stderr,
      new RegExp(
        `Cannot restore process ${nested}: its UTS namespace \\(id ${id}\\) is not the root's \\(id \\d+\\) nor criu's; the images hold nothing of it`,
      ),
    );
    assert.doesNotMatch(r.stderr, /\bat .*\.ts:\d+/, "no stack trace");
    for (const pid of tree) assert.ok(!exists(`/proc/${pid}`), `process ${pid} was made`);
    Deno.renameSync(`${images}/utsns-${id}.img.away`, `${images}/utsns-${id}.img`);
    await criuOk(["restore", "-D", images, "-d", "-o", "restore.log", "-v4"]);
  }));

/** Lock rules in criu's netfilter naming the workload's port (other tests may hold locks of their own). */
const ourLockRules = () => lockRules().filter((l) => l.includes("47311"));

Deno.test("connections in the tree's network namespaces are not locked in criu's netfilter, which sees none of their packets", () =>
  withWorkload(CASE, async (w, images) => {
    const tree = treeOf(w.pid);
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4", ...TCP]);
    assert.deepEqual(ourLockRules(), [], "the dump locked a connection of a namespace of the tree in criu's");
    for (const pid of tree) await reap(pid);
    await criuOk(["restore", "-D", images, "-d", "-o", "restore.log", "-v4", ...TCP]);
  }));

// CRIU 4.2 saves and restores nested network namespaces (not UTS or IPC ones: it refuses them).
const noLockLeft = () => assert.deepEqual(ourLockRules(), [], "a network lock was left in criu's netfilter");
registerCross([
  { name: "nested_ns", args: ["net"], criuArgs: TCP, after: noLockLeft },
  { name: "nested_ns", args: ["net", "veth-between"], criuArgs: TCP, after: noLockLeft },
]);
