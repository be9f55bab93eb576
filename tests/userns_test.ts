/**
 * User namespaces: a process in a user namespace of its own, with uid and gid maps and
 * credentials that differ inside and outside, through the usual matrix, alone and with a child; a
 * tree of several tasks (a zombie, a grandchild, other credentials) in a user namespace whose PID
 * namespace is criu's, with network, IPC and UTS namespaces that user namespace owns; user
 * namespaces nested below the root's (which CRIU 4.2 refuses to dump), without and with a PID
 * namespace of the tree's own, and below a root in criu's; the saved maps as crit reads them; a
 * rootless tree whose mount namespace is a copy of a host tree with a covered tmpfs, refused with
 * the reason and what to do (CRIU 4.2 cannot dump it either).
 */
import assert from "node:assert/strict";
import {
  criu,
  criuOk,
  descendants,
  exists,
  killTree,
  reap,
  reapZombies,
  tempDir,
  waitFor,
  workloadBin,
} from "./lib/harness.ts";
import { spawn } from "../ffi/spawn.ts";
import { registerMatrix, withWorkload } from "./lib/matrix.ts";
import { UPSTREAM } from "./lib/upstream.ts";
import { create } from "@bufbuild/protobuf";
import { uid_gid_extentSchema } from "../src/images/gen/userns_pb.ts";
import { relativeTo } from "../src/objects/userns_nested.ts";
import { ownerUserNamespaceOf } from "../ffi/nsenter.ts";

registerMatrix([
  { name: "userns" },
  { name: "userns", args: ["child"] },
  { name: "userns_tree" },
  { name: "userns_tree", args: ["nested"] },
]);

Deno.test("crit decodes userns-ID.img: the uid and gid maps; the core holds the credentials seen inside", () =>
  withWorkload({ name: "userns" }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const files = [...Deno.readDirSync(images)].map((e) => e.name).filter((n) => /^userns-\d+\.img$/.test(n));
    assert.equal(files.length, 1, files.join(" "));
    const decode = async (file: string) => {
      const out = await new Deno.Command("crit", { args: ["decode", "-i", `${images}/${file}`] }).output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      return JSON.parse(new TextDecoder().decode(out.stdout)).entries[0];
    };
    const maps = await decode(files[0]!);
    const expected = [{ first: 0, lower_first: 0, count: 1 }, {
      first: 1000,
      lower_first: 101000,
      count: 1000,
    }];
    assert.deepEqual(maps.uid_map, expected);
    assert.deepEqual(maps.gid_map, expected);
    const creds = (await decode(`core-${w.pid}.img`)).thread_core.creds;
    assert.deepEqual([creds.uid, creds.gid, creds.egid, creds.groups], [0, 1000, 1000, [1000, 1001]]);
  }));

/** `sh -c SCRIPT` started by unshare with `unshareArgs` in a session of its own; output dropped. */
function unshared(unshareArgs: string[], script: string): Deno.ChildProcess {
  return new Deno.Command("setsid", {
    args: ["unshare", ...unshareArgs, "sh", "-c", script],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function endUnshared(p: Deno.ChildProcess): Promise<void> {
  try {
    p.kill("SIGKILL");
  } catch {
    // ended with its tree
  }
  await p.status;
}

for (const mode of ["flat", "nested"]) {
  Deno.test(`a failed restore of userns_tree ${mode} leaves no task and no namespace holder behind`, async () => {
    const dir = tempDir();
    const result = `${dir}/userns_tree.result`;
    const root = spawn(await workloadBin("userns_tree"), ["userns_tree", result, mode], { setsid: true });
    try {
      await waitFor("the tree", () => exists(`${result}.ready`));
      const tree = [root, ...descendants(root)];
      await criuOk(["dump", "-t", `${root}`, "-D", dir, "-o", "dump.log", "-v4"]);
      for (const pid of tree) await reap(pid);
      // The pidfile is written after every task is back, just before the tree would run.
      const r = await criu([
        "restore",
        "-D",
        dir,
        "-d",
        "--pidfile",
        `${dir}/none/pid`,
        "-o",
        "restore.log",
        "-v4",
      ]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /Cannot write the pidfile/);
      const log = Deno.readTextFileSync(`${dir}/restore.log`);
      const holders = [...log.matchAll(/Namespace holder (\d+)/g)].map((m) => Number(m[1]));
      // The holder of the tree's user namespace; with nested, the first holder of the nested ones and N's.
      assert.equal(holders.length, mode === "nested" ? 3 : 1, log);
      for (const pid of [...tree, ...holders]) {
        // Orphans come to this test (a subreaper) or to PID 1.
        await waitFor(`process ${pid} to be gone (${statOf(pid)})`, () => {
          reapZombies();
          return !exists(`/proc/${pid}`) || isZombieOfInit(pid);
        });
      }
    } finally {
      await killTree(root);
      Deno.removeSync(dir, { recursive: true });
    }
  });
}

/**
 * A workload to restore with the kernel's next pid pointed at a pid of its tree (aimedRestore):
 * `skip` pids before it are left for the tasks criu starts first, and `ours` of them must be logged
 * ("Restore helper N", "Namespace holder N"). `later`: the target is none of the `later` lowest
 * pids (the root, the tasks forked first), so that it is a task forked after the holders came.
 */
interface Aimed {
  name: string;
  args: string[];
  criuArgs?: string[];
  skip: number;
  ours: number;
  later?: number;
}

/**
 * Dumps the workload, then restores it with a pre-restore script that points ns_last_pid so that
 * the next pid the kernel gives out, `skip` pids on, is a pid of the tree. The restore must still
 * put every task at its pid, and the workload pass.
 * Pointing the kernel there lets any process of the machine take a pid of the tree too: a restore
 * refused for a pid that none of criu's own tasks took is tried again, with a new tree.
 */
async function aimedRestore(w: Aimed): Promise<void> {
  for (let attempt = 1;; attempt++) {
    const stolen = await aimedRestoreOnce(w);
    if (stolen === undefined) return;
    assert.ok(attempt < 5, `pid ${stolen} of the tree was taken by another process at each attempt`);
  }
}

/** One try of aimedRestore; the pid another process took, if one did. */
async function aimedRestoreOnce(w: Aimed): Promise<number | undefined> {
  const dir = tempDir();
  const result = `${dir}/${w.name}.result`;
  let root = spawn(await workloadBin(w.name), [w.name, result, ...w.args], { setsid: true });
  try {
    await waitFor("the tree", () => exists(`${result}.ready`));
    const tree = [root, ...descendants(root)];
    const criuArgs = w.criuArgs ?? [];
    await criuOk(["dump", "-t", `${root}`, "-D", dir, "-o", "dump.log", "-v4", ...criuArgs]);
    for (const pid of tree) await reap(pid);
    root = 0; // its pid may be another process's now
    // A pid of the tree with `skip` pids of no task before it.
    const target = [...tree].sort((a, b) => a - b).slice(w.later ?? 0).find((p) =>
      [...Array(w.skip).keys()].every((i) => !tree.includes(p - 1 - i))
    );
    assert.ok(target !== undefined, `no pid of ${tree.join(" ")} with ${w.skip} free before it`);
    const script = `${dir}/aim.sh`;
    Deno.writeTextFileSync(
      script,
      `#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = pre-restore ] && echo ${
        target - 1 - w.skip
      } > /proc/sys/kernel/ns_last_pid\nexit 0\n`,
    );
    Deno.chmodSync(script, 0o755);
    const args = ["-D", dir, "-d", "--pidfile", `${dir}/pid`, "--action-script", script, ...criuArgs];
    const r = await criu(["restore", ...args, "-o", "restore.log", "-v4"]);
    const log = Deno.readTextFileSync(`${dir}/restore.log`);
    const ours = [...log.matchAll(/(?:Restore helper|Namespace holder) (\d+)/g)].map((m) => Number(m[1]));
    const taken = Number(/PIDs? (\d+)[^\n]* (?:is already in use|are not all free)/.exec(r.stderr)?.[1] ?? 0);
    if (r.code !== 0 && taken && !ours.includes(taken)) {
      console.error(`Trying again, a pid of the tree was taken meanwhile: ${r.stderr.trim()}`);
      return taken;
    }
    assert.equal(r.code, 0, r.stderr);
    root = Number(Deno.readTextFileSync(`${dir}/pid`).trim());
    assert.deepEqual([root, ...descendants(root)].sort(), [...tree].sort());
    assert.equal(ours.length, w.ours, log);
    assert.ok(ours.every((p) => !tree.includes(p)), `criu's tasks ${ours.join(" ")}, tree ${tree.join(" ")}`);
    Deno.kill(root, "SIGTERM");
    await waitFor("the verdict", () => exists(result) && Deno.readTextFileSync(result).endsWith("\n"));
    assert.equal(Deno.readTextFileSync(result).trim(), "PASS");
    return undefined;
  } finally {
    if (root) await killTree(root);
    Deno.removeSync(dir, { recursive: true });
  }
}

const USERNS_TREE = { name: "userns_tree", args: ["flat"], ours: 2 };

Deno.test("userns_tree comes back when the next free pid at restore is one of the tree's (the helper's turn)", () =>
  aimedRestore({ ...USERNS_TREE, skip: 0 }));

Deno.test("userns_tree comes back when the pid after the helper's is one of the tree's (the namespace holder's turn)", () =>
  aimedRestore({ ...USERNS_TREE, skip: 1 }));

// nested_ns: the root R, then N (a network namespace of its own, which a short-lived holder makes
// inside the tree's user namespace), then NB, U, UB: with the helper and the holder of the user
// namespace before it, N's holder would take a pid of a task forked after N.
Deno.test("nested_ns userns comes back when the pid after the holders' is one forked later (a nested namespace's holder's turn)", () =>
  aimedRestore({
    name: "nested_ns",
    args: ["net", "uts-ipc", "userns"],
    criuArgs: ["--tcp-established"],
    skip: 2,
    ours: 4,
    later: 2,
  }));

Deno.test("a task sharing its fs with its parent in a rootless-style tree is refused at restore by name, before any task is made", async () => {
  const dir = tempDir();
  const result = `${dir}/userns_tree.result`;
  const root = spawn(await workloadBin("userns_tree"), ["userns_tree", result, "fs"], { setsid: true });
  try {
    await waitFor("the tree", () => exists(`${result}.ready`));
    const tree = [root, ...descendants(root)];
    assert.equal(tree.length, 2);
    await criuOk(["dump", "-t", `${root}`, "-D", dir, "-o", "dump.log", "-v4"]);
    for (const pid of tree) await reap(pid);
    const r = await criu(["restore", "-D", dir, "-d", "-o", "restore.log", "-v4"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `Process ${
          tree[1]
        } shares its fs \\(CLONE_FS\\) with its parent ${root}: it cannot join its user namespace`,
      ),
    );
    assert.doesNotMatch(Deno.readTextFileSync(`${dir}/restore.log`), /Namespace holder|Restore helper/);
    for (const pid of tree) {
      assert.ok(!exists(`/proc/${pid}`) || isZombieOfInit(pid), `process ${pid} is back`);
    }
  } finally {
    await killTree(root);
    Deno.removeSync(dir, { recursive: true });
  }
});

/** A process that ended and waits for PID 1 (which reaps slowly here) to take its status. */
function isZombieOfInit(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[0] === "Z" && fields[1] === "1";
  } catch {
    return true;
  }
}

Deno.test("a user namespace a child made below a root in criu's round-trips (the root stays in criu's)", async () => {
  const dir = tempDir();
  // sh execs into the root (criu's user namespace); its child unshares one of its own.
  const p = unshared(["--fork"], "unshare -U -r sleep 600 & exec sleep 601");
  let root = 0;
  const userNs = (pid: number) => Deno.readLinkSync(`/proc/${pid}/ns/user`);
  try {
    await waitFor("the root and its child in a user namespace of its own", () => {
      root = descendants(p.pid).find((x) => descendants(x).length === 1) ?? 0;
      return root !== 0 && userNs(descendants(root)[0]!) !== userNs(Deno.pid);
    });
    await criuOk(["dump", "-t", `${root}`, "-D", dir, "-j", "-o", "dump.log", "-v4"]);
    await reap(root);
    await endUnshared(p);
    // The namespace scripts are not run: the root gets no namespace of its own.
    const script = `${dir}/script.sh`;
    Deno.writeTextFileSync(script, `#!/bin/sh\necho "$CRTOOLS_SCRIPT_ACTION" >> ${dir}/actions\n`);
    Deno.chmodSync(script, 0o755);
    await criuOk([
      "restore",
      "-D",
      dir,
      "-d",
      "-j",
      "--pidfile",
      `${dir}/pid`,
      "--action-script",
      script,
      "-o",
      "restore.log",
      "-v4",
    ]);
    root = Number(Deno.readTextFileSync(`${dir}/pid`).trim());
    const [child] = descendants(root);
    assert.ok(child !== undefined, "the child is back");
    assert.equal(userNs(root), userNs(Deno.pid));
    assert.notEqual(userNs(child), userNs(root));
    assert.match(Deno.readTextFileSync(`/proc/${child}/uid_map`), /^\s*0\s+0\s+1\n$/);
    assert.match(Deno.readTextFileSync(`/proc/${child}/status`), /\nUid:\t0\t0\t0\t0\n/);
    assert.doesNotMatch(Deno.readTextFileSync(`${dir}/actions`), /setup-namespaces/);
  } finally {
    if (root) await killTree(root);
    await endUnshared(p);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a user namespace nested below a container's, with a PID namespace of its own, round-trips", async () => {
  const dir = tempDir();
  // The container's init (pid 1, root mapped to root) and its child in a user namespace below.
  const p = unshared(["-r", "--pid", "--fork"], "unshare -U -r sleep 600 & exec sleep 601");
  let init = 0;
  const userNs = (pid: number) => Deno.readLinkSync(`/proc/${pid}/ns/user`);
  try {
    await waitFor("the init and its child in a nested user namespace", () => {
      init = descendants(p.pid).find((x) => descendants(x).length === 1) ?? 0;
      return init !== 0 && userNs(descendants(init)[0]!) !== userNs(init);
    });
    await criuOk(["dump", "-t", `${init}`, "-D", dir, "-j", "-o", "dump.log", "-v4"]);
    await reap(init);
    await endUnshared(p);
    await criuOk(["restore", "-D", dir, "-d", "-j", "--pidfile", `${dir}/pid`, "-o", "restore.log", "-v4"]);
    init = Number(Deno.readTextFileSync(`${dir}/pid`).trim());
    const [child] = descendants(init);
    assert.ok(child !== undefined, "the child is back");
    assert.notEqual(userNs(init), userNs(Deno.pid));
    assert.notEqual(userNs(child), userNs(init));
    assert.match(Deno.readTextFileSync(`/proc/${child}/status`), /\nNSpid:\t\d+\t2\n/);
    // Its maps as its parent namespace sees them, and the parent namespace the init's.
    const lsns = new TextDecoder().decode(
      (await new Deno.Command("lsns", { args: ["-t", "user", "-n", "-o", "NS,PNS,PID"] }).output()).stdout,
    );
    const inode = (link: string) => link.replace(/\D/g, "");
    const row = lsns.split("\n").map((l) => l.trim().split(/\s+/)).find((f) => f[0] === inode(userNs(child)));
    assert.equal(row?.[1], inode(userNs(init)), lsns);
    assert.match(Deno.readTextFileSync(`/proc/${child}/uid_map`), /^\s*0\s+0\s+1\n$/);
  } finally {
    if (init) await killTree(init);
    await endUnshared(p);
    Deno.removeSync(dir, { recursive: true });
  }
});

/**
 * Runs the userns workload in `mode` (init: I is root inside; init-setuid: I switched to uid 1000
 * without exec before forking K, which shares a pipe with it) through `cycles` dump/restore
 * cycles, with `-R` dumps in between when `leaveRunning` is set, then lets it check itself.
 */
async function initTree(mode: "init" | "init-setuid", cycles: number, leaveRunning = false): Promise<void> {
  const dir = tempDir();
  const result = `${dir}/userns.result`;
  // With init-setuid, I writes its ready and result files as uid 101000 of the host.
  if (mode === "init-setuid") Deno.chmodSync(dir, 0o777);
  const launcher = spawn(await workloadBin("userns"), ["userns", result, mode], { setsid: true });
  let init = 0;
  try {
    await waitFor("the namespaces", () => exists(`${result}.ready`));
    await reap(launcher);
    init = Number(Deno.readTextFileSync(`${result}.pid`).trim());
    for (let cycle = 0; cycle < cycles; cycle++) {
      const tree = [init, ...descendants(init)];
      assert.equal(tree.length, 2);
      if (leaveRunning) await criuOk(["dump", "-t", `${init}`, "-D", dir, "-R", "-o", "dump-r.log", "-v4"]);
      await criuOk(["dump", "-t", `${init}`, "-D", dir, "-o", "dump.log", "-v4"]);
      for (const pid of tree) await reap(pid);
      await criuOk([
        "restore",
        "-D",
        dir,
        "-d",
        "--pidfile",
        `${dir}/restored.pid`,
        "-o",
        "restore.log",
        "-v4",
      ]);
      init = Number(Deno.readTextFileSync(`${dir}/restored.pid`).trim());
      const k = descendants(init)[0]!;
      // Seen from criu's namespace: K's uid 1000 inside is 101000 outside.
      assert.match(Deno.readTextFileSync(`/proc/${k}/status`), /\nUid:\t101000\t101000\t101000\t101000\n/);
      // I is non-dumpable again once restored (its /proc files are then root's, else 101000's).
      if (mode === "init-setuid") assert.equal(Deno.statSync(`/proc/${init}/environ`).uid, 0);
    }
    Deno.kill(init, "SIGTERM");
    await waitFor("the verdict", () => exists(result) && Deno.readTextFileSync(result).endsWith("\n"));
    assert.equal(Deno.readTextFileSync(result).trim(), "PASS");
  } finally {
    await killTree(init);
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("a user namespace with a PID namespace of its own: the init and a child with other credentials round-trip", () =>
  initTree("init", 2));

for (
  const [what, cycles, leaveRunning] of [["plain", 0, false], ["dump and restore", 1, false], [
    "-R, then dump and restore",
    1,
    true,
  ], ["10 cycles", 10, false]] as const
) {
  Deno.test(`userns: a parent that changed its uid without exec and its child sharing a pipe with it (${what})`, () =>
    initTree("init-setuid", cycles, leaveRunning));
}

Deno.test("a container-like tree: user, PID, UTS, IPC, network, cgroup and time namespaces together round-trip, all owned by its user namespace", async () => {
  const dir = tempDir();
  // unshare makes the user namespace first (root mapped to root), owning the others; sh is the init.
  const unshare = new Deno.Command("setsid", {
    args: [
      "unshare",
      "-r",
      "--uts",
      "--ipc",
      "--net",
      "--pid",
      "--cgroup",
      "--time",
      "--fork",
      "sh",
      "-c",
      "hostname ct-host; sleep 600 & exec sleep 601",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let init = 0;
  const kinds = ["user", "pid", "uts", "ipc", "net", "cgroup", "time"];
  const nsOf = (pid: number) => kinds.map((ns) => Deno.readLinkSync(`/proc/${pid}/ns/${ns}`));
  // Each of its namespaces is owned by its user namespace (NS_GET_USERNS), as unshare made them.
  const checkOwners = (pid: number) => {
    const user = Deno.readLinkSync(`/proc/${pid}/ns/user`);
    const owners = kinds.slice(1).map((kind) => `${kind} ${ownerUserNamespaceOf(pid, kind)}`);
    assert.deepEqual(owners, kinds.slice(1).map((kind) => `${kind} ${user}`), `process ${pid}`);
  };
  try {
    // Its child is `sleep 600`, not `hostname` (which ends at once).
    const isSleep = (pid: number) => {
      try {
        return Deno.readLinkSync(`/proc/${pid}/exe`).endsWith("/sleep");
      } catch {
        return false;
      }
    };
    await waitFor("the init and its child", () => {
      init = descendants(unshare.pid).find((p) => descendants(p).length === 1 && isSleep(p)) ?? 0;
      return init !== 0 && isSleep(descendants(init)[0]!);
    });
    const host = nsOf(Deno.pid);
    assert.ok(nsOf(init).every((link, i) => link !== host[i]));
    for (const pid of [init, ...descendants(init)]) checkOwners(pid);
    await criuOk(["dump", "-t", `${init}`, "-D", dir, "-j", "-o", "dump.log", "-v4"]);
    await reap(init);
    await unshare.status;
    await criuOk(["restore", "-D", dir, "-d", "-j", "--pidfile", `${dir}/pid`, "-o", "restore.log", "-v4"]);
    init = Number(Deno.readTextFileSync(`${dir}/pid`).trim());
    const restored = nsOf(init);
    assert.ok(restored.every((link, i) => link !== host[i]), restored.join(" "));
    assert.equal(descendants(init).length, 1);
    for (const pid of [init, ...descendants(init)]) checkOwners(pid);
    assert.match(Deno.readTextFileSync(`/proc/${init}/uid_map`), /^\s*0\s+0\s+1\n$/);
    const hostname = await new Deno.Command("nsenter", { args: ["-t", `${init}`, "-u", "hostname"] })
      .output();
    assert.equal(new TextDecoder().decode(hostname.stdout).trim(), "ct-host");
  } finally {
    if (init) await killTree(init);
    try {
      unshare.kill("SIGKILL");
    } catch {
      // ended with its tree
    }
    await unshare.status;
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("relativeTo() turns a nested namespace's map into ids of the namespace above, split across its extents", () => {
  const ext = (first: number, lowerFirst: number, count: number) =>
    create(uid_gid_extentSchema, { first, lowerFirst, count });
  // The namespace above: its 0 is criu's 0, 1000-1999 criu's 101000-101999, 5000-5009 criu's 102000-102009.
  const above = [ext(0, 0, 1), ext(1000, 101000, 1000), ext(5000, 102000, 10)];
  const nested = [ext(0, 101500, 10)];
  assert.deepEqual(relativeTo(nested, above, "test").map((e) => [e.first, e.lowerFirst, e.count]), [[
    0,
    1500,
    10,
  ]]);
  const spanning = [ext(0, 101999, 2), ext(5, 0, 1)];
  assert.deepEqual(relativeTo(spanning, above, "test").map((e) => [e.first, e.lowerFirst, e.count]), [
    [0, 1999, 1],
    [1, 5000, 1],
    [5, 0, 1],
  ]);
  assert.throws(() => relativeTo([ext(0, 5, 1)], above, "the uid map"), /the uid map: id 5 is not mapped/);
});

function statOf(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/stat`).slice(0, 60);
  } catch {
    return "gone";
  }
}

/**
 * Runs `check` on a rootless tree (`unshare -U -m --map-root-user sleep`) whose mount namespace
 * copies a "host" tree with a covered tmpfs: a private mount namespace of this test's with a
 * tmpfs covered by another at a directory of its own (no pivot_root anywhere). Its stdio is opened
 * inside, so that CRIU sees no file of a mount outside its view. The tree must be left sleeping
 * (state S) after `check`. Needs the test's temporary directory on the root filesystem. `under`:
 * where the covered tmpfs is, below the directory the other one is mounted on (a name it hides).
 */
async function withRootlessCopyOfCoveredTree(
  check: (pid: number, images: string) => Promise<void>,
  under = "",
): Promise<void> {
  const dir = tempDir();
  const images = tempDir();
  // The test's private namespace drops the mounts it can (other tests' come and go on the host)
  // and mounts a fresh proc; then the covered tmpfs; the tree's stdio is a file on the one on top.
  // Spawned with no fd of ours but 0-2 (a file of criu's namespace would stop CRIU first).
  const script = [
    `for m in $(awk '$5 != "/" {print $5}' /proc/self/mountinfo | tac); do umount -l "$m" 2>/dev/null; done`,
    `mount -t proc proc /proc && mkdir -p ${dir}${under} && mount -t tmpfs under ${dir}${under} && mount -t tmpfs over ${dir} && : >${dir}/out`,
    `exec unshare -U -m --map-root-user sh -c 'exec sleep 600 <${dir}/out >${dir}/out 2>&1'`,
  ].join("\n");
  const pid = spawn("/usr/bin/unshare", ["unshare", "-m", "--propagation", "private", "sh", "-c", script], {
    setsid: true,
  });
  try {
    await waitFor("the rootless tree", () => {
      try {
        return Deno.readLinkSync(`/proc/${pid}/exe`).endsWith("/sleep");
      } catch {
        return false;
      }
    });
    await check(pid, images);
    assert.ok(!exists(`${images}/inventory.img`), "a failed dump leaves no checkpoint");
    // Left running as before: not stopped nor traced, back asleep.
    const status = () => Deno.readTextFileSync(`/proc/${pid}/status`);
    assert.match(status(), /^TracerPid:\s+0$/m);
    await waitFor("the tree to sleep again", () => /^State:\s+S/m.test(status()));
  } finally {
    await killTree(pid);
    Deno.removeSync(dir, { recursive: true });
    Deno.removeSync(images, { recursive: true });
  }
}

Deno.test("a rootless tree whose mount namespace copies a host tree with a covered tmpfs is refused by name, and runs on", () =>
  withRootlessCopyOfCoveredTree(async (pid, images) => {
    const r = await criu(["dump", "-t", `${pid}`, "-D", images, "-o", "dump.log", "-v4"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      /Cannot dump the mount \S+ \(tmpfs, mount \d+\) of process \d+: it is covered by mount \d+ \(tmpfs at \S+\), so its files cannot be read; the tree's mount namespace is a copy of the host's mount tree \(its root is criu's \/, with no pivot_root into a rootfs\)/,
    );
    assert.match(r.stderr, /a user namespace's copy locks its mounts together/);
    assert.match(r.stderr, /give the tree a mount namespace with a rootfs of its own \(pivot_root\)/);
  }));

Deno.test("a covered tmpfs whose mountpoint a mount above hides is refused by name too, not as an internal error", () =>
  withRootlessCopyOfCoveredTree(async (pid, images) => {
    const r = await criu(["dump", "-t", `${pid}`, "-D", images]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      /Cannot dump the mount \S+\/sub \(tmpfs, mount \d+\) of process \d+: it is covered by a mount above it \(its mountpoint is not in the tree's view\), so its files cannot be read; the tree's mount namespace is a copy of the host's mount tree/,
    );
  }, "/sub"));

Deno.test({
  name:
    "CRIU 4.2 cannot dump a rootless tree whose mount namespace copies a host tree with a covered tmpfs either",
  ignore: !UPSTREAM,
  fn: () =>
    withRootlessCopyOfCoveredTree(async (pid, images) => {
      const out = await new Deno.Command(UPSTREAM!, {
        args: ["dump", "-t", `${pid}`, "-D", images, "-o", "dump.log", "-v4"],
        stdout: "null",
        stderr: "null",
      }).output();
      assert.equal(out.code, 1);
      const errors = Deno.readTextFileSync(`${images}/dump.log`).split("\n").filter((l) => / Error /.test(l));
      assert.ok(errors.some((l) => /Unable to umount child-overmount/.test(l)), errors.join("\n"));
    }),
});
