/**
 * runc with criu-ts as its criu.
 *
 * First the conversation runc 1.1 has with `criu swrk`, replayed request by request by a small
 * Python client that does what libcontainer's criuSwrk does (tests/workloads/runc_rpc_client.py,
 * on Debian's pycriu protobuf classes): VERSION, FEATURE_CHECK, a DUMP and a RESTORE with every
 * field runc sets, the notifications in CRIU's order, the replies' fields runc reads.
 *
 * Then runc itself (Debian 12's runc 1.1.5, `runc --criu scripts/criu`): a busybox container
 * counting into a file on a bind mount from the host, checkpointed and restored; the count must go
 * on exactly where it stopped; also with --leave-running and with a tmpfs whose contents the
 * container checks after its restore, and with a TCP server behind a veth. Each test removes its
 * container, mounts, cgroups and namespaces. LXC's lxc-checkpoint: tests/lxc_test.ts.
 *
 * And an id-mapped container (a user namespace in config.json, ids 0..65535 mapped to the host's
 * 100000..): after its restore it is still root in its namespace with the same uid and gid maps,
 * its tmpfs holds its files with their owners, and it counts on where it stopped; also with --leave-running, and across the tools with CRIU 4.x
 * when CRIU_UPSTREAM names it.
 *
 * And pty pairs held by a container's init (tests/workloads/pty.c), in the devpts runc mounts for
 * the container: they come back there at their numbers, with their state and queued bytes.
 */
import assert from "node:assert/strict";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import { setChildSubreaper, signalProcess, waitRaw } from "../ffi/wait.ts";
import { isSyscallError } from "../ffi/errors.ts";
import {
  BUSYBOX,
  checkpoint,
  cleanUp,
  type ConsoleSocket,
  consoleSocket,
  countReaches,
  counts,
  makeBundle,
  restore,
  run,
  RUNC,
  runcDetached,
  state,
  staticWorkload,
  tryCheckpoint,
  USERNS_HOST_ID,
} from "./lib/runc.ts";
import { exists, waitFor, workloadBin } from "./lib/harness.ts";
import { installed, python3 } from "./lib/tools.ts";

/** iproute2's ip, which the veth case drives. */
const ipTool = () => installed("/usr/sbin/ip", "iproute2");

const CRIU = new URL("../scripts/criu", import.meta.url).pathname;
const DRIVER = new URL("./workloads/runc_rpc_client.py", import.meta.url).pathname;
const PYTHON = python3();
const SIGKILL = 9;

setChildSubreaper(true);

// ---------------------------------------------------------------------------------------------
// The RPC conversation, as runc has it

interface DriverResult {
  ok: boolean;
  resp?: Record<string, unknown>;
  notifications: [string, number?][];
  fds_with: string[];
  criu_status: number;
  error?: string;
  client_pid?: number;
  root_parent?: number;
}

async function runcLike(args: Record<string, unknown>): Promise<DriverResult> {
  const out = await new Deno.Command(PYTHON, {
    args: [DRIVER, JSON.stringify({ criu: CRIU, ...args })],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  assert.ok(out.success && stdout !== "", `runc-like driver failed (${out.code}): ${stderr}`);
  return JSON.parse(stdout) as DriverResult;
}

/** The fields runc 1.1's Checkpoint() sets on every dump (its defaults: no flags given), but freeze_cgroup. */
function runcDumpOpts(pid: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    pid,
    log_level: 4,
    log_file: "dump.log",
    root: "/",
    manage_cgroups: true,
    notify_scripts: true,
    shell_job: false,
    leave_running: false,
    tcp_established: false,
    ext_unix_sk: false,
    file_locks: false,
    empty_ns: 0x40000000, // always CLONE_NEWNET: "runc doesn't manage network devices"
    orphan_pts_master: true,
    auto_dedup: false,
    lazy_pages: false,
    config_file: "/etc/criu/runc.conf",
    // runc also names the container's freezer cgroup (freeze_cgroup): the runc tests below do.
    ...extra,
  };
}

/** The fields runc 1.1's Restore() sets, but root (its bind mount of the container's rootfs). */
function runcRestoreOpts(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    evasive_devices: true,
    log_level: 4,
    log_file: "restore.log",
    rst_sibling: true,
    manage_cgroups: true,
    notify_scripts: true,
    shell_job: false,
    ext_unix_sk: false,
    tcp_established: false,
    file_locks: false,
    empty_ns: 0x40000000,
    orphan_pts_master: true,
    auto_dedup: false,
    lazy_pages: false,
    config_file: "/etc/criu/runc.conf",
    ...extra,
  };
}

/** A `sleep 100` in its own session, with stdio on /dev/null; our child. */
function startSleeper(): number {
  const devNull = openFd("/dev/null", OPEN.RDWR | OPEN.CLOEXEC);
  try {
    return spawn("/bin/sleep", ["sleep", "100"], {
      fds: { 0: devNull, 1: devNull, 2: devNull },
      setsid: true,
    });
  } finally {
    closeFd(devNull);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return false;
  }
}

/** Kills `pid` and waits until it is gone, reaping it once it is (or becomes) our child. */
async function kill(pid: number): Promise<void> {
  signalProcess(pid, SIGKILL);
  const deadline = performance.now() + 10_000;
  for (;;) {
    try {
      if (waitRaw(pid, true) !== null) return;
    } catch (e) {
      if (!isSyscallError(e, "ECHILD")) throw e;
      if (!alive(pid)) return;
    }
    if (performance.now() > deadline) assert.fail(`Process ${pid} did not end`);
    await sleep(10);
  }
}

function dirs(): { root: string; images: string; work: string } {
  const root = Deno.makeTempDirSync({ prefix: "criu-runc-rpc-" });
  Deno.mkdirSync(`${root}/images`);
  Deno.mkdirSync(`${root}/work`);
  return { root, images: `${root}/images`, work: `${root}/work` };
}

Deno.test("runc's VERSION and FEATURE_CHECK requests get CRIU's answers", async () => {
  const version = await runcLike({ type: "VERSION" });
  assert.equal(version.ok, true);
  const v = version.resp!.version as { major_number: number; minor_number: number };
  // runc wants at least 3.0 (major*10000 + minor*100 + sublevel >= 30000) and 3.14 for cgroup v2.
  assert.ok(v.major_number * 10000 + v.minor_number * 100 >= 31600, JSON.stringify(v));
  assert.equal(version.criu_status, 0);

  // --lazy-pages and --pre-dump: runc asks first, and stops itself on a false answer.
  const features = await runcLike({ type: "FEATURE_CHECK", opts: {}, features: { lazy_pages: true } });
  assert.equal(features.ok, true);
  assert.deepEqual(features.resp!.features, { mem_track: false, lazy_pages: false, pidfd_store: false });
});

Deno.test("runc's dump request is carried out: notified pre-dump then post-dump, logs and stats in the work dir", async () => {
  const { root, images, work } = dirs();
  const pid = startSleeper();
  try {
    const dumped = await runcLike({
      type: "DUMP",
      images,
      work,
      opts: runcDumpOpts(pid),
      // runc names every bind mount, and every masked file, as an external mount.
      ext_mnt: [["/data", "/data"], ["/proc/kcore", "/dev/null"]],
    });
    assert.equal(dumped.ok, true, JSON.stringify(dumped));
    assert.deepEqual(dumped.resp, { type: "DUMP", success: true, dump: { restored: false } });
    assert.deepEqual(dumped.notifications, [["pre-dump"], ["post-dump"]]);
    assert.equal(dumped.criu_status, 0);
    assert.ok(!alive(pid), "a dump without leave_running ends the tree");
    await kill(pid); // reaps the zombie, so that its pid is free again
    const inWork = [...Deno.readDirSync(work)].map((e) => e.name).sort();
    assert.deepEqual(inWork, ["dump.log", "stats-dump"]);
    const inImages = [...Deno.readDirSync(images)].map((e) => e.name);
    assert.ok(inImages.includes("inventory.img") && inImages.includes(`core-${pid}.img`), inImages.join(" "));
    assert.match(Deno.readTextFileSync(`${work}/dump.log`), /criu_opts\.root is ignored for a dump/);

    // The restore runc asks for: the root comes back a child of the client (rst_sibling), its pid
    // in the post-restore notification and in restore.pid.
    // runc's empty_ns CLONE_NEWNET is left out here (with it, a tree in criu's network namespace
    // stays there, as in CRIU); runc's containers always have one, as the tests below.
    const restored = await runcLike({
      type: "RESTORE",
      images,
      work,
      opts: runcRestoreOpts({ empty_ns: 0 }),
    });
    assert.equal(restored.ok, true, JSON.stringify(restored));
    assert.deepEqual(restored.resp, { type: "RESTORE", success: true, restore: { pid } });
    assert.deepEqual(restored.notifications, [["pre-restore"], ["post-restore", pid], ["pre-resume"], [
      "post-resume",
    ]]);
    assert.equal(restored.root_parent, restored.client_pid, "the restored root is the client's child");
    assert.equal(Deno.readTextFileSync(`/proc/${pid}/cmdline`), "sleep\x00100\x00");
    // Acted on (a shell job's terminal would become a pty for runc's console socket), not noted.
    assert.doesNotMatch(Deno.readTextFileSync(`${work}/restore.log`), /orphan_pts_master/);
    assert.ok(Deno.statSync(`${work}/stats-restore`).isFile);
  } finally {
    if (alive(pid)) await kill(pid);
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("runc checkpoint --leave-running: the tree runs on and the dump is notified as without it", async () => {
  const { root, images, work } = dirs();
  const pid = startSleeper();
  try {
    const dumped = await runcLike({
      type: "DUMP",
      images,
      work,
      opts: runcDumpOpts(pid, { leave_running: true }),
    });
    assert.equal(dumped.ok, true, JSON.stringify(dumped));
    assert.deepEqual(dumped.notifications, [["pre-dump"], ["post-dump"]]);
    assert.ok(alive(pid), "leave_running keeps the tree running");
    const state = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ")[0];
    assert.equal(state, "S", "neither stopped nor traced after the dump");
  } finally {
    await kill(pid);
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("What runc may ask and criu-ts cannot do is refused by name, in the reply and in runc's log file", async () => {
  const { root, images, work } = dirs();
  const pid = startSleeper();
  try {
    const cases: [Record<string, unknown>, RegExp][] = [
      // runc checkpoint --parent-path
      [
        { parent_img: "../parent", track_mem: true },
        /^criu_opts\.track_mem \(--track-mem\) is not supported/,
      ],
      // runc checkpoint --lazy-pages (when the feature check was skipped)
      [{ lazy_pages: true }, /^criu_opts\.lazy_pages \(--lazy-pages\) is not supported/],
    ];
    for (const [extra, message] of cases) {
      const refused = await runcLike({ type: "DUMP", images, work, opts: runcDumpOpts(pid, extra) });
      assert.equal(refused.ok, false);
      assert.equal(refused.resp!.cr_errno, 56, "EBADRQC, as CRIU answers a request it cannot set up");
      assert.match(String(refused.resp!.cr_errmsg), message);
      // runc prints only "criu failed: type DUMP errno 56" and the log's path: the reason is there.
      assert.match(
        Deno.readTextFileSync(`${work}/dump.log`),
        new RegExp(`Error: ${message.source.slice(1)}`),
      );
      assert.ok(alive(pid), "a refused dump leaves the tree running");
    }
    // runc checkpoint --pre-dump
    const preDump = await runcLike({ type: "PRE_DUMP", images, work, opts: runcDumpOpts(pid) });
    assert.equal(preDump.ok, false);
    assert.deepEqual(
      [preDump.resp!.type, preDump.resp!.cr_errno, preDump.resp!.cr_errmsg],
      ["PRE_DUMP", 95, "Pre-dump (iterative migration) is not supported by criu-ts yet"],
    );
    assert.deepEqual([...Deno.readDirSync(images)], [], "no image is written by a refused request");
  } finally {
    await kill(pid);
    Deno.removeSync(root, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// runc itself

/** Every line is the one before plus one: the count went on exactly where it stopped. */
function assertUnbroken(lines: string[]): void {
  lines.forEach((line, i) =>
    assert.equal(line, String(i + 1), `line ${i + 1} of the count: ${lines.join(" ")}`)
  );
}

function runcTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, fn });
}

runcTest("runc checkpoint and restore: the container counts on exactly where it stopped", async () => {
  const c = await makeBundle();
  try {
    const started = await runcDetached(c, CRIU, ["run", "-d", c.id]);
    assert.ok(started.ok, started.out);
    await countReaches(c, 5);
    await checkpoint(c, CRIU);
    assert.equal(await state(c), "gone", "runc removes a checkpointed container");
    const atCheckpoint = counts(c).length;
    await sleep(500);
    assert.equal(counts(c).length, atCheckpoint, "nothing counts while the container is checkpointed");
    await restore(c, CRIU);
    assert.equal(await state(c), "running");
    await countReaches(c, atCheckpoint + 5);
    assertUnbroken(counts(c));
  } finally {
    await cleanUp(c);
  }
});

runcTest("runc checkpoint --leave-running, then restore after the container is gone", async () => {
  const c = await makeBundle();
  try {
    const started = await runcDetached(c, CRIU, ["run", "-d", c.id]);
    assert.ok(started.ok, started.out);
    await countReaches(c, 5);
    const before = counts(c).length;
    await checkpoint(c, CRIU, ["--leave-running"]);
    const after = counts(c).length;
    assert.equal(await state(c), "running");
    await countReaches(c, after + 3);
    await run(RUNC, ["kill", c.id, "KILL"]);
    while ((await state(c)) === "running") await sleep(50);
    await run(RUNC, ["delete", "-f", c.id]);
    const beforeRestore = counts(c).length;
    await restore(c, CRIU);
    await countReaches(c, beforeRestore + 3);
    // The restored shell goes on from the count it had when it was frozen.
    const resumed = Number(counts(c)[beforeRestore]);
    assert.ok(
      resumed >= before + 1 && resumed <= after + 1,
      `resumed at ${resumed}, dumped between ${before}..${after}`,
    );
    assertUnbroken(counts(c).slice(beforeRestore).map((n) => String(Number(n) - resumed + 1)));
  } finally {
    await cleanUp(c);
  }
});

runcTest(
  "runc restore --console-socket, twice: the container's shell answers on each new master, its count goes on",
  async () => {
    const c = await makeBundle({ terminal: true });
    const relay = await workloadBin("console_socket");
    const consoles: ConsoleSocket[] = [await consoleSocket(c, relay, "run")];
    try {
      const started = await runcDetached(c, CRIU, ["run", "-d", "--console-socket", consoles[0]!.path, c.id]);
      assert.ok(started.ok, started.out);
      await consoles[0]!.type("echo before-$((6*7)) $(tty)\n");
      await consoles[0]!.says(/before-42 \/dev\/pts\/\d+/);
      const tty = /before-42 (\/dev\/pts\/\d+)/.exec(Deno.readTextFileSync(consoles[0]!.out))![1]!;
      await countReaches(c, 5);
      for (const cycle of [1, 2]) {
        await checkpoint(c, CRIU);
        await consoles.at(-1)!.close();
        Deno.removeSync(c.work, { recursive: true });
        const atCheckpoint = counts(c).length;
        const relayed = await consoleSocket(c, relay, `restore-${cycle}`);
        consoles.push(relayed);
        // runc binds the slave onto /dev/console: the restore must make that pty before the bind.
        await restore(c, CRIU, ["--console-socket", relayed.path]);
        Deno.removeSync(c.images, { recursive: true });
        assert.equal(await state(c), "running");
        // The shell reads what we type into the master runc got, on the slave it had.
        await relayed.type(`echo after${cycle}-$((6*7)) $(tty)\n`);
        await relayed.says(new RegExp(`after${cycle}-42 ${tty}`));
        await countReaches(c, atCheckpoint + 5);
      }
      assertUnbroken(counts(c));
    } finally {
      for (const relayed of consoles) await relayed.close();
      await cleanUp(c);
    }
  },
);

runcTest("runc checkpoint and restore of a container with a tmpfs: its contents come back", async () => {
  const c = await makeBundle({ tmpfs: true });
  try {
    const started = await runcDetached(c, CRIU, ["run", "-d", c.id]);
    assert.ok(started.ok, started.out);
    await countReaches(c, 5);
    await checkpoint(c, CRIU);
    const atCheckpoint = counts(c).length;
    await restore(c, CRIU);
    await countReaches(c, atCheckpoint + 5);
    assert.ok(!counts(c).includes("LOST"), `the tmpfs note was lost: ${counts(c).join(" ")}`);
    assertUnbroken(counts(c));
  } finally {
    await cleanUp(c);
  }
});

runcTest(
  "runc checkpoint of a container whose stdout is a file of the host is refused by name, the container runs on",
  async () => {
    const c = await makeBundle();
    const log = `${c.dir}/host-log`;
    try {
      // A user's `runc run -d ID > LOG`: the file is on a mount of the host, not in the container.
      const started = await run("/bin/sh", [
        "-c",
        `exec ${RUNC} --criu ${CRIU} run -d ${c.id} </dev/null >${log} 2>&1`,
      ], c.bundle);
      assert.ok(started.ok, started.out);
      await countReaches(c, 3);
      const got = await tryCheckpoint(c, CRIU);
      assert.ok(!got.ok, "the checkpoint went through");
      const dumpLog = Deno.readTextFileSync(`${c.work}/dump.log`);
      assert.match(
        dumpLog,
        new RegExp(
          `Cannot dump fd 1 \\(${log}\\) of process \\d+: it is on mount \\d+, which is not in the process's mount namespace, where ${log} does not exist`,
        ),
      );
      assert.match(dumpLog, /--external file\[[0-9a-f]+:[0-9a-f]+\] and --inherit-fd/);
      assert.equal(await state(c), "running");
      const before = counts(c).length;
      await countReaches(c, before + 3);
      assertUnbroken(counts(c));
    } finally {
      await cleanUp(c);
    }
  },
);

/** What the container's TCP server answers, asked from the client's namespace through the veth. */
async function askServer(clientNs: string): Promise<number> {
  const deadline = performance.now() + 20_000;
  for (;;) {
    const got = await run(ipTool(), [
      "netns",
      "exec",
      clientNs,
      BUSYBOX,
      "nc",
      "-w",
      "5",
      "198.18.0.2",
      "7000",
    ]);
    const n = Number(got.out.trim());
    if (got.ok && got.out.trim() !== "" && Number.isInteger(n)) return n;
    if (performance.now() > deadline) assert.fail(`The container's server did not answer: ${got.out}`);
    await sleep(100);
  }
}

runcTest(
  "runc checkpoint and restore of a container with a TCP server behind a veth: it answers after restore",
  async () => {
    const clientNs = `criu-ts-client-${Deno.pid}`;
    const made = await run(ipTool(), ["netns", "add", clientNs]);
    assert.ok(made.ok, made.out);
    const c = await makeBundle({ veth: clientNs });
    try {
      const started = await runcDetached(c, CRIU, ["run", "-d", c.id]);
      assert.ok(started.ok, started.out);
      await countReaches(c, 3);
      assert.ok((await askServer(clientNs)) >= 3);
      await checkpoint(c, CRIU);
      const atCheckpoint = counts(c).length;
      await restore(c, CRIU);
      await countReaches(c, atCheckpoint + 3);
      assert.deepEqual(Deno.readTextFileSync(`${c.dir}/veth-hook.log`).trim().split("\n"), [
        "made",
        "made",
      ]);
      assert.ok(
        (await askServer(clientNs)) > atCheckpoint,
        "the server answers with the count after restore",
      );
      assertUnbroken(counts(c));
    } finally {
      await cleanUp(c);
      await run(ipTool(), ["netns", "del", clientNs]);
    }
  },
);

// ---------------------------------------------------------------------------------------------
// An id-mapped container: a user namespace of its own in config.json

const UPSTREAM = Deno.env.get("CRIU_UPSTREAM");

async function containerPid(c: Awaited<ReturnType<typeof makeBundle>>): Promise<number> {
  const got = await run(RUNC, ["state", c.id]);
  assert.ok(got.ok, got.out);
  return JSON.parse(got.out).pid as number;
}

const words = (text: string) => text.trim().split(/\s+/).join(" ");

/**
 * The container, as it sees itself and as the host sees it: root of a user namespace whose maps are
 * 0 → USERNS_HOST_ID for 65536 ids, its files written as that id on the host, its count unbroken.
 */
async function assertStillMapped(
  c: Awaited<ReturnType<typeof makeBundle>>,
  count = counts(c),
): Promise<void> {
  const pid = await containerPid(c);
  for (const map of ["uid_map", "gid_map"]) {
    assert.equal(words(Deno.readTextFileSync(`/proc/${pid}/${map}`)), `0 ${USERNS_HOST_ID} 65536`, map);
  }
  const uids = /^Uid:\s+(.*)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]!;
  assert.equal(words(uids), Array(4).fill(USERNS_HOST_ID).join(" "), "the container's uids on the host");
  assert.notEqual(
    Deno.readLinkSync(`/proc/${pid}/ns/user`),
    Deno.readLinkSync("/proc/self/ns/user"),
    "the container has a user namespace of its own",
  );
  // Written by the container after its restore (the count went on since): root there, same map.
  assert.equal(words(Deno.readTextFileSync(`${c.host}/whoami`)), `0 0 ${USERNS_HOST_ID} 65536`);
  assert.equal(Deno.statSync(`${c.host}/count`).uid, USERNS_HOST_ID, "the count file's owner on the host");
  const made = Deno.statSync(`${c.host}/whoami`);
  assert.deepEqual([made.uid, made.gid], [USERNS_HOST_ID, USERNS_HOST_ID], "a file made after the restore");
  // The tmpfs's files, as the host sees them through the container's root: the ids went through the maps.
  const user = Deno.statSync(`/proc/${pid}/root/scratch/user`);
  assert.deepEqual(
    [user.uid, user.gid],
    [USERNS_HOST_ID + 1000, USERNS_HOST_ID + 1000],
    "the tmpfs file of uid 1000",
  );
  assertUnbroken(count);
}

/**
 * Runs the id-mapped container, checkpoints it with `dumper`, restores it with `restorer`. With
 * `imagesMode` the images dir is made beforehand with that mode; else runc makes it (mode 0600).
 */
async function idMappedCycle(dumper: string, restorer: string, imagesMode?: number): Promise<void> {
  const c = await makeBundle({ userns: true });
  try {
    const started = await runcDetached(c, dumper, ["run", "-d", c.id]);
    assert.ok(started.ok, started.out);
    await countReaches(c, 5);
    if (imagesMode !== undefined) {
      Deno.mkdirSync(c.images);
      Deno.chmodSync(c.images, imagesMode);
    }
    await checkpoint(c, dumper);
    assert.equal(await state(c), "gone", "runc removes a checkpointed container");
    const atCheckpoint = counts(c).length;
    Deno.removeSync(`${c.host}/whoami`);
    await restore(c, restorer);
    assert.equal(await state(c), "running");
    await countReaches(c, atCheckpoint + 5);
    await assertStillMapped(c);
  } finally {
    await cleanUp(c);
  }
}

runcTest(
  "runc checkpoint and restore of an id-mapped container (a user namespace in config.json): still root there, same maps, the count goes on",
  () => idMappedCycle(CRIU, CRIU),
);

runcTest(
  "runc checkpoint --leave-running of an id-mapped container, then restore after it is gone",
  async () => {
    const c = await makeBundle({ userns: true });
    try {
      const started = await runcDetached(c, CRIU, ["run", "-d", c.id]);
      assert.ok(started.ok, started.out);
      await countReaches(c, 5);
      const before = counts(c).length;
      await checkpoint(c, CRIU, ["--leave-running"]);
      const after = counts(c).length;
      assert.equal(await state(c), "running");
      await countReaches(c, after + 3);
      await assertStillMapped(c);
      await run(RUNC, ["kill", c.id, "KILL"]);
      while ((await state(c)) === "running") await sleep(50);
      await run(RUNC, ["delete", "-f", c.id]);
      Deno.removeSync(`${c.host}/whoami`);
      const beforeRestore = counts(c).length;
      await restore(c, CRIU);
      await countReaches(c, beforeRestore + 3);
      const resumed = Number(counts(c)[beforeRestore]);
      assert.ok(
        resumed >= before + 1 && resumed <= after + 1,
        `resumed at ${resumed}, dumped between ${before}..${after}`,
      );
      // The restored shell goes on from the count it had when it was frozen.
      await assertStillMapped(c, counts(c).slice(beforeRestore).map((n) => String(Number(n) - resumed + 1)));
    } finally {
      await cleanUp(c);
    }
  },
);

Deno.test({
  name: "an id-mapped runc container checkpointed by CRIU 4.x comes back with criu-ts, and the other way",
  ignore: !UPSTREAM,
  fn: async () => {
    await idMappedCycle(UPSTREAM!, CRIU);
    // CRIU opens its images from the restored task, already in the container's user namespace,
    // whose root may not search the images dir runc makes (mode 0600): made 0755 beforehand.
    await idMappedCycle(CRIU, UPSTREAM!, 0o755);
  },
});

Deno.test({
  name:
    "CRIU 4.x cannot restore an id-mapped runc container from an images dir runc made (0600); criu-ts can",
  ignore: !UPSTREAM,
  fn: async () => {
    const c = await makeBundle({ userns: true });
    try {
      const started = await runcDetached(c, CRIU, ["run", "-d", c.id]);
      assert.ok(started.ok, started.out);
      await countReaches(c, 5);
      await checkpoint(c, CRIU);
      assert.equal(Deno.statSync(c.images).mode! & 0o777, 0o600, "runc makes the images dir 0600");
      const refused = await runcDetached(c, UPSTREAM!, [
        "restore",
        "-d",
        "--image-path",
        c.images,
        "--work-path",
        c.work,
        c.id,
      ]);
      assert.ok(!refused.ok, "CRIU restored it");
      assert.match(
        Deno.readTextFileSync(`${c.work}/restore.log`),
        /Error \(criu\/image\.c:\d+\): Unable to open \S+\.img: Permission denied/,
      );
      await run(RUNC, ["delete", "-f", c.id]);
      const atCheckpoint = counts(c).length;
      Deno.removeSync(`${c.host}/whoami`);
      await restore(c, CRIU);
      await countReaches(c, atCheckpoint + 5);
      await assertStillMapped(c);
    } finally {
      await cleanUp(c);
    }
  },
});

// ---------------------------------------------------------------------------------------------
// A pty pair of the container's own: runc mounts a devpts instance of the container's at /dev/pts
// (/dev/ptmx a link to its ptmx), where the pair must be made again at its numbers.

/**
 * tests/workloads/pty.c (three pty pairs, bytes queued both ways) as a plain runc container's
 * init: checkpointed through runc with `dumper` and restored with `restorer`, `cycles` times (0:
 * one checkpoint with --leave-running), then it checks itself.
 */
async function ptyCycle(dumper: string, restorer: string, cycles = 1): Promise<void> {
  const c = await makeBundle();
  try {
    const path = `${c.bundle}/config.json`;
    const config = JSON.parse(Deno.readTextFileSync(path));
    config.process.args = ["/bin/pty", "/data/pty", "queued"];
    // Locking termios (TIOCSLCKTRMIOS) takes CAP_SYS_ADMIN, which runc's default set leaves out.
    for (const set of ["bounding", "effective", "permitted"]) {
      config.process.capabilities[set].push("CAP_SYS_ADMIN");
    }
    Deno.writeTextFileSync(path, JSON.stringify(config, null, 1));
    await staticWorkload("pty", `${c.bundle}/rootfs/bin/pty`);
    const result = `${c.host}/pty`;
    const log = () => [result, `${result}.log`].filter(exists).map((f) => Deno.readTextFileSync(f)).join("");
    const started = await runcDetached(c, dumper, ["run", "-d", c.id]);
    assert.ok(started.ok, started.out);
    await waitFor("the container's workload", () => exists(`${result}.ready`) || exists(result));
    assert.ok(!exists(result), `the workload failed its setup: ${log()}`);
    if (cycles === 0) await checkpoint(c, dumper, ["--leave-running"]);
    for (let i = 0; i < cycles; i++) {
      if (exists(c.images)) Deno.removeSync(c.images, { recursive: true }); // the last cycle's
      await checkpoint(c, dumper);
      await restore(c, restorer);
    }
    const killed = await run(RUNC, ["kill", c.id, "TERM"]);
    assert.ok(killed.ok, killed.out);
    await waitFor("the verdict", () => exists(result) && Deno.readTextFileSync(result).endsWith("\n"));
    assert.equal(Deno.readTextFileSync(result).trim(), "PASS", log());
  } finally {
    await cleanUp(c);
  }
}

runcTest(
  "runc checkpoint and restore of a container holding pty pairs in its own devpts: same numbers, bytes kept",
  () => ptyCycle(CRIU, CRIU),
);

runcTest(
  "a runc container holding pty pairs runs on after checkpoint --leave-running, its bytes put back",
  () => ptyCycle(CRIU, CRIU, 0),
);

runcTest(
  "a runc container holding pty pairs passes after 10 checkpoints and restores",
  () => ptyCycle(CRIU, CRIU, 10),
);

// CRIU 4.x's restore of ptys loses a slave's exclusive mode even from its own dump (upstream_cross_test.ts).
Deno.test({
  name: "a runc container holding pty pairs checkpointed by CRIU 4.x comes back with criu-ts",
  ignore: !UPSTREAM,
  fn: () => ptyCycle(UPSTREAM!, CRIU),
});
