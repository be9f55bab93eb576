/**
 * LXC 5.0 with criu-ts as its criu: lxc-checkpoint runs `criu` from PATH (here a symlink to
 * scripts/criu in the test's temp dir), dumps with `--freeze-cgroup`, `--ext-mount-map`s for its
 * binds and, when the container has a console, `--external tty[RDEV:DEV]` for it; it restores with
 * `--restore-sibling`, `--root` and `--inherit-fd fd[N]:tty[RDEV:DEV]` giving the console's new pty.
 *
 * A busybox container (`lxc-create -t busybox`, its network `empty`, no AppArmor profile, which
 * this kernel does not run) counts into a file on a bind mount from the host; after each restore
 * the count must go on exactly where it stopped, each task must hold the fds it held before (no fd
 * of criu's or LXC's), and the counter's console must be the one LXC's monitor holds now.
 * Containers with ttys (lxc.tty.max > 0: host ptys bound onto /dev/ttyN, their masters in LXC's
 * monitor) are refused as CRIU 4.2 refuses them, the container left running.
 */
import assert from "node:assert/strict";
import { descendants, sleep } from "./lib/harness.ts";

const CRIU = new URL("../scripts/criu", import.meta.url).pathname;

/** The container's counter: one line per step into the host's file, and one on its stdout. */
const COUNTER = 'i=0\nwhile true; do i=$((i+1)); echo $i >> /data/count; echo "count $i"; sleep 0.1; done\n';

async function lxc(tool: string, args: string[], path: string): Promise<{ ok: boolean; out: string }> {
  const got = await new Deno.Command(`/usr/bin/${tool}`, {
    args,
    env: { PATH: `${path}:/usr/sbin:/usr/bin:/sbin:/bin` },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(got.stdout) + new TextDecoder().decode(got.stderr);
  return { ok: got.success, out: out.trim() };
}

/**
 * lxc-checkpoint -r with its output in a file: its monitor stays behind with what it was given.
 * It also gets an fd far up (200, an open /dev/null), as a shell may leave one: LXC hands it on
 * to criu, and no restored task may get it.
 */
async function lxcDetached(args: string[], path: string): Promise<boolean> {
  const out = `${path}/lxc-restore.out`;
  const got = await new Deno.Command("/bin/bash", {
    args: [
      "-c",
      `exec 200</dev/null; PATH=${path}:$PATH exec /usr/bin/lxc-checkpoint "$@" >${out} 2>&1 </dev/null`,
      "bash",
      ...args,
    ],
  }).output();
  return got.success;
}

function criuErrors(log: string): string {
  try {
    return Deno.readTextFileSync(log).split("\n").filter((l) => /Error/.test(l)).join("\n");
  } catch {
    return `(no ${log})`;
  }
}

/** The empty `lxc.pivot` cgroups lxc-start makes in every hierarchy for its monitor. */
function removeLxcPivots(): void {
  for (const h of Deno.readDirSync("/sys/fs/cgroup")) {
    try {
      Deno.removeSync(`/sys/fs/cgroup/${h.name}/lxc.pivot`);
    } catch {
      // none there, or still in use
    }
  }
}

interface LxcContainer {
  name: string;
  /** The test's temp dir: the `criu` symlink LXC finds in PATH, the images, the host's bind. */
  dir: string;
  images: string;
  host: string;
  rootfs: string;
}

/**
 * A busybox container: network `empty`, no AppArmor profile, `ttys` ttys (lxc.tty.max) and a
 * console unless `console` is false; with `counter`, init respawns /count.sh on the console,
 * counting into host/count (/data in the container, a bind of the host's directory).
 */
async function makeContainer(
  opts: { ttys: number; console: boolean; counter: boolean; idmap?: boolean },
): Promise<LxcContainer> {
  const dir = Deno.makeTempDirSync({ prefix: "criu-lxc-" });
  const name = `criu-ts-${dir.slice(dir.lastIndexOf("-") + 1)}`;
  Deno.symlinkSync(CRIU, `${dir}/criu`);
  const c = {
    name,
    dir,
    images: `${dir}/images`,
    host: `${dir}/host`,
    rootfs: `/var/lib/lxc/${name}/rootfs`,
  };
  Deno.mkdirSync(c.host);
  const created = await lxc("lxc-create", ["-t", "busybox", "-n", name], dir);
  assert.ok(created.ok, created.out);
  const configPath = `/var/lib/lxc/${name}/config`;
  let config = Deno.readTextFileSync(configPath)
    .replace(/^lxc\.net\.0\.type = .*$/m, "lxc.net.0.type = empty")
    .replace(/^lxc\.net\.0\.(link|flags) = .*\n/gm, "")
    .replace(/^lxc\.apparmor\..*\n/gm, "") // else LXC passes --lsm-profile apparmor:..., refused here
    .replace(/^lxc\.tty\.max = .*$/m, `lxc.tty.max = ${opts.ttys}`);
  if (!opts.console) config += "lxc.console.path = none\n";
  if (opts.counter) {
    config += `lxc.mount.entry = ${c.host} data none bind,create=dir 0 0\n`;
    Deno.writeTextFileSync(`${c.rootfs}/count.sh`, COUNTER);
    Deno.writeTextFileSync(`${c.rootfs}/etc/inittab`, "console::respawn:/bin/sh /count.sh\n", {
      append: true,
    });
  }
  if (opts.idmap) {
    // An unprivileged container: its root is uid and gid ID_BASE here; its files and the host's
    // directory are theirs (lxc-create made every file root's).
    config += `lxc.idmap = u 0 ${ID_BASE} 65536\nlxc.idmap = g 0 ${ID_BASE} 65536\n`;
    const owner = `${ID_BASE}:${ID_BASE}`;
    // The container's root must reach its rootfs and the host's directory (mkdtemp makes 0700).
    for (const path of [dir, `/var/lib/lxc/${name}`]) Deno.chmodSync(path, 0o755);
    for (const path of [`/var/lib/lxc/${name}/rootfs`, c.host]) {
      const got = await new Deno.Command("chown", { args: ["-R", "-h", owner, path] }).output();
      assert.ok(got.success, `chown -R ${owner} ${path}: ${new TextDecoder().decode(got.stderr)}`);
    }
  }
  Deno.writeTextFileSync(configPath, config);
  return c;
}

/** The first host uid and gid of an unprivileged container's range. */
const ID_BASE = 100000;

/**
 * Runs `work` with root allowed ID_BASE's range in /etc/subuid and /etc/subgid: LXC maps ids with
 * newuidmap/newgidmap where they are installed (Debian's uidmap, which Podman brings), and they
 * refuse a range the files do not give. The files are put back as they were.
 */
async function withSubordinateIds(work: () => Promise<void>): Promise<void> {
  const line = `root:${ID_BASE}:65536\n`;
  const saved = new Map<string, string | undefined>();
  for (const file of ["/etc/subuid", "/etc/subgid"]) {
    let text: string | undefined;
    try {
      text = Deno.readTextFileSync(file);
    } catch {
      text = undefined;
    }
    saved.set(file, text);
    if (!(text ?? "").split("\n").includes(line.trim())) Deno.writeTextFileSync(file, line, { append: true });
  }
  try {
    await work();
  } finally {
    for (const [file, text] of saved) {
      if (text === undefined) Deno.removeSync(file);
      else Deno.writeTextFileSync(file, text);
    }
  }
}

async function removeContainer(c: LxcContainer): Promise<void> {
  await lxc("lxc-stop", ["-n", c.name, "-k"], c.dir);
  await lxc("lxc-destroy", ["-n", c.name], c.dir);
  Deno.removeSync(c.dir, { recursive: true });
  removeLxcPivots();
  assert.ok(!(await lxc("lxc-ls", [], "/nonexistent")).out.includes(c.name), "the container is gone");
}

function counts(c: LxcContainer): string[] {
  try {
    return Deno.readTextFileSync(`${c.host}/count`).trim().split("\n");
  } catch {
    return [];
  }
}

async function countReaches(c: LxcContainer, n: number): Promise<void> {
  const deadline = performance.now() + 30_000;
  while (counts(c).length < n) {
    if (performance.now() > deadline) {
      assert.fail(`The container did not count to ${n}: ${counts(c).join(" ")}`);
    }
    await sleep(50);
  }
}

function assertUnbroken(lines: string[]): void {
  lines.forEach((line, i) =>
    assert.equal(line, String(i + 1), `line ${i + 1} of the count: ${lines.join(" ")}`)
  );
}

async function initPid(c: LxcContainer): Promise<number> {
  const got = await lxc("lxc-info", ["-n", c.name, "-p", "-H"], c.dir);
  assert.ok(got.ok && /^\d+$/.test(got.out), `no init pid: ${got.out}`);
  return Number(got.out);
}

async function lxcState(c: LxcContainer): Promise<string> {
  return (await lxc("lxc-info", ["-n", c.name, "-s", "-H"], c.dir)).out;
}

/** What an fd is, with the numbers that change on a restore left out (pipe and socket inodes, pty index). */
function fdKind(target: string): string {
  if (/^\/dev\/(console|pts\/\d+)$/.test(target)) return "terminal";
  return target.replace(/^(pipe|socket):\[\d+\]$/, "$1");
}

/** Each task of the container (by its pid inside), with its command and its fds. */
function fdsOf(init: number): Map<number, string> {
  const tasks = new Map<number, string>();
  for (const pid of [init, ...descendants(init)]) {
    try {
      const status = Deno.readTextFileSync(`/proc/${pid}/status`);
      if (/^State:\s+Z/m.test(status)) continue;
      const nsPid = Number(/^NSpid:.*\s(\d+)$/m.exec(status)![1]);
      const fds = [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) =>
        `${e.name}=${fdKind(Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`))}`
      );
      const cmd = Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ").trim();
      tasks.set(nsPid, `${cmd}: ${fds.sort().join(" ")}`);
    } catch {
      // a sleep of the counter that just ended
    }
  }
  // The counter's `sleep` comes and goes between two looks: only long-lived tasks are compared.
  for (const [nsPid, text] of tasks) if (text.startsWith("sleep ")) tasks.delete(nsPid);
  return tasks;
}

/** The counter's stdout is a pty whose slave LXC's monitor (init's parent) holds too: its console. */
function assertOnMonitorsConsole(init: number): void {
  const counter = descendants(init).find((p) => {
    try {
      return Deno.readTextFileSync(`/proc/${p}/cmdline`).includes("/count.sh");
    } catch {
      return false;
    }
  });
  assert.ok(counter !== undefined, "no counter in the container");
  const rdev = Deno.statSync(`/proc/${counter}/fd/1`).rdev;
  const status = Deno.readTextFileSync(`/proc/${init}/status`);
  const monitor = Number(/^PPid:\s+(\d+)$/m.exec(status)![1]);
  assert.match(Deno.readTextFileSync(`/proc/${monitor}/cmdline`), /^\[lxc monitor\]/);
  const held = [...Deno.readDirSync(`/proc/${monitor}/fd`)].some((e) => {
    try {
      return Deno.statSync(`/proc/${monitor}/fd/${e.name}`).rdev === rdev;
    } catch {
      return false;
    }
  });
  assert.ok(held, `the counter's terminal (rdev ${rdev}) is not one LXC's monitor ${monitor} holds`);
}

Deno.test("lxc-checkpoint and restore a busybox container twice: it runs in its cgroup namespace again", async () => {
  const c = await makeContainer({ ttys: 0, console: false, counter: false });
  try {
    const started = await lxc("lxc-start", ["-n", c.name, "-d"], c.dir);
    assert.ok(started.ok, started.out);
    for (let cycle = 0; cycle < 2; cycle++) {
      const dumped = await lxc("lxc-checkpoint", ["-n", c.name, "-D", c.images, "-s"], c.dir);
      assert.ok(dumped.ok, `${dumped.out}\n${criuErrors(`${c.images}/dump.log`)}`);
      assert.equal(await lxcState(c), "STOPPED");
      const restored = await lxcDetached(["-n", c.name, "-D", c.images, "-r"], c.dir);
      assert.ok(restored, criuErrors(`${c.images}/restore.log`));
      const pid = await initPid(c);
      assert.equal(Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0")[0], "init");
      const inside = await lxc("lxc-attach", ["-n", c.name, "--", "/bin/cat", "/proc/self/cgroup"], c.dir);
      // Seen inside, every cgroup is the namespace's root (lxc-attach puts itself in .lxc of v2).
      assert.ok(inside.ok && inside.out.split("\n").every((l) => /:\/(\.lxc)?$/.test(l)), inside.out);
      Deno.removeSync(c.images, { recursive: true });
    }
  } finally {
    await removeContainer(c);
  }
});

Deno.test("lxc-checkpoint and restore a container counting on its console twice: it counts on exactly where it stopped, on LXC's console", async () => {
  const c = await makeContainer({ ttys: 0, console: true, counter: true });
  try {
    const started = await lxc("lxc-start", ["-n", c.name, "-d"], c.dir);
    assert.ok(started.ok, started.out);
    await countReaches(c, 5);
    const before = fdsOf(await initPid(c));
    assert.ok(
      [...before.values()].some((t) => t.includes("/count.sh") && t.includes("1=terminal")),
      [...before.values()].join("\n"),
    );
    for (let cycle = 0; cycle < 2; cycle++) {
      const dumped = await lxc("lxc-checkpoint", ["-n", c.name, "-D", c.images, "-s"], c.dir);
      assert.ok(dumped.ok, `${dumped.out}\n${criuErrors(`${c.images}/dump.log`)}`);
      assert.equal(await lxcState(c), "STOPPED");
      const atCheckpoint = counts(c).length;
      await sleep(300);
      assert.equal(counts(c).length, atCheckpoint, "the container counted on after its checkpoint");
      const restored = await lxcDetached(["-n", c.name, "-D", c.images, "-r"], c.dir);
      assert.ok(
        restored,
        `${Deno.readTextFileSync(`${c.dir}/lxc-restore.out`)}\n${criuErrors(`${c.images}/restore.log`)}`,
      );
      assert.equal(await lxcState(c), "RUNNING");
      await countReaches(c, atCheckpoint + 5);
      assertUnbroken(counts(c));
      const init = await initPid(c);
      assert.deepEqual(fdsOf(init), before, "the tasks' fds after the restore");
      assertOnMonitorsConsole(init);
      Deno.removeSync(c.images, { recursive: true });
    }
  } finally {
    await removeContainer(c);
  }
});

Deno.test("lxc-checkpoint of a container with ttys is refused as CRIU refuses it, and the container counts on", async () => {
  const c = await makeContainer({ ttys: 1, console: true, counter: true });
  try {
    const started = await lxc("lxc-start", ["-n", c.name, "-d"], c.dir);
    assert.ok(started.ok, started.out);
    await countReaches(c, 3);
    const dumped = await lxc("lxc-checkpoint", ["-n", c.name, "-D", c.images, "-s"], c.dir);
    assert.ok(!dumped.ok, "the dump of a container with ttys went through");
    assert.match(
      criuErrors(`${c.images}/dump.log`),
      /Cannot dump the mount \/dev\/tty1 .*: it is pty 0 of a devpts of the tree, whose master no task of the tree holds \(CRIU: "Unable to find a master for \/0"\); with LXC, set lxc.tty.max = 0/,
    );
    assert.equal(await lxcState(c), "RUNNING");
    const atRefusal = counts(c).length;
    await countReaches(c, atRefusal + 3);
    assertUnbroken(counts(c));
  } finally {
    await removeContainer(c);
  }
});

Deno.test("lxc-checkpoint and restore an unprivileged container (lxc.idmap) counting on its console twice: it counts on, still root of its own user namespace", () =>
  withSubordinateIds(async () => {
    const c = await makeContainer({ ttys: 0, console: true, counter: true, idmap: true });
    try {
      const started = await lxc("lxc-start", ["-n", c.name, "-d"], c.dir);
      assert.ok(started.ok, started.out);
      await countReaches(c, 5);
      const init = await initPid(c);
      const uidMap = Deno.readTextFileSync(`/proc/${init}/uid_map`);
      assert.match(
        uidMap,
        new RegExp(`^\\s*0\\s+${ID_BASE}\\s+65536\\s*$`),
        "the container is not id-mapped",
      );
      const before = fdsOf(init);
      for (let cycle = 0; cycle < 2; cycle++) {
        const dumped = await lxc("lxc-checkpoint", ["-n", c.name, "-D", c.images, "-s"], c.dir);
        assert.ok(dumped.ok, `${dumped.out}\n${criuErrors(`${c.images}/dump.log`)}`);
        assert.equal(await lxcState(c), "STOPPED");
        // The container's /dev (a tmpfs its user namespace owns) is archived with the ids it sees,
        // as CRIU archives it: its root's files are 0/0, not ID_BASE's.
        const dev = [...Deno.readDirSync(c.images)].map((e) => e.name).filter((n) =>
          n.startsWith("tmpfs-dev-")
        );
        assert.ok(dev.length > 0, "no tmpfs archive in the images");
        const listing = await new Deno.Command("tar", { args: ["tvzf", `${c.images}/${dev[0]}`] }).output();
        const owners = new TextDecoder().decode(listing.stdout).split("\n").filter((l) => l).map((l) =>
          l.split(/\s+/)[1]
        );
        assert.ok(
          owners.length > 0 && owners.every((o) => o === "0/0"),
          `owners in ${dev[0]}: ${owners.join(" ")}`,
        );
        const atCheckpoint = counts(c).length;
        const restored = await lxcDetached(["-n", c.name, "-D", c.images, "-r"], c.dir);
        assert.ok(
          restored,
          `${Deno.readTextFileSync(`${c.dir}/lxc-restore.out`)}\n${criuErrors(`${c.images}/restore.log`)}`,
        );
        assert.equal(await lxcState(c), "RUNNING");
        await countReaches(c, atCheckpoint + 5);
        assertUnbroken(counts(c));
        const now = await initPid(c);
        assert.equal(Deno.readTextFileSync(`/proc/${now}/uid_map`), uidMap, "the container's uid map");
        assert.match(Deno.readTextFileSync(`/proc/${now}/status`), new RegExp(`^Uid:\\s+${ID_BASE}\\s`, "m"));
        assert.deepEqual(fdsOf(now), before, "the tasks' fds after the restore");
        assertOnMonitorsConsole(now);
        Deno.removeSync(c.images, { recursive: true });
      }
    } finally {
      await removeContainer(c);
    }
  }));
