/**
 * Mount namespaces: the mntns workload lives in one of its own, rooted at a bind mount of the root
 * filesystem, with a tmpfs, bind mounts of a file and a directory, a read-only mount, proc, a
 * shared/slave pair and an overmount; it checks its view after restore. The restore's --root is a
 * (non-recursive) bind mount of / that this file makes and removes.
 */
import assert from "node:assert/strict";
import { criu, criuOk, descendants, exists, reap, tempDir, Workload } from "./lib/harness.ts";
import { type Case, registerMatrix, withWorkload } from "./lib/matrix.ts";

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

const MNTNS: Case = { name: "mntns", restoreArgs: ["--root", ROOTFS] };

registerMatrix([MNTNS]);

Deno.test("crit decodes the mountpoints image, and the tmpfs archives are gzip'd tar", () =>
  withWorkload(MNTNS, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const names = [...Deno.readDirSync(images)].map((e) => e.name);
    const mnts = names.find((n) => /^mountpoints-\d+\.img$/.test(n));
    assert.ok(mnts, `no mountpoints image in ${names}`);
    const out = new Deno.Command("crit", { args: ["decode", "-i", `${images}/${mnts}`], stdout: "piped" })
      .outputSync();
    assert.ok(out.success, "crit decode failed");
    const img = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(img.magic, "MNTS");
    const points = img.entries.map((e: { mountpoint: string }) => e.mountpoint);
    for (const p of ["/", "/proc", "/t", "/bfile", "/bdir", "/ro", "/sh", "/sl", "/sh/inner", "/over"]) {
      assert.ok(points.some((m: string) => m === p || m.endsWith(`.mnt${p}`)), `${p} missing from ${points}`);
    }
    const tmpfs = img.entries.filter((e: { fstype: number; root: string }) =>
      e.fstype === 5 && e.root === "/"
    );
    for (const t of tmpfs) {
      assert.ok(names.includes(`tmpfs-dev-${t.root_dev}.tar.gz.img`), `no archive for tmpfs ${t.mountpoint}`);
    }
    const ids = new Deno.Command("crit", {
      args: ["decode", "-i", `${images}/ids-${w.pid}.img`],
      stdout: "piped",
    })
      .outputSync();
    assert.match(
      new TextDecoder().decode(ids.stdout),
      new RegExp(`"mnt_ns_id": ${mnts.match(/\d+/)![0]}\\b`),
    );
  }));

Deno.test("a restore of a mount namespace without --root is refused and leaves nothing", () =>
  withWorkload(MNTNS, async (w, images) => {
    const before = Deno.readTextFileSync("/proc/self/mountinfo");
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    for (const pid of tree) await reap(pid);
    const r = await criu(["restore", "-D", images, "-d"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /The --root option is required to restore a mount namespace/);
    assert.equal(Deno.readTextFileSync("/proc/self/mountinfo"), before);
    await criuOk(["restore", "-D", images, "-d", "--root", ROOTFS]);
  }));

Deno.test("a restore that fails once the mount tree is built leaves no mount behind", () =>
  withWorkload(MNTNS, async (w, images) => {
    const before = Deno.readTextFileSync("/proc/self/mountinfo");
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    for (const pid of tree) await reap(pid);
    // The pidfile is written after every task is rebuilt: failing there undoes everything.
    const r = await criu([
      "restore",
      "-D",
      images,
      "-d",
      "--root",
      ROOTFS,
      "--pidfile",
      "/nonexistent/dir/pid",
    ]);
    assert.equal(r.code, 1);
    assert.ok(!exists(`/proc/${w.pid}`), "the failed restore left the task");
    assert.equal(Deno.readTextFileSync("/proc/self/mountinfo"), before, "the failed restore left a mount");
    await criuOk(["restore", "-D", images, "-d", "--root", ROOTFS]);
  }));

Deno.test("a tree with a bind mount from outside its view is refused by name and runs on", async () => {
  // The workload's root mount is fine; a bind of a host path named nowhere is refused.
  const w = await Workload.start("mntns");
  const images = tempDir();
  try {
    // In the workload's namespace: a tmpfs whose subdirectory is bound over "over", then the tmpfs
    // itself unmounted: only /sub of that filesystem stays, with nothing to bind it from.
    const base = `${w.result}.mnt`;
    Deno.mkdirSync(`${base}/gone`);
    run(
      "nsenter",
      "-t",
      `${w.pid}`,
      "-m",
      "sh",
      "-c",
      `mount -t tmpfs gone ${base}/gone && mkdir ${base}/gone/sub && mount --bind ${base}/gone/sub ${base}/over && umount ${base}/gone`,
    );
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /mount \S*\/over \(tmpfs, mount \d+\)/);
    assert.match(r.stderr, /only \/sub of the filesystem is mounted/);
    assert.ok(exists(`/proc/${w.pid}`));
    const status = Deno.readTextFileSync(`/proc/${w.pid}/status`);
    assert.match(status, /TracerPid:\s+0\n/);
    await w.kill();
  } finally {
    if (exists(`/proc/${w.pid}`)) await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("mntns: the --root bind mount is removed", () => dropRootfs());
