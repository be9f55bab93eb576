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
  ROOT,
  tempDir,
  waitFor,
  Workload,
  workloadBin,
} from "./lib/harness.ts";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import { type Case, dumpRestore, label, refusedDump, registerMatrix, withWorkload } from "./lib/matrix.ts";
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

// ---------------------------------------------------------------------------------------------
// Mounts a nested namespace made itself that its parent's has no copy of (nested_mounts): an
// external bind found by itself and a bind of a directory of the root's external mount, an
// overlayfs, a disk; and a root mount that is a slave of a peer group only the nested namespace
// holds.

/** Two host tmpfs (outside the workload's view), each with a directory d; made once, for every case. */
const HOST = [1, 2].map((n) => {
  const top = tempDir("criu-ts-ext-");
  run("mount", "-t", "tmpfs", `criu-ts-ext${n}`, top);
  // Shared: ext-slave's binds are slaves of its group (the private modes do not see it).
  run("mount", "--make-shared", top);
  Deno.mkdirSync(`${top}/d/sub`, { recursive: true });
  Deno.mkdirSync(`${top}/d/back`);
  Deno.writeTextFileSync(`${top}/d/in.txt`, `host dir ${n}`);
  if (n === 1) Deno.writeTextFileSync(`${top}/d/sub/s.txt`, "host sub");
  return { top, dir: `${top}/d` };
});

/** A 16 MiB ext4 filesystem on a loop device (losetup, mkfs.ext4), for every disk case. */
const DISK = (() => {
  const dir = tempDir();
  const image = `${dir}/disk.img`;
  Deno.writeFileSync(image, new Uint8Array(0));
  Deno.truncateSync(image, 16 << 20);
  run(installed("/usr/sbin/mkfs.ext4", "e2fsprogs"), "-q", "-F", image);
  const out = new Deno.Command(installed("/usr/sbin/losetup", "mount"), {
    args: ["-f", "--show", image],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  assert.ok(out.success, `losetup: ${new TextDecoder().decode(out.stderr)}`);
  const device = new TextDecoder().decode(out.stdout).trim();
  const rdev = Deno.statSync(device).rdev!;
  return { dir, device, majorMinor: `${(rdev >> 8) & 0xfff}/${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}` };
})();

let hostGone = false;
/** Takes the host tmpfs and the loop device away; `tries` times, 100 ms apart, for the device. */
async function dropHost(tries = 50): Promise<void> {
  if (hostGone) return;
  hostGone = true;
  for (const h of HOST) {
    run("umount", "-l", h.top);
    Deno.removeSync(h.top, { recursive: true });
  }
  // The workloads' namespaces, gone with their last tasks, held the only mounts of the device.
  for (let i = 0; i < tries; i++) {
    if (new Deno.Command("losetup", { args: ["-d", DISK.device], stderr: "null" }).outputSync().success) {
      break;
    }
    if (i + 1 < tries) await new Promise((r) => setTimeout(r, 100));
  }
  Deno.removeSync(DISK.dir, { recursive: true });
}
globalThis.addEventListener("unload", () => void dropHost(1));

/** An overlayfs made in the nested namespace, its layers directories of the tree's root filesystem. */
const N_OVERLAY: CrossCase = {
  name: "nested_mounts",
  args: ["overlay"],
  restoreArgs: ["--root", ROOTFS],
  title: "an overlayfs made in a nested mount namespace",
};
/** The root's root mount a slave of a peer group only the nested namespace holds. */
const N_SLAVE: CrossCase = {
  name: "nested_mounts",
  args: ["slave-root"],
  restoreArgs: ["--root", ROOTFS],
  title: "a root mount that is a slave of a nested namespace's peer group",
};
/** As N_SLAVE, the root's root mount then shared again: a group of its own under a master only A holds. */
const N_SLAVE_SHARED: CrossCase = {
  name: "nested_mounts",
  args: ["slave-shared-root"],
  restoreArgs: ["--root", ROOTFS],
  title: "a shared root mount that is a slave of a nested namespace's peer group",
};
/** A nested namespace's root mount a slave of a group only its sibling's namespace, made after it, holds. */
const N_SIBLING: CrossCase = {
  name: "nested_mounts",
  args: ["slave-sibling"],
  restoreArgs: ["--root", ROOTFS],
  title: "a nested root mount that is a slave of a later sibling namespace's peer group",
};
/**
 * An external bind the nested namespace alone has (gone), and a bind there of a directory of the
 * root's external mount (esub), found external by themselves (--external mnt[] both ways).
 */
const N_EXT: CrossCase = {
  name: "nested_mounts",
  args: ["ext", HOST[0]!.dir, HOST[1]!.dir],
  criuArgs: ["--external", "mnt[]"],
  restoreArgs: ["--root", ROOTFS],
  title: "external binds in a nested mount namespace",
};
/** An ext4 mounted in the nested namespace, given back by its device (--external dev[]). */
const N_DISK: CrossCase = {
  name: "nested_mounts",
  args: ["disk", DISK.device],
  criuArgs: ["--external", `dev[${DISK.majorMinor}]:disk`],
  restoreArgs: ["--root", ROOTFS, "--external", `dev[disk]:${DISK.device}`],
  title: "a disk mounted in a nested mount namespace",
};

/** The same disk mounted again from its own source (--enable-fs). */
const N_DISK_FS: CrossCase = {
  name: "nested_mounts",
  args: ["disk", DISK.device],
  criuArgs: ["--enable-fs", "ext4"],
  restoreArgs: ["--root", ROOTFS],
  title: "a disk mounted in a nested mount namespace, --enable-fs",
};

/**
 * Slaves of a peer group whose only member's root (pin: /in) holds neither of them: A's pt and the
 * root's pw (root /). The restore founds the group on a helper bind whose root holds them all.
 */
const N_SLAVE_WIDE: CrossCase = {
  name: "nested_mounts",
  args: ["slave-wide"],
  restoreArgs: ["--root", ROOTFS],
  title: "slaves of a peer group whose members' roots do not hold theirs",
  upstreamRestoreFails:
    "CRIU 4.2 copies a slave's group from the group's first member (MOVE_MOUNT_SET_GROUP), which the kernel refuses when that member's root does not hold the slave's: \"Failed to copy sharing\"; with --mntns-compat-mode it binds the slave from that member and fails too",
};

/** The root's pt (root /) a slave of a group whose only member is A's pin (root /in), A's namespace made later. */
const N_SLAVE_WIDE_LATE: CrossCase = {
  name: "nested_mounts",
  args: ["slave-wide-late"],
  restoreArgs: ["--root", ROOTFS],
  title: "a slave of a later namespace's peer group whose member's root does not hold its",
  upstreamRestoreFails: N_SLAVE_WIDE.upstreamRestoreFails!,
};

registerMatrix([
  N_OVERLAY,
  N_SLAVE,
  N_SLAVE_SHARED,
  N_SIBLING,
  N_EXT,
  N_DISK,
  N_DISK_FS,
  N_SLAVE_WIDE,
  N_SLAVE_WIDE_LATE,
]);

/**
 * The mount views of the workload's tasks (the root, then A), as views() writes them, peer groups
 * named by the order they first appear in; the disk's source is the device path the restore was
 * given, hence named DISK.
 */
function treeViews(root: number): string[] {
  const groups = new Map<string, string>();
  const name = (n: string) => {
    if (!groups.has(n)) groups.set(n, `g${groups.size + 1}`);
    return groups.get(n)!;
  };
  return [root, ...descendants(root).sort((x, y) => x - y)].map((pid) =>
    Deno.readTextFileSync(`/proc/${pid}/mountinfo`).trim().split("\n").map((line) => {
      const f = line.split(" ");
      const dash = f.indexOf("-");
      const fs = f.slice(dash + 1);
      if (f[4]!.endsWith(".mnt/disk")) fs[1] = "DISK";
      return [f[4], f[3], f[5], ...fs, ...f.slice(6, dash)].join(" ");
    }).sort().map((l) => l.replace(/(shared|master):(\d+)/g, (_, kind, n) => `${kind}:${name(n)}`)).join("\n")
  );
}

for (
  const c of [N_OVERLAY, N_SLAVE, N_SLAVE_SHARED, N_SIBLING, N_EXT, N_DISK, N_SLAVE_WIDE, N_SLAVE_WIDE_LATE]
) {
  Deno.test(`${c.title}: every task's mount view comes back as it was, propagation included`, () =>
    withWorkload(c, async (w, images) => {
      const before = treeViews(w.pid);
      assert.equal(before.length, c === N_SIBLING ? 3 : 2, "not the workload's tasks");
      await dumpRestore(w, images, c);
      assert.deepEqual(treeViews(w.pid), before);
    }));
}

for (const c of [N_SLAVE, N_SLAVE_SHARED]) {
  Deno.test(`${c.title}: saved so, and its master comes back`, () =>
    withWorkload(c, async (w, images) => {
      const [a] = descendants(w.pid);
      await dumpRestore(w, images, c);
      const ids = mntNsIds(images);
      const root = mounts(images, ids.get(w.pid)!).find((m) => m.mountpoint === "/")!;
      const aRoot = mounts(images, ids.get(a!)!).find((m) => m.mountpoint === "/")!;
      assert.ok(aRoot.shared_id, "A's root mount is not shared");
      assert.equal(root.master_id, aRoot.shared_id, "the root's root mount is not a slave of A's group");
      const shared = c === N_SLAVE_SHARED;
      assert.equal(!!root.shared_id, shared, `the root's root mount is ${shared ? "not " : ""}shared`);
      assert.notEqual(root.shared_id, aRoot.shared_id, "the root's root mount is a peer of A's");
      const log = Deno.readTextFileSync(`${images}/restore.log`);
      assert.match(
        log,
        /Mount \d+ \(\/\) of an earlier namespace is a slave of the peer group of mount \d+ again/,
      );
      // The workload checks both directions: A's mount at pr/froma reaches the root, not the other way.
    }));
}

Deno.test(`${N_SIBLING.title}: saved so, and its master comes back`, () =>
  withWorkload(N_SIBLING, async (w, images) => {
    const [a, b] = descendants(w.pid).sort((x, y) => x - y);
    await dumpRestore(w, images, N_SIBLING);
    const ids = mntNsIds(images);
    const root = (pid: number) => mounts(images, ids.get(pid)!).find((m) => m.mountpoint === "/")!;
    assert.ok(root(b!).shared_id, "B's root mount is not shared");
    assert.equal(root(a!).master_id, root(b!).shared_id, "A's root mount is not a slave of B's group");
    assert.ok(!root(w.pid).shared_id && !root(w.pid).master_id, "the root's root mount is not private");
    const log = Deno.readTextFileSync(`${images}/restore.log`);
    assert.match(
      log,
      /Mount \d+ \(\/\) of an earlier namespace is a slave of the peer group of mount \d+ again/,
    );
    // The workload checks both directions: B's mount at pr/fromb reaches A, A's at pr/froma not B.
  }));

Deno.test(`${N_SLAVE_WIDE.title}: saved so, and both come back slaves of the group through a helper`, () =>
  withWorkload(N_SLAVE_WIDE, async (w, images) => {
    const [a] = descendants(w.pid);
    await dumpRestore(w, images, N_SLAVE_WIDE);
    const ids = mntNsIds(images);
    const at = (pid: number, rel: string) =>
      mounts(images, ids.get(pid)!).find((m) => m.mountpoint === `${w.result}.mnt/${rel}`)! as
        & CritMount
        & { root: string };
    const pin = at(w.pid, "pin");
    assert.equal(pin.root, "/in");
    assert.ok(pin.shared_id, "pin is not shared");
    for (const [pid, rel] of [[w.pid, "pw"], [a!, "pt"]] as const) {
      const m = at(pid, rel);
      assert.equal(m.root, "/");
      assert.equal(m.master_id, pin.shared_id, `${rel} is not a slave of pin's group`);
    }
    const log = Deno.readTextFileSync(`${images}/restore.log`);
    assert.match(log, /Peer group \d+ is founded on a helper bind of \S+\/pt/);
    assert.doesNotMatch(log, /stays private/);
    // The workload checks the propagation: pin/x reaches pt/in/x (A) and pw/in/x, pt/in/z not pin.
  }));

Deno.test(`${N_SLAVE_WIDE_LATE.title}: saved so, and a slave of the group again through a helper`, () =>
  withWorkload(N_SLAVE_WIDE_LATE, async (w, images) => {
    const [a] = descendants(w.pid);
    await dumpRestore(w, images, N_SLAVE_WIDE_LATE);
    const ids = mntNsIds(images);
    const at = (pid: number, rel: string) =>
      mounts(images, ids.get(pid)!).find((m) => m.mountpoint === `${w.result}.mnt/${rel}`)! as
        & CritMount
        & { root: string };
    const pin = at(a!, "pin");
    assert.equal(pin.root, "/in");
    const pt = at(w.pid, "pt");
    assert.equal(pt.root, "/");
    assert.equal(pt.master_id, pin.shared_id, "the root's pt is not a slave of A's pin's group");
    assert.ok(!at(a!, "pt").shared_id && !at(a!, "pt").master_id, "A's pt is not private");
    const log = Deno.readTextFileSync(`${images}/restore.log`);
    assert.match(log, /Peer group \d+ is founded on a helper bind of \S+\/pt/);
    assert.match(
      log,
      /Mount \d+ \(\S+\/pt\) of an earlier namespace is a slave of the peer group of a helper bind of \S+\/pt again/,
    );
    assert.doesNotMatch(log, /stays private/);
    // The workload checks the propagation: A's pin/x reaches the root's pt/in/x, pt/in/z not pin.
  }));

Deno.test("an overlayfs of a nested namespace whose layer is no longer in its view is refused by name", () =>
  refusedDump(
    "nested_mounts",
    ["overlay-gone"],
    /Cannot dump the mount \S+\.mnt\/ovl \(overlay, mount \d+\) of process \d+: its layer \S+\.mnt\/lowtmp\/lower is not in the tree's view/,
  ));

Deno.test("a disk mounted in a nested namespace, not named, is refused by name with CRIU's hints", () =>
  refusedDump("nested_mounts", ["disk", DISK.device], [
    /Cannot dump the mount \S+\.mnt\/disk \(ext4, mount \d+\)/,
    new RegExp(`--external dev\\[${DISK.majorMinor}\\]:KEY`),
    /--enable-fs ext4/,
  ]));

Deno.test("--enable-fs ext4: a disk mounted in a nested namespace is saved as a filesystem mounted again from its source", () =>
  withWorkload(N_DISK_FS, async (w, images) => {
    const [a] = descendants(w.pid);
    await dumpRestore(w, images, N_DISK_FS);
    const disk = mounts(images, mntNsIds(images).get(a!)!).find((m) => m.mountpoint.endsWith(".mnt/disk")) as
      & CritMount
      & { fsname?: string; source: string };
    assert.equal(disk.fstype, 16);
    assert.equal(disk.fsname, "ext4");
    assert.equal(disk.source, `${w.result}.mnt/loopdev`);
  }));

Deno.test("a nested namespace's external bind whose host directory is gone at restore fails by name and leaves nothing", () =>
  withWorkload({ name: "nested_mounts", args: N_EXT.args! }, async (w, images) => {
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "--external", "mnt[]"]);
    for (const pid of tree) await reap(pid);
    const moved = `${HOST[1]!.top}/moved`;
    Deno.renameSync(HOST[1]!.dir, moved);
    try {
      const before = ourMounts();
      const r = await criu(["restore", "-D", images, "-d", "--root", ROOTFS, "--external", "mnt[]"]);
      assert.equal(r.code, 1);
      assert.ok(
        r.stderr.includes(`Cannot restore the mount ${w.result}.mnt/gone (bind from ${HOST[1]!.dir}): `) &&
          r.stderr.includes("ENOENT"),
        r.stderr,
      );
      for (const pid of tree) await reap(pid, 5000);
      assert.equal(ourMounts(), before, "the failed restore left a mount");
    } finally {
      Deno.renameSync(moved, HOST[1]!.dir);
    }
    await criuOk(["restore", "-D", images, "-d", "--root", ROOTFS, "--external", "mnt[]"]);
  }));

Deno.test("a nested namespace's external bind named by mountpoint is refused: a mountpoint key names the root's mounts", () =>
  withWorkload({ name: "nested_mounts", args: N_EXT.args! }, async (w, images) => {
    const base = `${w.result}.mnt`;
    const r = await criu([
      "dump",
      "-t",
      `${w.pid}`,
      "-D",
      images,
      "--external",
      `mnt[${base}/ext]:k1`,
      "--external",
      `mnt[${base}/gone]:k2`,
    ]);
    assert.equal(r.code, 1);
    assert.ok(
      r.stderr.includes(`Cannot dump the mount ${base}/gone (tmpfs, mount `) &&
        r.stderr.includes(
          "it is in a nested mount namespace, where a mount from outside is found by itself with --external mnt[]",
        ),
      r.stderr,
    );
    assert.ok(!exists(`${images}/inventory.img`), "a failed dump leaves no checkpoint");
  }));

Deno.test("external binds of a nested namespace: the root's keyed by mountpoint, the nested one's found by itself, the host's directories written", async () => {
  const written = [`${HOST[0]!.dir}/sub/out.txt`, `${HOST[1]!.dir}/out.txt`];
  for (const f of written) Deno.removeSync(f, { recursive: true });
  await withWorkload({ name: "nested_mounts", args: N_EXT.args! }, async (w, images) => {
    const [a] = descendants(w.pid);
    const ext = `${w.result}.mnt/ext`;
    await dumpRestore(w, images, {
      name: "nested_mounts",
      criuArgs: ["--external", `mnt[${ext}]:k1`, "--external", "mnt[]"],
      restoreArgs: ["--root", ROOTFS, "--external", `mnt[k1]:${HOST[0]!.dir}`],
    });
    const ids = mntNsIds(images);
    const keyed = mounts(images, ids.get(w.pid)!).find((m) => m.mountpoint === ext) as CritMount & {
      ext_key?: string;
    };
    assert.equal(keyed.ext_key, "k1");
    const gone = mounts(images, ids.get(a!)!).find((m) => m.mountpoint.endsWith(".mnt/gone")) as
      & CritMount
      & { ext_key?: string; source: string };
    assert.equal(gone.ext_key, "CRIU:AUTOGENERATED");
    assert.equal(gone.source, HOST[1]!.dir);
  });
  // A wrote these through its esub and gone after the restore: the host's directories took them.
  assert.equal(Deno.readTextFileSync(written[0]!), "written into esub");
  assert.equal(Deno.readTextFileSync(written[1]!), "written into gone");
});

Deno.test("a nested namespace's mount found external by itself is refused at restore without auto, and nothing is left", () =>
  withWorkload({ name: "nested_mounts", args: N_EXT.args! }, async (w, images) => {
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "--external", "mnt[]"]);
    for (const pid of tree) await reap(pid);
    const before = ourMounts();
    const r = await criu(["restore", "-D", images, "-d", "--root", ROOTFS]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /The mount \S+\.mnt\/(ext|gone|esub) \(mount \d+\) was found external by itself at dump/,
    );
    for (const pid of tree) await reap(pid, 5000);
    assert.equal(ourMounts(), before, "the failed restore left a mount");
    await criuOk(["restore", "-D", images, "-d", "--root", ROOTFS, "--external", "mnt[]"]);
  }));

/** tests/plugins/mount_plugin.c, built once into a directory of its own for -L. */
const PLUGINS = tempDir("criu-ts-mount-plugin-");
globalThis.addEventListener("unload", () => Deno.removeSync(PLUGINS, { recursive: true }));
function mountPlugin(): string {
  if (exists(`${PLUGINS}/mount_plugin.so`)) return PLUGINS;
  run(
    "gcc",
    "-shared",
    "-fPIC",
    "-O1",
    "-Wall",
    "-Werror",
    "-I",
    `${ROOT}/src/plugins/include`,
    "-o",
    `${PLUGINS}/mount_plugin.so`,
    `${ROOT}/tests/plugins/mount_plugin.c`,
  );
  return PLUGINS;
}

Deno.test("a plugin takes a nested namespace's mount no option names, and mounts it again there", () =>
  withWorkload({ name: "nested_mounts", args: N_EXT.args! }, async (w, images) => {
    const trace = `${w.dir}/plugin.trace`;
    const env = {
      CRIU_TS_PLUGIN_TRACE: trace,
      CRIU_TS_PLUGIN_MOUNT: "/gone",
      CRIU_TS_PLUGIN_MOUNT_SOURCE: HOST[1]!.dir,
    };
    const [a] = descendants(w.pid);
    const tree = [w.pid, a!];
    const ext = `${w.result}.mnt/ext`;
    await criuOk([
      "dump",
      "-t",
      `${w.pid}`,
      "-D",
      images,
      "-L",
      mountPlugin(),
      "--external",
      `mnt[${ext}]:k1`,
    ], {
      env,
    });
    const gone = mounts(images, mntNsIds(images).get(a!)!).find((m) => m.mountpoint.endsWith(".mnt/gone")) as
      & CritMount
      & { with_plugin?: boolean };
    assert.equal(gone.with_plugin, true, "A's gone is not marked as the plugin's");
    for (const pid of tree) await reap(pid);
    Deno.writeTextFileSync(trace, "");
    await criuOk([
      "restore",
      "-D",
      images,
      "-d",
      "--root",
      ROOTFS,
      "-L",
      mountPlugin(),
      "--external",
      `mnt[k1]:${HOST[0]!.dir}`,
    ], { env });
    assert.match(Deno.readTextFileSync(trace), new RegExp(`^restore-mount ${gone.mnt_id} /\\S+ / NULL\n$`));
  }));

/**
 * ext-slave: A's external bind a slave of the host tmpfs's peer group (--external mnt[]:m), which
 * only that mount carries. The matrix by hand: each run mounts a tmpfs under the host directory
 * before the workload's checks, which A must see through its gone.
 */
const N_EXT_SLAVE: CrossCase = {
  name: "nested_mounts",
  args: ["ext-slave", HOST[0]!.dir, HOST[1]!.dir],
  criuArgs: ["--external", "mnt[]:m"],
  restoreArgs: ["--root", ROOTFS],
  title: "a nested namespace's external bind that is a slave of a host peer group",
  restored: () => mountUnderHost(),
  started: () => unmountUnderHost(),
  cleanup: () => Promise.resolve(unmountUnderHost()),
};

/**
 * ext-shared: A's external bind gone in the host tmpfs's peer group (--external mnt[]:s), which
 * only that mount carries: it must see the host's mount at its sub, and its own mount at gone/back
 * must reach the host directory's back (a peer both ways).
 */
const N_EXT_SHARED: CrossCase = {
  name: "nested_mounts",
  args: ["ext-shared", HOST[0]!.dir, HOST[1]!.dir],
  criuArgs: ["--external", "mnt[]:s"],
  restoreArgs: ["--root", ROOTFS],
  title: "a nested namespace's external bind in a host peer group",
  restored: () => mountUnderHost(),
  started: () => unmountUnderHost(),
  cleanup: () => Promise.resolve(unmountUnderHost()),
  after: () => assertBackOnHost(),
  upstreamRestoreFails:
    "CRIU 4.2's restore (mount-v2) makes an external mount's peer group anew (restore_one_sharing: MS_SHARED), so it is no peer of the host's mount; its --mntns-compat-mode keeps it, checked below",
};

/** N_EXT_SHARED with CRIU's older mount restore (--mntns-compat-mode), which keeps the host's group as ours does. */
const N_EXT_SHARED_COMPAT: CrossCase = {
  name: "nested_mounts",
  args: N_EXT_SHARED.args!,
  criuArgs: N_EXT_SHARED.criuArgs!,
  restoreArgs: ["--root", ROOTFS, "--mntns-compat-mode"],
  title: `${N_EXT_SHARED.title}, --mntns-compat-mode at restore`,
  restored: () => mountUnderHost(),
  started: () => unmountUnderHost(),
  cleanup: () => Promise.resolve(unmountUnderHost()),
  after: () => assertBackOnHost(),
};

/** A tmpfs at the second host directory's sub, with p.txt: a slave of its group must see it. */
function mountUnderHost(): void {
  unmountUnderHost();
  run("mount", "-t", "tmpfs", "criu-ts-prop", `${HOST[1]!.dir}/sub`);
  Deno.writeTextFileSync(`${HOST[1]!.dir}/sub/p.txt`, "from the host");
}

function unmountUnderHost(): void {
  for (const dir of ["sub", "back"]) {
    while (
      new Deno.Command("umount", { args: [`${HOST[1]!.dir}/${dir}`], stderr: "null" }).outputSync().success
    );
  }
}

/**
 * Runs `body` on the ext-slave (or ext-shared) workload, then the host's mount, then the workload's
 * checks; for ext-shared then looks for A's mount at the host directory's back.
 */
function withExtSlave(
  body: (w: Workload, images: string) => Promise<void>,
  c: CrossCase = N_EXT_SLAVE,
): Promise<void> {
  unmountUnderHost();
  return withWorkload(c, async (w, images) => {
    try {
      await body(w, images);
      mountUnderHost();
    } catch (e) {
      unmountUnderHost();
      throw e;
    }
  }).then(() => {
    if (c === N_EXT_SHARED) assertBackOnHost();
  }).finally(unmountUnderHost);
}

/** ext-shared's A mounted a tmpfs at gone/back at the end: as a peer of the host's mount, it is there too. */
function assertBackOnHost(): void {
  assert.equal(
    Deno.readTextFileSync(`${HOST[1]!.dir}/back/b.txt`),
    "from A",
    "A's mount at gone/back did not reach the host (gone is no peer of the host's mount)",
  );
}

Deno.test(`${label(N_EXT_SLAVE)} passes plain`, () => withExtSlave(async () => {}));
Deno.test(`${label(N_EXT_SLAVE)} passes after dump and restore`, () =>
  withExtSlave((w, images) => dumpRestore(w, images, N_EXT_SLAVE)));
Deno.test(`${label(N_EXT_SLAVE)} keeps running after dump --leave-running`, () =>
  withExtSlave(async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", ...N_EXT_SLAVE.criuArgs!]);
    assert.ok(exists(`/proc/${w.pid}`));
  }));
Deno.test(`${label(N_EXT_SLAVE)} passes after 10 dump/restore cycles`, () =>
  withExtSlave(async (w, images) => {
    for (let i = 0; i < 10; i++) await dumpRestore(w, images, N_EXT_SLAVE);
  }));
Deno.test(`${N_EXT_SLAVE.title}: saved external by itself, a slave of the host's group again, the view as it was`, () =>
  withExtSlave(async (w, images) => {
    const before = treeViews(w.pid);
    const [a] = descendants(w.pid);
    await dumpRestore(w, images, N_EXT_SLAVE);
    assert.deepEqual(treeViews(w.pid), before);
    const gone = mounts(images, mntNsIds(images).get(a!)!).find((m) => m.mountpoint.endsWith(".mnt/gone")) as
      & CritMount
      & { ext_key?: string };
    assert.equal(gone.ext_key, "CRIU:AUTOGENERATED");
    assert.ok(gone.master_id, "A's gone is no slave in the image");
    const log = Deno.readTextFileSync(`${images}/restore.log`);
    assert.ok(
      log.includes(`) is a slave of the peer group of ${HOST[1]!.dir} again`),
      "no host master taken",
    );
  }));
Deno.test("a nested namespace's slave of a host peer group that no external mount carries is refused by name", () =>
  withExtSlave(async (w, images) => {
    const ext = `${w.result}.mnt/ext`;
    const r = await criu([
      "dump",
      "-t",
      `${w.pid}`,
      "-D",
      images,
      "--external",
      `mnt[${ext}]:k1`,
      "--external",
      "mnt[]",
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /Cannot dump the mount \S+\.mnt\/gone \(tmpfs, mount \d+\) of process \d+: it is a slave of peer group \d+, which is outside the tree, .*try --external mnt\[\]:m/,
    );
    assert.ok(!exists(`${images}/inventory.img`), "a failed dump leaves no checkpoint");
  }));

Deno.test(`${label(N_EXT_SHARED)} passes plain`, () => withExtSlave(async () => {}, N_EXT_SHARED));
Deno.test(`${label(N_EXT_SHARED)} passes after dump and restore`, () =>
  withExtSlave((w, images) => dumpRestore(w, images, N_EXT_SHARED), N_EXT_SHARED));
Deno.test(`${label(N_EXT_SHARED)} keeps running after dump --leave-running`, () =>
  withExtSlave(async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", ...N_EXT_SHARED.criuArgs!]);
    assert.ok(exists(`/proc/${w.pid}`));
  }, N_EXT_SHARED));
Deno.test(`${label(N_EXT_SHARED)} passes after 10 dump/restore cycles`, () =>
  withExtSlave(async (w, images) => {
    for (let i = 0; i < 10; i++) await dumpRestore(w, images, N_EXT_SHARED);
  }, N_EXT_SHARED));
Deno.test(`${N_EXT_SHARED.title}: saved external by itself in the host's group, in it again, the view as it was`, () =>
  withExtSlave(async (w, images) => {
    const before = treeViews(w.pid);
    const [a] = descendants(w.pid);
    await dumpRestore(w, images, N_EXT_SHARED);
    assert.deepEqual(treeViews(w.pid), before);
    const gone = mounts(images, mntNsIds(images).get(a!)!).find((m) => m.mountpoint.endsWith(".mnt/gone")) as
      & CritMount
      & { ext_key?: string; internal_sharing?: boolean };
    assert.equal(gone.ext_key, "CRIU:AUTOGENERATED");
    assert.ok(gone.shared_id && !gone.internal_sharing, "A's gone is not in the host's group in the image");
    const log = Deno.readTextFileSync(`${images}/restore.log`);
    assert.ok(log.includes(`) is in the peer group of ${HOST[1]!.dir} again`), "no host group taken");
  }, N_EXT_SHARED));
Deno.test("a nested namespace's external bind in a host peer group is refused by name without mnt[]:s", () =>
  withExtSlave(async (w, images) => {
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images, "--external", "mnt[]"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /Cannot dump the mount \S+\.mnt\/(ext|gone) \(tmpfs, mount \d+\) of process \d+: .*--external mnt\[\]:s/,
    );
    assert.ok(!exists(`${images}/inventory.img`), "a failed dump leaves no checkpoint");
  }, N_EXT_SHARED));

registerCross([
  N_OVERLAY,
  N_SLAVE,
  N_SLAVE_SHARED,
  N_SIBLING,
  N_EXT,
  N_DISK,
  N_DISK_FS,
  N_EXT_SLAVE,
  N_EXT_SHARED,
  N_EXT_SHARED_COMPAT,
  N_SLAVE_WIDE,
  N_SLAVE_WIDE_LATE,
]);

Deno.test("nested_mntns: the --root bind mount, the host tmpfs and the loop device are removed", async () => {
  dropRootfs();
  await dropHost();
});
