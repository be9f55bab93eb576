/**
 * Files whose name is gone and file locks (the seed's four file options): each part of the
 * gone_files workload through the standard matrix with its option, all of them together, and
 * each refusal without its option, in CRIU's words, leaving the process as it was.
 */
import assert from "node:assert/strict";
import { type Case, dumpRestore, registerMatrix, withWorkload } from "./lib/matrix.ts";
import {
  CRIU,
  criu,
  criuOk,
  descendants,
  exists,
  killTree,
  openFds,
  reap,
  tempDir,
  waitFor,
  Workload,
  workloadBin,
} from "./lib/harness.ts";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import { python3 } from "./lib/tools.ts";

const ALL = ["--link-remap", "--evasive-devices", "--file-locks"];

registerMatrix([
  { name: "gone_files", args: ["ghost", "cwd"] },
  { name: "gone_files", args: ["map"] },
  { name: "gone_files", args: ["link"], criuArgs: ["--link-remap"] },
  { name: "gone_files", args: ["device"], criuArgs: ["--evasive-devices"] },
  { name: "gone_files", args: ["locks"], criuArgs: ["--file-locks"] },
  { name: "gone_files", args: ["ghost", "link", "device", "locks", "cwd", "map"], criuArgs: ALL },
]);

/** Files next to the workload's result that a dump or restore made. */
function leftovers(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
    n.includes("link_remap") || n.includes(".cr.")
  );
}

/** A dump that must fail with `message`, leaving the workload running and nothing behind. */
function refusedCase(c: Case, options: string[], message: string | RegExp) {
  return () =>
    withWorkload(c, async (w, images) => {
      const r = await criu(["dump", "-t", `${w.pid}`, "-D", images, ...options]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        typeof message === "string" ? new RegExp(message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")) : message,
      );
      assert.ok(exists(`/proc/${w.pid}`), "the workload is gone after a refused dump");
      assert.deepEqual(leftovers(w.dir), []);
      assert.ok(!exists(`${images}/inventory.img`));
    });
}

Deno.test(
  "a file whose name was removed while a hard link remains is refused without --link-remap",
  refusedCase({ name: "gone_files", args: ["link"] }, [], "Can't create link remap for "),
);

Deno.test(
  "a device opened through a removed node is refused without --evasive-devices",
  refusedCase({ name: "gone_files", args: ["device"] }, [], "Use --evasive-devices option"),
);

Deno.test(
  "file locks are refused without --file-locks",
  refusedCase({ name: "gone_files", args: ["locks"] }, [], "You can try --file-locks to dump them"),
);

Deno.test(
  "an unlinked file above --ghost-limit is refused by name",
  refusedCase(
    { name: "gone_files", args: ["ghost"] },
    ["--ghost-limit", "4K"],
    /Cannot dump file \/.*ghost-big \(fd 20\) of process \d+: .*more than the ghost limit of 4096; increase --ghost-limit/,
  ),
);

Deno.test(
  "a dump that fails after making a link remap removes it and leaves the locks held",
  refusedCase(
    { name: "gone_files", args: ["ghost", "link", "device", "locks"] },
    ["--link-remap", "--evasive-devices"],
    "You can try --file-locks to dump them",
  ),
);

Deno.test("--ghost-limit counts a ghost's bytes on disk, not its size with holes", () =>
  withWorkload({ name: "gone_files", args: ["ghost"] }, async (w, images) => {
    // The sparse ghost is 900 KiB long with about 16 KiB of data.
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images, "-R", "--ghost-limit", "8K"]);
    assert.equal(r.code, 1, "8K should be too small for the sparse ghost");
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", "--ghost-limit", "100K"]);
    assert.ok(exists(`${images}/remap-fpath.img`));
    assert.ok(exists(`${images}/ghost-file-2.img`));
  }));

Deno.test("a restore that fails after making ghost files removes them", async () => {
  const fds = openFds();
  const w = await Workload.start("gone_files", ["ghost", "locks", "map"]);
  const images = tempDir();
  try {
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "--file-locks"]);
    for (const pid of tree) await reap(pid);
    // A pidfile that cannot be written fails the restore once every file, ghosts included, is
    // open (a missing file would be refused before anything is made).
    const pidfile = `${images}/missing/restored.pid`;
    const r = await criu(["restore", "-D", images, "-d", "--file-locks", "--pidfile", pidfile]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /Cannot write the pidfile/);
    assert.deepEqual(leftovers(w.dir), []);
    // Nor the names the ghosts were opened by (their own, linked for the open).
    for (const name of ["ghost-big", "ghost-small", "ghost-dir", "mapped"]) {
      assert.ok(!exists(`${w.result}.${name}`), `${name} is left behind`);
    }
    assert.ok(!exists(`/proc/${w.pid}`), "a failed restore left the process behind");
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
});

/** Debian's pycriu over `criu swrk`, as runtimes drive it (tests/workloads/pycriu_client.py). */
async function pycriu(args: Record<string, unknown>): Promise<{ ok: boolean; error?: string }> {
  const driver = new URL("./workloads/pycriu_client.py", import.meta.url).pathname;
  const out = await new Deno.Command(python3(), {
    args: [driver, JSON.stringify({ criu: CRIU, ...args })],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("link_remap, evasive_devices, file_locks and ghost_limit over RPC act as the options", () =>
  withWorkload({ name: "gone_files", args: ["ghost", "link", "device", "locks"] }, async (w, images) => {
    const base = { pid: w.pid, leave_running: true };
    const refused = await pycriu({
      action: "dump",
      images,
      opts: { ...base, link_remap: true, file_locks: true },
    });
    assert.equal(refused.ok, false, "a dump without evasive_devices must fail");
    assert.match(Deno.readTextFileSync(`${images}/criu.log`), /Use --evasive-devices option/);
    const small = await pycriu({
      action: "dump",
      images,
      opts: { ...base, link_remap: true, file_locks: true, evasive_devices: true, ghost_limit: 4096 },
    });
    assert.equal(small.ok, false, "a ghost_limit of 4096 must refuse the sparse ghost");
    assert.match(Deno.readTextFileSync(`${images}/criu.log`), /increase --ghost-limit/);
    const dumped = await pycriu({
      action: "dump",
      images,
      opts: { ...base, link_remap: true, file_locks: true, evasive_devices: true },
    });
    assert.equal(dumped.ok, true, dumped.error);
    assert.ok(exists(`${images}/filelocks.img`) && exists(`${images}/remap-fpath.img`));
    // The dump left the process running (-R): its link remap stays for a restore, as with CRIU.
    for (const name of leftovers(w.dir)) Deno.removeSync(`${w.dir}/${name}`);
  }));

Deno.test("after restores nothing made for them is left: no link_remap.N, no ghost", () =>
  withWorkload({ name: "gone_files", args: ["ghost", "link", "cwd", "map"] }, async (w, images) => {
    const c = { name: "gone_files", criuArgs: ["--link-remap"] };
    for (let i = 0; i < 3; i++) {
      await dumpRestore(w, images, c);
      assert.deepEqual(leftovers(w.dir), [], `after restore ${i + 1}`);
    }
  }));

Deno.test("a process whose executable was removed comes back with it, still removed", async () => {
  const fds = openFds();
  const dir = tempDir();
  const images = `${dir}/images`;
  Deno.mkdirSync(images);
  const prog = `${dir}/prog`;
  Deno.copyFileSync(await workloadBin("gone_files"), prog);
  const log = openFd(`${dir}/log`, OPEN.WRONLY | OPEN.CREAT | OPEN.CLOEXEC);
  const nul = openFd("/dev/null", OPEN.RDONLY | OPEN.CLOEXEC);
  let pid = 0;
  try {
    pid = spawn(prog, ["prog", `${dir}/r`, "ghost"], { fds: { 0: nul, 1: log, 2: log }, setsid: true });
  } finally {
    closeFd(log);
    closeFd(nul);
  }
  try {
    await waitFor("prog to be ready", () => exists(`${dir}/r.ready`));
    Deno.removeSync(prog);
    await criuOk(["dump", "-t", `${pid}`, "-D", images]);
    await reap(pid);
    await criuOk(["restore", "-D", images, "-d"]);
    assert.equal(Deno.readLinkSync(`/proc/${pid}/exe`), `${prog} (deleted)`);
    assert.ok(!exists(prog), "the executable's name is back after the restore");
    Deno.kill(pid, "SIGTERM");
    await waitFor(
      "prog to report",
      () => exists(`${dir}/r`) && Deno.readTextFileSync(`${dir}/r`).endsWith("\n"),
    );
    await reap(pid);
    assert.equal(Deno.readTextFileSync(`${dir}/r`).trim(), "PASS");
  } finally {
    if (pid > 0) await killTree(pid);
    Deno.removeSync(dir, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
});
