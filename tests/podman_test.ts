/**
 * Podman 4.3 (Debian's) with criu-ts as its criu: `podman container checkpoint` and `restore` of a
 * busybox container run by runc, Podman finding `criu` in PATH (a symlink to scripts/criu in the
 * test's temp dir). Podman asks criu's version over RPC (go-criu's VERSION request: it wants at
 * least 3.11), then runc drives `criu swrk` as in tests/runc_test.ts.
 *
 * No registry is reachable: the image is imported from a tarball of a busybox-static root. Podman
 * runs with storage of the test's own (vfs under a temp dir), the cgroupfs manager, the file
 * events logger and no network, so that nothing of the host's Podman is used or left behind.
 * Podman asks runc for RLIMIT_NOFILE and RLIMIT_NPROC of 1048576 by default, which runc cannot set
 * here (no CAP_SYS_RESOURCE, hard limits below that: "error setting rlimit type 7: operation not
 * permitted"), so the container gets lower ones with --ulimit.
 *
 * The container counts into a file on a bind mount from the host; after each restore the count
 * must go on exactly where it stopped, under the seccomp filter Podman gave it. Whether Podman can
 * start a container at all is probed first: the checkpoint test is skipped only when that probe
 * fails, and the probe's own test then fails with Podman's reason.
 */
import assert from "node:assert/strict";
import { BUSYBOX, run } from "./lib/runc.ts";
import { exists, sleep } from "./lib/harness.ts";

const PODMAN = "/usr/bin/podman";
const CRIU = new URL("../scripts/criu", import.meta.url).pathname;
const IMAGE = "localhost/criu-ts-busybox:1";
const COUNTER = "i=0; while true; do i=$((i+1)); echo $i >> /data/count; echo $i; sleep 0.1; done";

/** A Podman of the test's own: storage, run and temp dirs, and a PATH whose `criu` is criu-ts. */
interface Store {
  dir: string;
  host: string;
  podman(args: string[]): Promise<{ ok: boolean; out: string }>;
}

/** Our hard limit of a resource (/proc/self/limits), which runc may give the container. */
function hardLimit(name: string): string {
  const line = Deno.readTextFileSync("/proc/self/limits").split("\n").find((l) => l.startsWith(name));
  assert.ok(line, `no ${name} in /proc/self/limits`);
  return line.slice(name.length).trim().split(/\s+/)[1]!;
}

/**
 * --ulimit flags below our hard limits (Podman's defaults are above them here): runc may always
 * lower a limit, never raise one past the hard limit it inherited.
 */
function ulimits(): string[] {
  const low = (name: string) => Math.min(1024, Number(hardLimit(name)));
  const [nofile, nproc] = [low("Max open files"), low("Max processes")];
  return ["--ulimit", `nofile=${nofile}:${nofile}`, "--ulimit", `nproc=${nproc}:${nproc}`];
}

async function makeStore(): Promise<Store> {
  const dir = Deno.makeTempDirSync({ prefix: "criu-podman-" });
  const host = `${dir}/host`;
  for (const d of ["bin", "host", "rootfs/bin", "tmp"]) Deno.mkdirSync(`${dir}/${d}`, { recursive: true });
  Deno.symlinkSync(CRIU, `${dir}/bin/criu`);
  const global = [
    "--root",
    `${dir}/root`,
    "--runroot",
    `${dir}/run`,
    "--tmpdir",
    `${dir}/tmp`,
    "--storage-driver",
    "vfs",
    "--cgroup-manager",
    "cgroupfs",
    "--events-backend",
    "file",
    "--runtime",
    "runc",
  ];
  const podman = async (args: string[]) => {
    const got = await new Deno.Command(PODMAN, {
      args: [...global, ...args],
      env: { PATH: `${dir}/bin:/usr/sbin:/usr/bin:/sbin:/bin` },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(got.stdout) + new TextDecoder().decode(got.stderr);
    return { ok: got.success, out: out.trim() };
  };
  Deno.copyFileSync(BUSYBOX, `${dir}/rootfs/bin/busybox`);
  Deno.chmodSync(`${dir}/rootfs/bin/busybox`, 0o755);
  const install = await run("/usr/sbin/chroot", [`${dir}/rootfs`, "/bin/busybox", "--install", "-s", "/bin"]);
  assert.ok(install.ok, install.out);
  const tar = await run("/bin/tar", ["-C", `${dir}/rootfs`, "-cf", `${dir}/busybox.tar`, "."]);
  assert.ok(tar.ok, tar.out);
  const imported = await podman(["import", `${dir}/busybox.tar`, IMAGE]);
  assert.ok(imported.ok, imported.out);
  return { dir, host, podman };
}

/** Removes every container and image of the store, then the store; checks no mount of it is left. */
async function removeStore(s: Store): Promise<void> {
  await s.podman(["rm", "-a", "-f"]);
  await s.podman(["rmi", "-a", "-f"]);
  const mounts = () =>
    Deno.readTextFileSync("/proc/self/mountinfo").split("\n").filter((l) => l.includes(s.dir));
  for (const line of mounts()) await run("/bin/umount", ["-l", line.split(" ")[4]!]);
  Deno.removeSync(s.dir, { recursive: true });
  assert.deepEqual(mounts(), [], "mounts left behind");
  // The cgroupfs manager's parent of every container's cgroup, with `conmon` (every conmon's):
  // empty once the containers are gone, and removed with them.
  const parents = [...Deno.readDirSync("/sys/fs/cgroup")]
    .map((h) => `/sys/fs/cgroup/${h.name}/libpod_parent`)
    .filter(exists);
  const left = parents.flatMap((p) =>
    [...Deno.readDirSync(p)].filter((e) => e.isDirectory && e.name !== "conmon").map((e) => `${p}/${e.name}`)
  );
  assert.deepEqual(left, [], "container cgroups left behind");
  for (const p of parents) {
    if (exists(`${p}/conmon`)) Deno.removeSync(`${p}/conmon`);
    Deno.removeSync(p);
  }
}

/** Can Podman start a container on this machine? Its answer, or why not. */
async function probe(): Promise<{ ok: true } | { ok: false; why: string }> {
  if (!exists(PODMAN)) return { ok: false, why: "podman is not installed (scripts/setup.sh installs it)" };
  const s = await makeStore();
  try {
    const got = await s.podman(["run", "--rm", "--network", "none", ...ulimits(), IMAGE, "/bin/true"]);
    return got.ok ? { ok: true } : { ok: false, why: `podman run failed: ${got.out}` };
  } finally {
    await removeStore(s);
  }
}

const probed = await probe();

Deno.test({
  name: "Podman starts a busybox container here (the probe the checkpoint test depends on)",
  ignore: !exists(PODMAN),
  fn: () => assert.ok(probed.ok, probed.ok ? "" : probed.why),
});

function counts(s: Store): string[] {
  try {
    return Deno.readTextFileSync(`${s.host}/count`).trim().split("\n");
  } catch {
    return [];
  }
}

async function countReaches(s: Store, n: number): Promise<void> {
  const deadline = performance.now() + 30_000;
  while (counts(s).length < n) {
    if (performance.now() > deadline) {
      assert.fail(`The container did not count to ${n}: ${counts(s).join(" ")}`);
    }
    await sleep(50);
  }
}

async function inspect(s: Store, name: string, format: string): Promise<string> {
  const got = await s.podman(["inspect", "--format", format, name]);
  assert.ok(got.ok, got.out);
  return got.out;
}

/** The seccomp mode of the container's process (2: filters), from its /proc status. */
async function seccompMode(s: Store, name: string): Promise<string> {
  const pid = await inspect(s, name, "{{.State.Pid}}");
  return /^Seccomp:\s+(\d+)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]!;
}

/** Runs the counter detached as container `name`, and waits until it has counted to 5. */
async function startCounter(s: Store, name: string): Promise<void> {
  const args = ["run", "-d", "--name", name, "--network", "none", ...ulimits(), "-v", `${s.host}:/data`];
  const started = await s.podman([...args, IMAGE, "/bin/sh", "-c", COUNTER]);
  assert.ok(started.ok, started.out);
  await countReaches(s, 5);
}

function assertUnbroken(s: Store): void {
  counts(s).forEach((line, i) => assert.equal(line, String(i + 1), `line ${i + 1} of the count`));
}

Deno.test({
  name: "podman container checkpoint and restore, twice: the container counts on exactly where it stopped",
  ignore: !probed.ok,
  fn: async () => {
    const s = await makeStore();
    const name = "counter";
    try {
      await startCounter(s, name);
      assert.equal(await seccompMode(s, name), "2", "Podman gives its containers a seccomp filter");
      for (let cycle = 0; cycle < 2; cycle++) {
        const dumped = await s.podman(["container", "checkpoint", name]);
        assert.ok(dumped.ok, dumped.out);
        assert.equal(await inspect(s, name, "{{.State.Status}}"), "exited");
        const atCheckpoint = counts(s).length;
        await sleep(300);
        assert.equal(counts(s).length, atCheckpoint, "the container counted on after its checkpoint");
        const restored = await s.podman(["container", "restore", name]);
        assert.ok(restored.ok, restored.out);
        assert.equal(await inspect(s, name, "{{.State.Status}}"), "running");
        await countReaches(s, atCheckpoint + 5);
        assertUnbroken(s);
        assert.equal(await seccompMode(s, name), "2", "the seccomp filter after the restore");
      }
      // The container's stdout (conmon's log) went on as well.
      const logs = await s.podman(["logs", name]);
      assert.deepEqual(logs.out.split("\n").slice(0, counts(s).length - 2), counts(s).slice(0, -2));
    } finally {
      await removeStore(s);
    }
  },
});

Deno.test({
  name:
    "podman container checkpoint --export, rm, restore --import: the container counts on exactly where it stopped",
  ignore: !probed.ok,
  fn: async () => {
    const s = await makeStore();
    const name = "migrant";
    try {
      await startCounter(s, name);
      const archive = `${s.dir}/checkpoint.tar.gz`;
      const dumped = await s.podman(["container", "checkpoint", "--export", archive, name]);
      assert.ok(dumped.ok, dumped.out);
      const atCheckpoint = counts(s).length;
      const removed = await s.podman(["rm", "-f", name]);
      assert.ok(removed.ok, removed.out);
      assert.equal((await s.podman(["ps", "-a", "-q"])).out, "", "the container is gone");
      const restored = await s.podman(["container", "restore", "--import", archive]);
      assert.ok(restored.ok, restored.out);
      assert.equal(await inspect(s, name, "{{.State.Status}}"), "running");
      await countReaches(s, atCheckpoint + 5);
      assertUnbroken(s);
    } finally {
      await removeStore(s);
    }
  },
});
