/**
 * Mount namespaces: the mntns workload lives in one of its own, rooted at a bind mount of the root
 * filesystem, with a tmpfs, bind mounts of a file and a directory, a read-only mount, proc, a
 * shared/slave pair and an overmount; it checks its view after restore. The restore's --root is a
 * (non-recursive) bind mount of / that this file makes and removes.
 */
import assert from "node:assert/strict";
import {
  CRIU,
  criu,
  criuOk,
  descendants,
  exists,
  reap,
  ROOT,
  tempDir,
  waitFor,
  Workload,
} from "./lib/harness.ts";
import { python3 } from "./lib/tools.ts";
import { type Case, dumpRestore, registerMatrix, withWorkload } from "./lib/matrix.ts";
import { CriuClient } from "../mod.ts";

const ROOTFS = tempDir();

/**
 * The mounts of this namespace where a restore could leave one: under --root (ROOTFS, besides
 * itself) and criu-ts's scratch directories. Other mounts under /tmp come and go with the other
 * programs on the machine (their tests, their own --root binds).
 */
function ourMounts(): string {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n").filter((l) => {
    const mountpoint = l.split(" ")[4] ?? "";
    return mountpoint.startsWith(`${ROOTFS}/`) || /^\/tmp\/criu-ts-(mnt|tar|tmpfs)-/.test(mountpoint);
  }).join("\n");
}

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

/** The entries of the checkpoint's mountpoints image, as crit decodes them. */
interface CritMount {
  mnt_id: number;
  mountpoint: string;
  root: string;
  ext_key?: string;
  with_plugin?: boolean;
  internal_sharing?: boolean;
}

function mountEntries(images: string): CritMount[] {
  const name = [...Deno.readDirSync(images)].map((e) => e.name).find((n) => /^mountpoints-\d+\.img$/.test(n));
  assert.ok(name, "no mountpoints image");
  const out = new Deno.Command("crit", { args: ["decode", "-i", `${images}/${name}`], stdout: "piped" })
    .outputSync();
  assert.ok(out.success, "crit decode failed");
  return JSON.parse(new TextDecoder().decode(out.stdout)).entries;
}

const MNTNS: Case = { name: "mntns", restoreArgs: ["--root", ROOTFS] };

/** The devices a runc container binds from the host: external both ways (key and path alike). */
const CONTAINER_DEVICES = ["/dev/null", "/dev/urandom"];
const CONTAINER: Case = {
  name: "mntns_container",
  criuArgs: CONTAINER_DEVICES.flatMap((d) => ["--external", `mnt[${d}]:${d}`]),
  restoreArgs: ["--root", ROOTFS],
};

/** An overlayfs inside the tree, its layers on the root filesystem. */
const OVERLAY: Case = { name: "mntns", args: ["overlay"], restoreArgs: ["--root", ROOTFS] };

registerMatrix([MNTNS, CONTAINER, OVERLAY]);

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
      const list = new Deno.Command("tar", {
        args: ["--list", "--gzip", "--file", `${images}/tmpfs-dev-${t.root_dev}.tar.gz.img`],
        stdout: "piped",
        stderr: "piped",
      }).outputSync();
      assert.ok(
        list.success,
        `tar cannot read the archive of ${t.mountpoint}: ${new TextDecoder().decode(list.stderr)}`,
      );
      if (t.mountpoint.endsWith(".mnt/t")) {
        assert.match(
          new TextDecoder().decode(list.stdout),
          /^\.\/d\/b\.txt$/m,
          "t/d/b.txt is not in t's archive",
        );
        // t/h is covered by another tmpfs: t's archive holds what lies under it, as CRIU's does
        const listing = new TextDecoder().decode(list.stdout);
        assert.match(
          listing,
          /^\.\/h\/hidden\.txt$/m,
          "t/h/hidden.txt (under the child mount) is not in t's archive",
        );
        assert.doesNotMatch(listing, /^\.\/h\/top\.txt$/m, "the child mount's top.txt is in t's archive");
      }
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
    const before = ourMounts();
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    for (const pid of tree) await reap(pid);
    const r = await criu(["restore", "-D", images, "-d"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /The --root option is required to restore a mount namespace/);
    assert.equal(ourMounts(), before);
    await criuOk(["restore", "-D", images, "-d", "--root", ROOTFS]);
  }));

Deno.test("mounts already under --root (as runc makes its binds before a restore) stay out of the tree", () =>
  withWorkload(MNTNS, async (w, images) => {
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    for (const pid of tree) await reap(pid);
    const premade = `${ROOTFS}${w.result}.mnt/bdir`;
    run("mount", "-t", "tmpfs", "criu-ts-premade", premade);
    try {
      await criuOk(["restore", "-D", images, "-d", "--root", ROOTFS]);
    } finally {
      run("umount", premade);
    }
    // The workload's own view check fails if the tmpfs came along into its tree.
  }));

Deno.test("a restore that fails once the mount tree is built leaves no mount behind", () =>
  withWorkload(MNTNS, async (w, images) => {
    const before = ourMounts();
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
    assert.equal(ourMounts(), before, "the failed restore left a mount");
    await criuOk(["restore", "-D", images, "-d", "--root", ROOTFS]);
  }));

Deno.test("a restore whose tmpfs archive is damaged is refused by name and leaves no mount behind", () =>
  withWorkload(MNTNS, async (w, images) => {
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    for (const pid of tree) await reap(pid);
    const archive = [...Deno.readDirSync(images)].map((e) => e.name).find((n) =>
      /^tmpfs-dev-.*\.img$/.test(n)
    )!;
    const good = Deno.readFileSync(`${images}/${archive}`);
    Deno.writeTextFileSync(`${images}/${archive}`, "not gzip");
    const before = ourMounts();
    const r = await criu(["restore", "-D", images, "-d", "--root", ROOTFS]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(`Cannot fill the tmpfs at \\S+ from \\S*${archive}: it is not a gzip'd archive`),
    );
    assert.ok(!exists(`/proc/${w.pid}`), "the failed restore left the task");
    assert.equal(ourMounts(), before, "the failed restore left a mount");
    Deno.writeFileSync(`${images}/${archive}`, good);
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

// ---------------------------------------------------------------------------------------------
// External mounts: a tmpfs of the host (outside the workload's view) whose directory d and file
// f.txt the workload binds at edir and efile before it pivots away from the host's mounts.

interface HostTmpfs {
  dir: string;
  file: string;
}

async function withHostTmpfs(body: (host: HostTmpfs) => Promise<void>, shared = false): Promise<void> {
  const top = tempDir("criu-ts-ext-");
  run("mount", "-t", "tmpfs", "criu-ts-ext", top);
  if (shared) run("mount", "--make-shared", top);
  try {
    Deno.mkdirSync(`${top}/d`);
    Deno.writeTextFileSync(`${top}/d/in.txt`, "host dir");
    Deno.writeTextFileSync(`${top}/f.txt`, "host file");
    const host = { dir: `${top}/d`, file: `${top}/f.txt` };
    await body(host);
    // The workload wrote these after its checks: the host's own directory and file took them.
    assert.equal(Deno.readTextFileSync(`${host.dir}/out.txt`), "written into the host dir");
    assert.equal(Deno.readTextFileSync(host.file), "written through the fd");
  } finally {
    run("umount", "-l", top);
    Deno.removeSync(top, { recursive: true });
  }
}

/** The mntns workload with its external binds, and the mountpoints they have inside its view. */
function withExternalWorkload(
  host: HostTmpfs,
  body: (w: Workload, images: string, edir: string, efile: string) => Promise<void>,
  mode: "ext" | "ext-slave" | "ext-shared" = "ext",
): Promise<void> {
  return withWorkload({ name: "mntns", args: [mode, host.dir, host.file] }, async (w, images) => {
    await body(w, images, `${w.result}.mnt/edir`, `${w.result}.mnt/efile`);
    if (mode !== "ext") {
      // Propagation from the host's peer group: the workload must see this under edir/sub.
      Deno.mkdirSync(`${host.dir}/sub`, { recursive: true });
      run("mount", "-t", "tmpfs", "criu-ts-prop", `${host.dir}/sub`);
      Deno.writeTextFileSync(`${host.dir}/sub/p.txt`, "from the host");
    }
  });
}

Deno.test("a bind of a host directory and of a host file, not named, is refused by name", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images) => {
      const r = await criu(["dump", "-t", `${w.pid}`, "-D", images]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /mount \S*\/e(dir|file) \(tmpfs, mount \d+\)/);
      assert.match(r.stderr, /--external mnt\[\S*\/e(dir|file)\]:KEY/);
      assert.ok(!exists(`${images}/inventory.img`));
    })
  ));

Deno.test("external mounts: --external mnt[MOUNTPOINT]:KEY at dump, mnt[KEY]:PATH at restore, twice", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images, edir, efile) => {
      const c: Case = {
        name: "mntns",
        criuArgs: ["--external", `mnt[${edir}]:dirkey`, "--external", `mnt[${efile}]:filekey`],
        restoreArgs: [
          "--root",
          ROOTFS,
          "--external",
          `mnt[dirkey]:${host.dir}`,
          "--external",
          `mnt[filekey]:${host.file}`,
        ],
      };
      await dumpRestore(w, images, c);
      await dumpRestore(w, images, c);
    })
  ));

Deno.test("external mounts: --ext-mount-map MOUNTPOINT:KEY at dump, KEY:PATH at restore", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images, edir, efile) => {
      await dumpRestore(w, images, {
        name: "mntns",
        criuArgs: ["--ext-mount-map", `${edir}:dirkey`, "--ext-mount-map", `${efile}:filekey`],
        restoreArgs: [
          "--root",
          ROOTFS,
          "--ext-mount-map",
          `dirkey:${host.dir}`,
          "-M",
          `filekey:${host.file}`,
        ],
      });
    })
  ));

Deno.test("external mounts: a restore without the key's PATH is refused by name and leaves nothing", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images, edir, efile) => {
      const tree = [w.pid, ...descendants(w.pid)];
      await criuOk([
        "dump",
        "-t",
        `${w.pid}`,
        "-D",
        images,
        "-M",
        `${edir}:dirkey`,
        "-M",
        `${efile}:filekey`,
      ]);
      for (const pid of tree) await reap(pid);
      const before = ourMounts();
      const r = await criu(["restore", "-D", images, "-d", "--root", ROOTFS, "-M", `dirkey:${host.dir}`]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /The mount \S*\/efile is external with key filekey/);
      assert.equal(ourMounts(), before);
      await criuOk([
        "restore",
        "-D",
        images,
        "-d",
        "--root",
        ROOTFS,
        "-M",
        `dirkey:${host.dir}`,
        "-M",
        `filekey:${host.file}`,
      ]);
    })
  ));

Deno.test("external mounts over RPC as runc passes them: ext_mnt key = val = mountpoint, then key = source", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images, edir, efile) => {
      const tree = [w.pid, ...descendants(w.pid)];
      const client = new CriuClient({ criuPath: CRIU });
      await client.dump({
        pid: w.pid,
        imagesDir: images,
        extMnt: [{ key: edir, val: edir }, { key: efile, val: efile }, {
          key: "/dev/null",
          val: "/dev/null",
        }],
      });
      for (const pid of tree) await reap(pid);
      const restored = await client.restore({
        imagesDir: images,
        root: ROOTFS,
        extMnt: [{ key: edir, val: host.dir }, { key: efile, val: host.file }, {
          key: "/dev/null",
          val: "/dev/null",
        }],
      });
      assert.equal(restored.pid, w.pid);
    })
  ));

Deno.test("external mounts found by themselves: --external mnt[] at dump, --ext-mount-map auto at restore", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images) => {
      const c: Case = { name: "mntns", restoreArgs: ["--root", ROOTFS, "--ext-mount-map", "auto"] };
      await dumpRestore(w, images, { ...c, criuArgs: ["--external", "mnt[]"] });
      const log = Deno.readTextFileSync(`${images}/dump.log`);
      assert.match(log, new RegExp(`\\(${w.result}\\.mnt/edir\\) is external: a bind of ${host.dir}\n`));
      assert.match(log, new RegExp(`\\(${w.result}\\.mnt/efile\\) is external: a bind of ${host.file}\n`));
      await dumpRestore(w, images, { ...c, criuArgs: ["--ext-mount-map", "auto"] });
    })
  ));

Deno.test("a mount found external by itself is refused at restore without auto, and nothing is left", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images) => {
      const tree = [w.pid, ...descendants(w.pid)];
      await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "--external", "mnt[]"]);
      for (const pid of tree) await reap(pid);
      const before = ourMounts();
      const r = await criu(["restore", "-D", images, "-d", "--root", ROOTFS]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /was found external by itself at dump .*--ext-mount-map auto/);
      assert.equal(ourMounts(), before);
      await criuOk(["restore", "-D", images, "-d", "--root", ROOTFS, "--external", "mnt[]"]);
    })
  ));

Deno.test("--external mnt[] takes no options but :m and :s", async () => {
  const r = await criu(["dump", "-t", "1", "-D", "/nonexistent", "--external", "mnt[]:x"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /mnt\[\], mnt\[\]:m or mnt\[\]:s/);
});

Deno.test("a runc container's mounts over RPC as runc 1.1 names them: devices, masked files, binds", () =>
  withWorkload({ name: "mntns_container" }, async (w, images) => {
    // runc: every device of the config, key = val = its path; each masked path that is a file,
    // val /dev/null; at restore the devices again and /dev/null for the masks.
    const devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"];
    const masked = ["/proc/keys", "/proc/timer_list"];
    const tree = [w.pid, ...descendants(w.pid)];
    const client = new CriuClient({ criuPath: CRIU });
    await client.dump({
      pid: w.pid,
      imagesDir: images,
      extMnt: [
        ...devices.map((d) => ({ key: d, val: d })),
        ...masked.map((m) => ({ key: m, val: "/dev/null" })),
      ],
    });
    const keys = new Map(mountEntries(images).map((e) => [e.mountpoint, e.ext_key]));
    assert.deepEqual(
      ["/dev/null", "/dev/urandom", ...masked].map((m) => keys.get(m)),
      ["/dev/null", "/dev/urandom", "/dev/null", "/dev/null"],
    );
    for (const pid of tree) await reap(pid);
    const restored = await client.restore({
      imagesDir: images,
      root: ROOTFS,
      extMnt: [...devices, "/dev/null"].map((d) => ({ key: d, val: d })),
    });
    assert.equal(restored.pid, w.pid);
  }));

// ---------------------------------------------------------------------------------------------
// Plugins: tests/plugins/mount_plugin.c takes the mount whose mountpoint ends in
// CRIU_TS_PLUGIN_MOUNT (DUMP_EXT_MOUNT) and binds CRIU_TS_PLUGIN_MOUNT_SOURCE there at restore.

const PLUGINS = tempDir("criu-ts-mount-plugin-");
globalThis.addEventListener("unload", () => Deno.removeSync(PLUGINS, { recursive: true }));

/** Builds the plugin once, when a test first needs it (a build failure fails that test only). */
function mountPlugin(): string {
  if (exists(`${PLUGINS}/mount_plugin.so`)) return PLUGINS;
  const out = new Deno.Command("gcc", {
    args: [
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
    ],
    stderr: "piped",
  }).outputSync();
  if (!out.success) {
    throw new Error(`Building mount_plugin.c failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return PLUGINS;
}

function pluginEnv(trace: string, host: HostTmpfs, mode = ""): Record<string, string> {
  return {
    CRIU_TS_PLUGIN_TRACE: trace,
    CRIU_TS_PLUGIN_MOUNT: "/edir",
    CRIU_TS_PLUGIN_MOUNT_SOURCE: host.dir,
    CRIU_TS_PLUGIN_MODE: mode,
  };
}

Deno.test("a plugin takes a mount no option names (DUMP_EXT_MOUNT) and mounts it again (RESTORE_EXT_MOUNT)", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images, edir, efile) => {
      const trace = `${w.dir}/plugin.trace`;
      const env = pluginEnv(trace, host);
      const tree = [w.pid, ...descendants(w.pid)];
      await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-L", mountPlugin(), "-M", `${efile}:filekey`], {
        env,
      });
      const entry = mountEntries(images).find((e) => e.mountpoint === edir);
      assert.ok(entry, `no mount ${edir} in the image`);
      assert.equal(entry?.with_plugin, true, "the mount is not marked as the plugin's");
      assert.deepEqual(Deno.readTextFileSync(trace).trim().split("\n"), [
        `dump-mount .${edir} ${entry.mnt_id}`,
      ]);
      for (const pid of tree) await reap(pid);

      // Without the plugin the restore is refused by name, before any mount is made.
      const before = ourMounts();
      const r = await criu(["restore", "-D", images, "-d", "--root", ROOTFS, "-M", `filekey:${host.file}`], {
        env,
      });
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        new RegExp(`A plugin took the mount ${edir} \\(mount \\d+\\) at dump; load one`),
      );
      // A plugin that fails leaves nothing either.
      const failed = await criu(
        ["restore", "-D", images, "-d", "--root", ROOTFS, "-L", mountPlugin(), "-M", `filekey:${host.file}`],
        { env: pluginEnv(trace, host, "fail-restore") },
      );
      assert.equal(failed.code, 1);
      assert.match(
        failed.stderr,
        new RegExp(`A plugin failed to restore the mount ${edir} \\(mount \\d+\\): -22`),
      );
      assert.equal(ourMounts(), before);

      Deno.writeTextFileSync(trace, "");
      await criuOk(
        ["restore", "-D", images, "-d", "--root", ROOTFS, "-L", mountPlugin(), "-M", `filekey:${host.file}`],
        { env },
      );
      assert.match(
        Deno.readTextFileSync(trace),
        new RegExp(`^restore-mount ${entry.mnt_id} /\\S+ / NULL\n$`),
      );
    })
  ));

Deno.test("a TypeScript plugin takes a mount and mounts it again, as a C plugin does", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images, edir, efile) => {
      const dir = tempDir("criu-ts-mount-plugin-ts-");
      try {
        Deno.writeTextFileSync(
          `${dir}/mount.ts`,
          `export { default } from "${new URL(`file://${ROOT}/tests/plugins/mount_plugin.ts`).href}";\n`,
        );
        const trace = `${w.dir}/plugin.trace`;
        const env = pluginEnv(trace, host);
        const tree = [w.pid, ...descendants(w.pid)];
        await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-L", dir, "-M", `${efile}:filekey`], { env });
        const entry = mountEntries(images).find((e) => e.mountpoint === edir);
        assert.equal(entry?.with_plugin, true, "the mount is not marked as the plugin's");
        for (const pid of tree) await reap(pid);
        await criuOk([
          "restore",
          "-D",
          images,
          "-d",
          "--root",
          ROOTFS,
          "-L",
          dir,
          "-M",
          `filekey:${host.file}`,
        ], {
          env,
        });
        assert.match(
          Deno.readTextFileSync(trace),
          new RegExp(
            `^ts dump-mount \\.${edir} ${entry!.mnt_id}\nts restore-mount ${entry!.mnt_id} /\\S+ /\n$`,
          ),
        );
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
    })
  ));

Deno.test("a mount that no plugin takes is refused by name, the plugins asked first", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images, edir) => {
      const trace = `${w.dir}/plugin.trace`;
      const r = await criu(["dump", "-t", `${w.pid}`, "-D", images, "-L", mountPlugin()], {
        env: { ...pluginEnv(trace, host), CRIU_TS_PLUGIN_MOUNT: "/nothing" },
      });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /mount \S*\/e(dir|file) \(tmpfs, mount \d+\)/);
      assert.match(
        Deno.readTextFileSync(trace),
        new RegExp(`dump-mount \\.(${edir}|${edir.replace("edir", "efile")}) \\d+`),
      );
      assert.ok(!exists(`${images}/inventory.img`));
    })
  ));

// ---------------------------------------------------------------------------------------------
// External masters: edir and efile are slaves of a shared tmpfs of the host.

Deno.test("a slave of a host peer group that is not external is refused: unreachable sharing", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images) => {
      const r = await criu(["dump", "-t", `${w.pid}`, "-D", images]);
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        /mount \S*\/e(dir|file) \(tmpfs, mount \d+\).*slave of peer group \d+.*unreachable sharing/,
      );
      assert.ok(!exists(`${images}/inventory.img`));
    }, "ext-slave"), true));

Deno.test("external masters: named external slaves of a host peer group are its slaves again after restore", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images, edir, efile) => {
      const c: Case = {
        name: "mntns",
        criuArgs: ["--external", `mnt[${edir}]:dirkey`, "--external", `mnt[${efile}]:filekey`],
        restoreArgs: ["--root", ROOTFS, "-M", `dirkey:${host.dir}`, "-M", `filekey:${host.file}`],
      };
      await dumpRestore(w, images, c);
      assert.match(
        Deno.readTextFileSync(`${images}/restore.log`),
        /is a slave of the peer group of \S+ again/,
      );
      await dumpRestore(w, images, c);
    }, "ext-slave"), true));

Deno.test("external masters: --external mnt[]:m finds the slaves by themselves; without :m they are refused", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images) => {
      const refused = await criu(["dump", "-t", `${w.pid}`, "-D", images, "--external", "mnt[]"]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /unreachable sharing/);
      await dumpRestore(w, images, {
        name: "mntns",
        criuArgs: ["--external", "mnt[]:m"],
        restoreArgs: ["--root", ROOTFS],
      });
      await dumpRestore(w, images, {
        name: "mntns",
        criuArgs: ["--ext-mount-map", "auto", "--enable-external-masters"],
        restoreArgs: ["--root", ROOTFS],
      });
    }, "ext-slave"), true));

Deno.test("external masters over RPC: auto_ext_mnt with ext_masters at dump, auto_ext_mnt at restore", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images) => {
      const tree = [w.pid, ...descendants(w.pid)];
      const client = new CriuClient({ criuPath: CRIU });
      await client.dump({ pid: w.pid, imagesDir: images, autoExtMnt: true, extMasters: true });
      for (const pid of tree) await reap(pid);
      const restored = await client.restore({ imagesDir: images, root: ROOTFS, autoExtMnt: true });
      assert.equal(restored.pid, w.pid);
    }, "ext-slave"), true));

// ---------------------------------------------------------------------------------------------
// External sharing: edir and efile are in the peer group of a shared tmpfs of the host.

/** The workload's last mount under edir reached the host: the group is the host's both ways. */
function assertSharedBack(host: HostTmpfs): void {
  assert.equal(Deno.readTextFileSync(`${host.dir}/back/b.txt`), "from the workload");
}

Deno.test("external sharing: --enable-external-sharing keeps named external mounts in the host's peer group", () =>
  withHostTmpfs(async (host) => {
    await withExternalWorkload(host, async (w, images, edir, efile) => {
      const c: Case = {
        name: "mntns",
        criuArgs: [
          "--enable-external-sharing",
          "--external",
          `mnt[${edir}]:dirkey`,
          "--external",
          `mnt[${efile}]:filekey`,
        ],
        restoreArgs: ["--root", ROOTFS, "-M", `dirkey:${host.dir}`, "-M", `filekey:${host.file}`],
      };
      await dumpRestore(w, images, c);
      assert.match(Deno.readTextFileSync(`${images}/restore.log`), /is in the peer group of \S+ again/);
      await dumpRestore(w, images, c);
    }, "ext-shared");
    assertSharedBack(host);
  }, true));

Deno.test("external sharing: --external mnt[]:s finds the mounts by themselves and keeps their group", () =>
  withHostTmpfs(async (host) => {
    await withExternalWorkload(host, async (w, images) => {
      await dumpRestore(w, images, {
        name: "mntns",
        criuArgs: ["--external", "mnt[]:s"],
        restoreArgs: ["--root", ROOTFS, "--external", "mnt[]"],
      });
    }, "ext-shared");
    assertSharedBack(host);
  }, true));

Deno.test("external sharing: without the option a shared external mount's group is written as the tree's own", () =>
  withHostTmpfs((host) =>
    withExternalWorkload(host, async (w, images, edir, efile) => {
      await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", "-M", `${edir}:d`, "-M", `${efile}:f`]);
      const entries = mountEntries(images).filter((e) => e.mountpoint === edir || e.mountpoint === efile);
      assert.deepEqual(entries.map((e) => e.internal_sharing), [true, true]);
    }, "ext-shared"), true));

/**
 * A 16 MiB ext4 filesystem image on a loop device (losetup, mkfs.ext4), for `body`; detached and
 * removed afterwards.
 */
async function withLoopDisk(body: (device: string, majorMinor: string) => Promise<void>): Promise<void> {
  const image = `${tempDir()}/disk.img`;
  Deno.writeFileSync(image, new Uint8Array(0));
  Deno.truncateSync(image, 16 << 20);
  run("mkfs.ext4", "-q", "-F", image);
  const out = new Deno.Command("losetup", { args: ["-f", "--show", image], stdout: "piped", stderr: "piped" })
    .outputSync();
  assert.ok(out.success, `losetup: ${new TextDecoder().decode(out.stderr)}`);
  const device = new TextDecoder().decode(out.stdout).trim();
  try {
    const rdev = Deno.statSync(device).rdev!;
    await body(device, `${(rdev >> 8) & 0xfff}/${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}`);
  } finally {
    // The workload's namespace, gone with its last task, held the only mount of the device.
    for (let i = 0; i < 50; i++) {
      if (new Deno.Command("losetup", { args: ["-d", device], stderr: "null" }).outputSync().success) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    Deno.removeSync(image.replace(/\/disk\.img$/, ""), { recursive: true });
  }
}

Deno.test("a disk filesystem mounted in the tree, not named, is refused by name with CRIU's hint, and runs on", () =>
  withLoopDisk((device, majorMinor) =>
    withWorkload({ name: "mntns", args: ["disk", device] }, async (w, images) => {
      const r = await criu(["dump", "-t", `${w.pid}`, "-D", images]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /the mount \S*\.mnt\/disk \(ext4, mount \d+\)/);
      assert.ok(r.stderr.includes(`--external dev[${majorMinor}]:KEY`), r.stderr);
      assert.match(r.stderr, /--enable-fs ext4/);
      assert.ok(!exists(`${images}/inventory.img`));
    })
  ));

Deno.test("--external dev[MAJOR/MINOR]:KEY at dump, dev[KEY]:DEVPATH at restore: the disk is mounted from the device, twice", () =>
  withLoopDisk((device, majorMinor) =>
    withWorkload({ name: "mntns", args: ["disk", device] }, async (w, images) => {
      const c: Case = {
        name: "mntns",
        criuArgs: ["--external", `dev[${majorMinor}]:disk`],
        restoreArgs: ["--root", ROOTFS, "--external", `dev[disk]:${device}`],
      };
      await dumpRestore(w, images, c);
      const disk = mountEntries(images).find((e) => e.mountpoint.endsWith(".mnt/disk")) as
        & CritMount
        & { fstype: number; fsname?: string; source: string };
      assert.equal(disk.ext_key, "CRIU:EXTERNAL_DEV");
      assert.equal(disk.fstype, 16);
      assert.equal(disk.fsname, "ext4");
      assert.equal(disk.source, "dev[disk]");
      await dumpRestore(w, images, c);
    })
  ));

Deno.test("--external dev[]: a restore without the device is refused by name and leaves nothing", () =>
  withLoopDisk((device, majorMinor) =>
    withWorkload({ name: "mntns", args: ["disk", device] }, async (w, images) => {
      const tree = [w.pid, ...descendants(w.pid)];
      await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "--external", `dev[${majorMinor}]:disk`]);
      for (const pid of tree) await reap(pid);
      const before = ourMounts();
      const r = await criu(["restore", "-D", images, "-d", "--root", ROOTFS]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /No device for the mount \S*\.mnt\/disk .*--external dev\[disk\]:DEVPATH/);
      assert.ok(!exists(`/proc/${w.pid}`), "the failed restore left the task");
      assert.equal(ourMounts(), before, "the failed restore left a mount");
      await criuOk(["restore", "-D", images, "-d", "--root", ROOTFS, "--external", `dev[disk]:${device}`]);
    })
  ));

Deno.test("--enable-fs ext4: a disk filesystem in the tree is mounted again from its source device", () =>
  withLoopDisk((device) =>
    withWorkload({ name: "mntns", args: ["disk", device] }, async (w, images) => {
      await dumpRestore(w, images, {
        name: "mntns",
        criuArgs: ["--enable-fs", "ext4"],
        restoreArgs: ["--root", ROOTFS],
      });
      const disk = mountEntries(images).find((e) => e.mountpoint.endsWith(".mnt/disk")) as
        & CritMount
        & { fstype: number; fsname?: string; source: string };
      assert.equal(disk.fstype, 16);
      assert.equal(disk.fsname, "ext4");
      assert.equal(disk.source, device);
    })
  ));

/**
 * A process in a mount namespace of its own that holds (`fd`) or maps (`map`) a file of a tmpfs
 * the host mounted after the namespace was made: its name leads nowhere in the namespace.
 */
async function holdingHostFile(how: "fd" | "map", fn: (pid: number, file: string) => Promise<void>) {
  const dir = tempDir();
  const file = `${dir}/host/f`;
  Deno.mkdirSync(`${dir}/host`);
  const script = [
    "import mmap, os, time",
    `path = "/proc/${Deno.pid}/root${file}"`,
    "while not os.path.exists(path): time.sleep(0.01)",
    "f = open(path, 'rb')",
    how === "map" ? "m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); f.close()" : "",
    `open("${dir}/ready", "w").close()`,
    "time.sleep(600)",
  ].join("\n");
  // Its own session (criu dumps no shell job here); the host's covered /dev/shm off its copy.
  const child = new Deno.Command("setsid", {
    args: [
      "unshare",
      "-m",
      "--propagation",
      "private",
      "sh",
      "-c",
      'umount /dev/shm 2>/dev/null; exec "$0" -c "$1"',
      python3(),
      script,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let mounted = false;
  try {
    await waitFor(
      "the namespace",
      () =>
        exists(`/proc/${child.pid}/ns/mnt`) &&
        Deno.readLinkSync(`/proc/${child.pid}/ns/mnt`) !== Deno.readLinkSync("/proc/self/ns/mnt"),
    );
    run("mount", "-t", "tmpfs", "none", `${dir}/host`);
    mounted = true;
    Deno.writeTextFileSync(file, "of the host");
    await waitFor("the file to be held", () => exists(`${dir}/ready`));
    await fn(child.pid, file);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // ended already (a dump that went through ends it)
    }
    await child.status;
    if (mounted) run("umount", `${dir}/host`);
    Deno.removeSync(dir, { recursive: true });
  }
}

for (const how of ["fd", "map"] as const) {
  Deno.test(`a ${how === "fd" ? "file held open" : "file mapped"} from a host mount outside the tree's mount namespace is refused by name, the process runs on`, () =>
    holdingHostFile(how, async (pid, file) => {
      const images = tempDir();
      try {
        const r = await criu(["dump", "-t", `${pid}`, "-D", images]);
        assert.equal(r.code, 1, r.stderr);
        const object = how === "fd" ? `fd 3 \\(${file}\\)` : `the mapping of ${file}`;
        assert.match(
          r.stderr,
          new RegExp(
            `Cannot dump ${object} of process ${pid}: it is on mount \\d+, which is not in the process's mount namespace, where ${file} does not exist`,
          ),
        );
        assert.match(Deno.readTextFileSync(`/proc/${pid}/status`), /State:\s+S/);
      } finally {
        Deno.removeSync(images, { recursive: true });
      }
    }));
}

Deno.test("mntns: the --root bind mount is removed", () => dropRootfs());
