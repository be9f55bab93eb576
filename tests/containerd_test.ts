/**
 * containerd 1.6 (Debian's) with criu-ts as its criu, driven as a user would with `ctr`:
 * `ctr containers checkpoint --task` then `ctr containers restore --live` of a busybox container
 * run by runc, which runs `criu` from the PATH that containerd (and so its runc shim) has: a
 * symlink to scripts/criu in the test's temp dir. Also `ctr tasks checkpoint --exit`.
 *
 * Each test has a containerd of its own: its --root, --state, socket and config in a temp dir, the
 * CRI plugin off, a namespace named after the temp dir (so its cgroups are /<namespace>/<id>) and
 * runc's state under the temp dir too (`--runc-root`); it is ended at the end with everything it
 * made. No registry is reachable: the image is an OCI layout made here (a gzipped layer of a
 * busybox-static root, its config, manifest and index.json), imported with `ctr images import`.
 * containerd's default spec gives the container RLIMIT_NOFILE 1024, below this machine's hard
 * limits, so runc can set it (Podman's defaults cannot be: tests/podman_test.ts).
 *
 * Traps met: containerd pauses a task (v1 freezer FROZEN) before it asks runc for a checkpoint,
 * and ctr 1.6 checkpoints with the task left running (`ctr containers checkpoint` has no --exit;
 * a paused task cannot be checkpointed: "cannot pause a paused container"). So that "where it
 * stopped" is exact, the container counts only while /data/go exists and otherwise writes the
 * count it holds to /data/held; the test takes go away, waits until the count is held, and
 * checkpoints then. After the restore the held count must be the one before (a container started
 * afresh would hold 0), and with go back the count goes on from there with no gap and no repeat.
 *
 * The same runs with CRIU 4.x as the criu when CRIU_UPSTREAM names it. Whether containerd can run
 * a container here at all is probed first: the checkpoint tests are skipped only when that probe
 * fails, and the probe's own test then fails with containerd's message.
 */
import assert from "node:assert/strict";
import { BUSYBOX, run } from "./lib/runc.ts";
import { exists, reapZombies, sleep } from "./lib/harness.ts";

const CONTAINERD = "/usr/bin/containerd";
const CTR = "/usr/bin/ctr";
const CRIU = new URL("../scripts/criu", import.meta.url).pathname;
const UPSTREAM = Deno.env.get("CRIU_UPSTREAM");
const IMAGE = "localhost/criu-ts-busybox:1";
const COUNTER = "i=0; while true; do if [ -e /data/go ]; then i=$((i+1)); echo $i >> /data/count; " +
  "else echo $i > /data/held; fi; sleep 0.1; done";
/** Made by containerd's shims (their sockets) and ctr (its FIFOs) whatever the config says. */
const RUN_DIR = "/run/containerd";
const CTR_TIMEOUT_S = 120;
/** The media type of the tar of criu's images in a checkpoint's index. */
const CRIU_TAR = "application/vnd.containerd.container.criu.checkpoint.criu.tar";

/** A containerd of the test's own, whose PATH's `criu` is `criu`. */
interface Daemon {
  dir: string;
  host: string;
  ns: string;
  ctr(args: string[]): Promise<{ ok: boolean; out: string }>;
  stop(): Promise<void>;
}

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Writes `data` as a blob of the OCI layout at `oci`; its descriptor. */
async function blob(oci: string, mediaType: string, data: Uint8Array<ArrayBuffer>) {
  const hex = await sha256(data);
  Deno.writeFileSync(`${oci}/blobs/sha256/${hex}`, data);
  return { mediaType, digest: `sha256:${hex}`, size: data.length };
}

/** An OCI image tarball of a busybox-static root at `${dir}/image.tar`, named IMAGE. */
async function makeImage(dir: string): Promise<string> {
  const rootfs = `${dir}/rootfs`;
  const oci = `${dir}/oci`;
  Deno.mkdirSync(`${rootfs}/bin`, { recursive: true });
  Deno.mkdirSync(`${oci}/blobs/sha256`, { recursive: true });
  Deno.copyFileSync(BUSYBOX, `${rootfs}/bin/busybox`);
  Deno.chmodSync(`${rootfs}/bin/busybox`, 0o755);
  const install = await run("/usr/sbin/chroot", [rootfs, "/bin/busybox", "--install", "-s", "/bin"]);
  assert.ok(install.ok, install.out);
  const tar = await run("/bin/tar", ["-C", rootfs, "-cf", `${dir}/layer.tar`, "."]);
  assert.ok(tar.ok, tar.out);
  const gzip = await run("/bin/gzip", ["-n", "-k", `${dir}/layer.tar`]);
  assert.ok(gzip.ok, gzip.out);
  const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v)) as Uint8Array<ArrayBuffer>;
  const diffId = `sha256:${await sha256(Deno.readFileSync(`${dir}/layer.tar`))}`;
  const layer = await blob(
    oci,
    "application/vnd.oci.image.layer.v1.tar+gzip",
    Deno.readFileSync(`${dir}/layer.tar.gz`),
  );
  const config = await blob(
    oci,
    "application/vnd.oci.image.config.v1+json",
    json({
      architecture: "amd64",
      os: "linux",
      config: { Env: ["PATH=/bin"], Cmd: ["/bin/sh"] },
      rootfs: { type: "layers", diff_ids: [diffId] },
    }),
  );
  const manifest = await blob(
    oci,
    "application/vnd.oci.image.manifest.v1+json",
    json({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config,
      layers: [layer],
    }),
  );
  const named = { ...manifest, annotations: { "io.containerd.image.name": IMAGE } };
  Deno.writeFileSync(`${oci}/index.json`, json({ schemaVersion: 2, manifests: [named] }));
  Deno.writeFileSync(`${oci}/oci-layout`, json({ imageLayoutVersion: "1.0.0" }));
  const image = `${dir}/image.tar`;
  const packed = await run("/bin/tar", ["-C", oci, "-cf", image, "."]);
  assert.ok(packed.ok, packed.out);
  return image;
}

/** Starts a containerd whose `criu` is `criu`, with IMAGE imported. */
async function startDaemon(criu: string): Promise<Daemon> {
  const dir = Deno.makeTempDirSync({ prefix: "criu-containerd-" });
  const ns = `criu-ctd-${dir.slice(dir.lastIndexOf("-") + 1)}`;
  const host = `${dir}/host`;
  for (const d of ["bin", "host", "runc", "fifo"]) Deno.mkdirSync(`${dir}/${d}`);
  Deno.symlinkSync(criu, `${dir}/bin/criu`);
  const sock = `${dir}/containerd.sock`;
  Deno.writeTextFileSync(
    `${dir}/config.toml`,
    [
      "version = 2",
      `root = "${dir}/root"`,
      `state = "${dir}/state"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      "[grpc]",
      `  address = "${sock}"`,
      "[ttrpc]",
      `  address = "${sock}.ttrpc"`,
      "",
    ].join("\n"),
  );
  const log = `${dir}/containerd.log`;
  const daemon = new Deno.Command("/bin/sh", {
    args: ["-c", `exec ${CONTAINERD} --config ${dir}/config.toml >${log} 2>&1`],
    env: { PATH: `${dir}/bin:/usr/sbin:/usr/bin:/sbin:/bin` },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const ctr = async (args: string[]) => {
    // A criu that hangs would hang ctr (it waits for containerd with no deadline of its own).
    const got = await run("/usr/bin/timeout", [
      String(CTR_TIMEOUT_S),
      CTR,
      "--address",
      sock,
      "--namespace",
      ns,
      ...args,
    ]);
    return got.ok || !/^\s*$/.test(got.out)
      ? got
      : { ok: false, out: `ctr ${args[0]} ${args[1]} said nothing (or did not end in ${CTR_TIMEOUT_S} s)` };
  };
  const d: Daemon = {
    dir,
    host,
    ns,
    ctr,
    async stop() {
      // Every container of the namespace, its task killed first.
      const ids = (await ctr(["containers", "list", "--quiet"])).out.split("\n").filter((l) => l !== "");
      for (const id of ids) {
        await ctr(["tasks", "kill", "--signal", "SIGKILL", id]);
        await waitTaskGone(d, id);
        await ctr(["tasks", "delete", id]);
        await ctr(["containers", "delete", id]);
      }
      try {
        daemon.kill("SIGTERM");
      } catch {
        // ended already
      }
      await daemon.status;
      reapZombies(); // the shims, reparented to the test (its subreaper) when they daemonized
      removeCgroups(ns);
      const mounts = () =>
        Deno.readTextFileSync("/proc/self/mountinfo").split("\n").filter((l) => l.includes(dir));
      assert.deepEqual(mounts(), [], "mounts left behind");
      Deno.removeSync(dir, { recursive: true });
      removeEmpty(RUN_DIR);
    },
  };
  try {
    const deadline = performance.now() + 30_000;
    while (!(await ctr(["version"])).ok) {
      if (performance.now() > deadline) assert.fail(`containerd did not start: ${readOr(log)}`);
      await sleep(100);
    }
    const imported = await ctr(["images", "import", await makeImage(dir)]);
    assert.ok(imported.ok, `ctr images import: ${imported.out}`);
  } catch (e) {
    await d.stop();
    throw e;
  }
  return d;
}

function readOr(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return `(no ${path})`;
  }
}

/** The task's status as `ctr tasks list` says (RUNNING, PAUSED, STOPPED), or "gone". */
async function taskStatus(d: Daemon, id: string): Promise<string> {
  const got = await d.ctr(["tasks", "list"]);
  const line = got.out.split("\n").find((l) => l.split(/\s+/)[0] === id);
  return line?.split(/\s+/)[2] ?? "gone";
}

async function waitTaskGone(d: Daemon, id: string): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (["RUNNING", "PAUSED"].includes(await taskStatus(d, id)) && performance.now() < deadline) {
    await sleep(50);
  }
}

/** Removes the namespace's cgroup (/<ns> in every hierarchy), empty once its containers are gone. */
function removeCgroups(ns: string): void {
  const left: string[] = [];
  for (const h of Deno.readDirSync("/sys/fs/cgroup")) {
    const path = `/sys/fs/cgroup/${h.name}/${ns}`;
    if (!exists(path)) continue;
    for (const e of Deno.readDirSync(path)) if (e.isDirectory) left.push(`${path}/${e.name}`);
    for (const e of Deno.readDirSync(path)) if (e.isDirectory) Deno.removeSync(`${path}/${e.name}`);
    Deno.removeSync(path);
  }
  assert.deepEqual(left, [], "container cgroups left behind");
}

/** Removes `dir` and the empty directories in it; what has something in it (another's) stays. */
function removeEmpty(dir: string): void {
  if (!exists(dir)) return;
  for (const e of Deno.readDirSync(dir)) if (e.isDirectory) removeEmpty(`${dir}/${e.name}`);
  try {
    Deno.removeSync(dir);
  } catch {
    // not empty: in use
  }
}

/** Can containerd run a container on this machine? Its answer, or why not. */
async function probe(): Promise<{ ok: true } | { ok: false; why: string }> {
  if (!exists(CONTAINERD) || !exists(CTR)) {
    return { ok: false, why: "containerd is not installed (scripts/setup.sh installs it)" };
  }
  let d: Daemon | undefined;
  try {
    d = await startDaemon(CRIU);
    const got = await d.ctr([
      "run",
      "--rm",
      "--runc-root",
      `${d.dir}/runc`,
      "--fifo-dir",
      `${d.dir}/fifo`,
      IMAGE,
      "probe",
      "/bin/true",
    ]);
    return got.ok ? { ok: true } : { ok: false, why: `ctr run failed: ${got.out}` };
  } catch (e) {
    return { ok: false, why: (e as Error).message };
  } finally {
    await d?.stop();
  }
}

const probed = await probe();

Deno.test({
  name: "containerd runs a busybox container here (the probe the checkpoint tests depend on)",
  ignore: !exists(CONTAINERD),
  fn: () => assert.ok(probed.ok, probed.ok ? "" : probed.why),
});

function counts(d: Daemon): string[] {
  return readOr(`${d.host}/count`).trim().split("\n").filter((l) => /^\d+$/.test(l));
}

/** Waits until `cond` holds; fails saying `what`, with the count so far. */
async function until(d: Daemon, what: string, cond: () => boolean): Promise<void> {
  const deadline = performance.now() + 30_000;
  while (!cond()) {
    if (performance.now() > deadline) assert.fail(`${what}: ${counts(d).join(" ")} (held: ${held(d)})`);
    await sleep(50);
  }
}

/** The media types of the index that image `ref` names (a checkpoint's: criu's tar, spec, ...). */
async function mediaTypes(d: Daemon, ref: string): Promise<string[]> {
  const line = (await d.ctr(["images", "list"])).out.split("\n").find((l) => l.split(/\s+/)[0] === ref);
  assert.ok(line, `no image ${ref}`);
  const index = await d.ctr(["content", "get", line.split(/\s+/)[2]!]);
  assert.ok(index.ok, index.out);
  return JSON.parse(index.out).manifests.map((m: { mediaType: string }) => m.mediaType);
}

function held(d: Daemon): string {
  try {
    return Deno.readTextFileSync(`${d.host}/held`).trim();
  } catch {
    return "";
  }
}

/** Takes /data/go away and waits until the container holds its count (the last line written). */
async function hold(d: Daemon): Promise<number> {
  Deno.removeSync(`${d.host}/go`);
  try {
    Deno.removeSync(`${d.host}/held`);
  } catch {
    // not held before
  }
  await until(
    d,
    "the container did not hold its count",
    () => held(d) !== "" && held(d) === (counts(d).at(-1) ?? "0"),
  );
  return Number(held(d));
}

function assertUnbroken(d: Daemon): void {
  counts(d).forEach((line, i) => assert.equal(line, String(i + 1), `line ${i + 1} of the count`));
}

async function startCounter(d: Daemon, id: string): Promise<void> {
  Deno.writeTextFileSync(`${d.host}/go`, "");
  const started = await d.ctr([
    "run",
    "--detach",
    "--runc-root",
    `${d.dir}/runc`,
    "--fifo-dir",
    `${d.dir}/fifo`,
    "--mount",
    `type=bind,src=${d.host},dst=/data,options=rbind:rw`,
    IMAGE,
    id,
    "/bin/sh",
    "-c",
    COUNTER,
  ]);
  assert.ok(started.ok, `ctr run: ${started.out}`);
  await until(d, "the container did not count to 5", () => counts(d).length >= 5);
}

/** runc's and criu's messages about the last checkpoint or restore, for a failure message. */
function criuLogs(d: Daemon, id: string): string {
  const work = `${d.dir}/state/io.containerd.runtime.v2.task/${d.ns}/${id}/work`;
  const found: string[] = [];
  const visit = (dir: string) => {
    if (!exists(dir)) return;
    for (const e of Deno.readDirSync(dir)) {
      if (e.isDirectory) visit(`${dir}/${e.name}`);
      else if (e.name.endsWith(".log")) {
        found.push(readOr(`${dir}/${e.name}`).split("\n").filter((l) => /Error|Warn/.test(l)).join("\n"));
      }
    }
  };
  visit(work);
  return found.join("\n") + "\n" +
    readOr(`${d.dir}/containerd.log`).split("\n").filter((l) => /level=error/.test(l)).join("\n");
}

const criuOf: [string, string | undefined][] = [["criu-ts", CRIU], ["CRIU 4.x", UPSTREAM]];

for (const [who, criu] of criuOf) {
  Deno.test({
    name:
      `ctr containers checkpoint --task, delete, restore --live, then tasks checkpoint --exit, with ${who}: the count goes on where it stopped`,
    ignore: !probed.ok || criu === undefined,
    fn: async () => {
      const d = await startDaemon(criu!);
      const id = "counter";
      try {
        await startCounter(d, id);
        const atCheckpoint = await hold(d);
        const ref = `localhost/${id}-checkpoint:1`;
        const dumped = await d.ctr(["containers", "checkpoint", "--image", "--rw", "--task", id, ref]);
        assert.ok(dumped.ok, `ctr containers checkpoint: ${dumped.out}\n${criuLogs(d, id)}`);
        assert.equal(await taskStatus(d, id), "RUNNING", "ctr leaves the task running");
        assert.ok((await mediaTypes(d, ref)).includes(CRIU_TAR), `no criu images in ${ref}`);
        // The container as a user removes it: its task killed and deleted, then the container.
        const killed = await d.ctr(["tasks", "kill", "--signal", "SIGKILL", id]);
        assert.ok(killed.ok, killed.out);
        await waitTaskGone(d, id);
        for (const args of [["tasks", "delete", id], ["containers", "delete", id]]) {
          const got = await d.ctr(args);
          assert.ok(got.ok, got.out);
        }
        assert.equal((await d.ctr(["containers", "list", "--quiet"])).out, "", "the container is gone");
        Deno.removeSync(`${d.host}/held`);
        const restored = await d.ctr(["containers", "restore", "--rw", "--live", id, ref]);
        assert.ok(restored.ok, `ctr containers restore: ${restored.out}\n${criuLogs(d, id)}`);
        assert.equal(await taskStatus(d, id), "RUNNING");
        // A container started afresh would hold 0: the restored one holds the count it had.
        await until(d, "the restored container did not say what it holds", () => held(d) !== "");
        assert.equal(Number(held(d)), atCheckpoint, "the count held after the restore");
        Deno.writeTextFileSync(`${d.host}/go`, "");
        await until(d, "the restored container did not count on", () => counts(d).length >= atCheckpoint + 5);
        assertUnbroken(d);
        // The restored container is checkpointed again, its task ended, into a directory of ours:
        // containerd 1.6 cannot put a second checkpoint of a restored container in its content store
        // ("content sha256:...: already exists", with CRIU 4.x too).
        const again = await d.ctr(["tasks", "checkpoint", "--exit", "--image-path", `${d.dir}/again`, id]);
        assert.ok(again.ok, `ctr tasks checkpoint: ${again.out}\n${criuLogs(d, id)}`);
        await waitTaskGone(d, id);
        assert.equal(await taskStatus(d, id), "STOPPED");
        const atEnd = counts(d).length;
        await sleep(500);
        assert.equal(
          counts(d).length,
          atEnd,
          "the restored container counted on after its checkpoint --exit",
        );
        assertUnbroken(d);
        assert.ok(exists(`${d.dir}/again/inventory.img`), "no inventory.img in the second checkpoint");
      } finally {
        await d.stop();
      }
    },
  });

  Deno.test({
    name:
      `ctr tasks checkpoint --exit with ${who}: the task ends and its checkpoint is an image of the content store`,
    ignore: !probed.ok || criu === undefined,
    fn: async () => {
      const d = await startDaemon(criu!);
      const id = "ender";
      try {
        await startCounter(d, id);
        const dumped = await d.ctr(["tasks", "checkpoint", "--exit", id]);
        assert.ok(dumped.ok, `ctr tasks checkpoint: ${dumped.out}\n${criuLogs(d, id)}`);
        const ref = dumped.out.split("\n").at(-1)!;
        assert.ok(
          ref.startsWith(`containerd.io/checkpoint/${id}:`),
          `ctr names the checkpoint image: ${ref}`,
        );
        assert.ok((await mediaTypes(d, ref)).includes(CRIU_TAR), `no criu images in ${ref}`);
        await waitTaskGone(d, id);
        assert.equal(await taskStatus(d, id), "STOPPED");
        const atEnd = counts(d).length;
        await sleep(500);
        assert.equal(counts(d).length, atEnd, "the container counted on after its checkpoint --exit");
        assertUnbroken(d);
      } finally {
        await d.stop();
      }
    },
  });
}
