/**
 * Nested mount namespaces: the nested_mntns workload's root lives in a mount namespace of its own
 * (a bind of / with proc, a tmpfs t and a shared tmpfs sh); its child A unshares CLONE_NEWNS, makes
 * everything a slave and mounts a private tmpfs priv (an open file and its cwd on it), as a
 * systemd service with PrivateTmp= in a container; its child B stays in the root's; C unshares with
 * propagation unchanged (its sh a peer of the root's, mounts going both ways); A's child A1 makes
 * one of its own again, a copy of A's with a tmpfs of its own. After restore
 * the workload checks A's tmpfs, file and cwd, that the root does not see them, and that a mount
 * the root makes under sh reaches A (the slave relation came back) and not the other way.
 * The restore's --root is a (non-recursive) bind mount of / that this file makes and removes.
 */
import assert from "node:assert/strict";
import {
  criu,
  criuOk,
  descendants,
  exists,
  killTree,
  reap,
  tempDir,
  waitFor,
  Workload,
  workloadBin,
} from "./lib/harness.ts";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import { type Case, dumpRestore, registerMatrix, withWorkload } from "./lib/matrix.ts";
import { type CrossCase, registerCross } from "./lib/upstream.ts";
import { critDecode, installed } from "./lib/tools.ts";

const ROOTFS = tempDir();

function run(cmd: string, ...args: string[]): void {
  const out = new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).outputSync();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

run("mount", "--bind", "/", ROOTFS);
let unmounted = false;
function dropRootfs(): void {
  if (unmounted) return;
  unmounted = true;
  run("umount", ROOTFS);
  Deno.removeSync(ROOTFS);
}
globalThis.addEventListener("unload", dropRootfs);

/** The mounts of this namespace a restore could leave behind: under --root and criu-ts's scratch directories. */
function ourMounts(): string {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n").filter((l) => {
    const mountpoint = l.split(" ")[4] ?? "";
    return mountpoint.startsWith(`${ROOTFS}/`) || /^\/tmp\/criu-ts-(mnt|tar|tmpfs)-/.test(mountpoint);
  }).join("\n");
}

const NESTED: Case = { name: "nested_mntns", restoreArgs: ["--root", ROOTFS] };

registerMatrix([NESTED]);

/**
 * The workload's tasks below the root: A (in a mount namespace of its own, with its priv tmpfs),
 * B (in the root's), C (in one of its own, propagation unchanged) and A's child A1 (in one of its
 * own again, with a tmpfs at priv/deep).
 */
function children(root: number): { a: number; b: number; c: number; a1: number } {
  const ns = (pid: number) => Deno.readLinkSync(`/proc/${pid}/ns/mnt`);
  const has = (pid: number, rel: string) =>
    Deno.readTextFileSync(`/proc/${pid}/mountinfo`).includes(`.mnt/${rel} `);
  const kids = descendants(root);
  const a = kids.find((p) => ns(p) !== ns(root) && has(p, "priv") && !has(p, "priv/deep"));
  const b = kids.find((p) => ns(p) === ns(root));
  const c = kids.find((p) => ns(p) !== ns(root) && !has(p, "priv"));
  const a1 = kids.find((p) => has(p, "priv/deep"));
  assert.ok(a && b && c && a1 && kids.length === 4, `unexpected tasks ${kids}`);
  return { a, b, c, a1 };
}

interface CritMount {
  mnt_id: number;
  mountpoint: string;
  fstype: number;
  root_dev: number;
  shared_id?: number;
  master_id?: number;
}

/** The mount namespace id each task's ids image names, by pid. */
function mntNsIds(images: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const name of Deno.readDirSync(images)) {
    const m = /^ids-(\d+)\.img$/.exec(name.name);
    if (!m) continue;
    const entry = critDecode(`${images}/${name.name}`).entries[0] as { mnt_ns_id: number };
    out.set(Number(m[1]), entry.mnt_ns_id);
  }
  return out;
}

function mounts(images: string, id: number): CritMount[] {
  return critDecode(`${images}/mountpoints-${id}.img`).entries as unknown as CritMount[];
}

Deno.test("each mount namespace has its mountpoints image; A's sh is a slave of the root's group, C's a peer", () =>
  withWorkload(NESTED, async (w, images) => {
    const { a, b, c, a1 } = children(w.pid);
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const ids = mntNsIds(images);
    const rootId = ids.get(w.pid)!;
    const aId = ids.get(a)!;
    assert.ok(rootId && aId && rootId !== aId, `A's mount namespace id ${aId} is the root's ${rootId}`);
    assert.equal(ids.get(b), rootId, "B's mount namespace is not the root's");
    const names = [...Deno.readDirSync(images)].map((e) => e.name).filter((n) =>
      n.startsWith("mountpoints-")
    );
    const cId = ids.get(c)!;
    assert.ok(cId && cId !== rootId && cId !== aId, `C's mount namespace id ${cId} is not its own`);
    const a1Id = ids.get(a1)!;
    assert.ok(a1Id && ![rootId, aId, cId].includes(a1Id), `A1's mount namespace id ${a1Id} is not its own`);
    assert.deepEqual(names.sort(), [aId, cId, rootId, a1Id].map((id) => `mountpoints-${id}.img`).sort());
    const rootMounts = mounts(images, rootId);
    const aMounts = mounts(images, aId);
    const at = (list: CritMount[], rel: string) => list.find((m) => m.mountpoint.endsWith(`.mnt/${rel}`));
    assert.ok(!at(rootMounts, "priv"), "priv is in the root's namespace image");
    const priv = at(aMounts, "priv");
    assert.ok(priv && priv.fstype === 5, "A's priv tmpfs is not in its image");
    assert.ok(exists(`${images}/tmpfs-dev-${priv.root_dev}.tar.gz.img`), "no archive of A's priv");
    const [sh, aSh] = [at(rootMounts, "sh"), at(aMounts, "sh")];
    assert.ok(sh?.shared_id, "the root's sh is not shared");
    assert.equal(aSh?.master_id, sh.shared_id, "A's sh is not a slave of the root's sh group");
    assert.equal(
      at(mounts(images, cId), "sh")?.shared_id,
      sh.shared_id,
      "C's sh is not a peer of the root's sh",
    );
    const allIds = [...rootMounts, ...aMounts].map((m) => m.mnt_id);
    assert.equal(new Set(allIds).size, allIds.length, "a mount id is in both namespaces");
    // The file A maps from its priv names priv's mount, as an open file does: CRIU opens it there.
    const files = critDecode(`${images}/files.img`).entries as { reg?: { name: string; mnt_id?: number } }[];
    const mapped = files.filter((f) => f.reg?.name.endsWith("/priv/map.bin"));
    assert.equal(mapped.length, 1, "no single entry for A's mapped priv/map.bin");
    assert.equal(mapped[0]!.reg!.mnt_id, priv.mnt_id, "the mapped file's entry does not name priv's mount");
  }));

/**
 * The mount views of the tree's tasks (root, A, B, C, A1), each line of mountinfo as mountpoint,
 * root, options, filesystem, source, superblock options and propagation, sorted; peer groups named
 * by the order they first appear in, across all the views (their numbers change on restore).
 */
function views(root: number): string[] {
  const { a, b, c, a1 } = children(root);
  const groups = new Map<string, string>();
  const name = (n: string) => {
    if (!groups.has(n)) groups.set(n, `g${groups.size + 1}`);
    return groups.get(n)!;
  };
  return [root, a, b, c, a1].map((pid) =>
    Deno.readTextFileSync(`/proc/${pid}/mountinfo`).trim().split("\n").map((line) => {
      const f = line.split(" ");
      const dash = f.indexOf("-");
      return [f[4], f[3], f[5], ...f.slice(dash + 1), ...f.slice(6, dash)].join(" ");
    }).sort().map((l) => l.replace(/(shared|master):(\d+)/g, (_, kind, n) => `${kind}:${name(n)}`)).join("\n")
  );
}

Deno.test("every task's mount view comes back as it was: mounts, roots, flags, peers and masters", () =>
  withWorkload(NESTED, async (w, images) => {
    const before = views(w.pid);
    await dumpRestore(w, images, NESTED);
    assert.deepEqual(views(w.pid), before);
  }));

Deno.test("a restore that fails while a nested namespace is built leaves no mount or process", () =>
  withWorkload(NESTED, async (w, images) => {
    const tree = [w.pid, ...descendants(w.pid)];
    const { a } = children(w.pid);
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    for (const pid of tree) await reap(pid);
    const priv = mounts(images, mntNsIds(images).get(a)!).find((m) => m.mountpoint.endsWith(".mnt/priv"))!;
    const archive = `${images}/tmpfs-dev-${priv.root_dev}.tar.gz.img`;
    const good = Deno.readFileSync(archive);
    Deno.writeTextFileSync(archive, "not gzip");
    const before = ourMounts();
    const r = await criu(["restore", "-D", images, "-d", "--root", ROOTFS]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Cannot fill the tmpfs at \S+\.mnt\/priv from \S+: it is not a gzip'd archive/);
    // Killed at once; PID 1 may take a moment to reap them (reap fails if one lives on).
    for (const pid of tree) await reap(pid, 5000);
    assert.equal(ourMounts(), before, "the failed restore left a mount");
    // And late, once every namespace is built: the pidfile is written after every task is rebuilt.
    Deno.writeFileSync(archive, good);
    const late = await criu([
      "restore",
      "-D",
      images,
      "-d",
      "--root",
      ROOTFS,
      "--pidfile",
      "/nonexistent/dir/pid",
    ]);
    assert.equal(late.code, 1);
    for (const pid of tree) await reap(pid);
    assert.equal(ourMounts(), before, "the failed restore left a mount");
    await criuOk(["restore", "-D", images, "-d", "--root", ROOTFS]);
  }));

Deno.test("a child in a mount namespace of its own under a root in criu's is refused by name and runs on", async () => {
  const w = await Workload.start("nested_mntns", ["host"]);
  const images = tempDir();
  try {
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /Cannot dump mount namespace mnt:\[\d+\] of process \d+: it differs from the root's, which is criu's own/,
    );
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("the tree in a PID namespace of its own too (nested mount namespaces built through fds passed over sockets)", async () => {
  // The tree's root is pid 1 of a new PID namespace (util-linux's unshare forks it, outside the
  // tree: hence --shell-job); criu cannot take fds from its tasks by pidfd there.
  const dir = tempDir();
  const images = tempDir();
  const result = `${dir}/nested_mntns.result`;
  const log = openFd(`${dir}/nested_mntns.log`, OPEN.WRONLY | OPEN.CREAT | OPEN.CLOEXEC);
  const unshare = spawn(installed("/usr/bin/unshare", "util-linux"), [
    "unshare",
    "-p",
    "-f",
    await workloadBin("nested_mntns"),
    result,
  ], {
    fds: { 1: log, 2: log },
    setsid: true,
  });
  closeFd(log);
  let root = 0;
  try {
    await waitFor("nested_mntns to be ready", () => exists(`${result}.ready`) || exists(result));
    root = descendants(unshare)[0]!;
    const tree = [root, ...descendants(root)];
    await criuOk(["dump", "-j", "-t", `${root}`, "-D", images, "-o", "dump.log", "-v4"]);
    for (const pid of tree) await reap(pid);
    await criuOk(["restore", "-j", "-D", images, "-d", "--root", ROOTFS, "--pidfile", `${images}/pid`]);
    root = Number(Deno.readTextFileSync(`${images}/pid`));
    Deno.kill(root, "SIGTERM");
    await waitFor(
      "nested_mntns to report",
      () => exists(result) && Deno.readTextFileSync(result).endsWith("\n"),
      30000,
    );
    await reap(root);
    assert.equal(
      Deno.readTextFileSync(result).trim(),
      "PASS",
      Deno.readTextFileSync(`${dir}/nested_mntns.log`),
    );
  } finally {
    if (root) await killTree(root);
    await killTree(unshare);
    Deno.removeSync(dir, { recursive: true });
    Deno.removeSync(images, { recursive: true });
  }
});

const CROSS: CrossCase = { ...NESTED, title: "a tree with a nested mount namespace" };
registerCross([CROSS]);

Deno.test("nested_mntns: the --root bind mount is removed", () => dropRootfs());
