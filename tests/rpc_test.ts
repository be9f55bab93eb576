/**
 * The RPC modes, driven the way runtimes drive CRIU: Debian's pycriu (its `criu` class, and raw
 * requests over its own connection for NOTIFY) and our TypeScript client, against `criu swrk` and
 * `criu service`. The checkpointed process is a `sleep` in a session of its own.
 *
 * This process makes itself a child subreaper, so that restored trees (children of a swrk that
 * has ended) and workers of a stopped service come back to it and are reaped here. Every test
 * checks that it leaves no fd of ours open and no process of its own behind.
 */
import assert from "node:assert/strict";
import { criu_req_type, CriuClient, CriuRpcError } from "../mod.ts";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import { setChildSubreaper, signalProcess, waitRaw } from "../ffi/wait.ts";
import { isSyscallError } from "../ffi/errors.ts";
import { accessPolicy, peerAllowed } from "../src/rpc/service.ts";
import { setupRequest } from "../src/rpc/options.ts";
import { defaultOptions } from "../src/cli/options.ts";
import { create } from "@bufbuild/protobuf";
import { criu_optsSchema } from "../src/images/gen/rpc_pb.ts";
import { RpcRequestError } from "../src/rpc/errors.ts";
import { python3 } from "./lib/tools.ts";

const CRIU = new URL("../scripts/criu", import.meta.url).pathname;
const DRIVER = new URL("./workloads/pycriu_client.py", import.meta.url).pathname;
const PYTHON = python3();
const NOBODY = 65534;
const SIGKILL = 9;
const SIGTERM = 15;

setChildSubreaper(true);

// ---------------------------------------------------------------------------------------------
// Fixtures

interface DriverResult {
  ok: boolean;
  resp?: Record<string, unknown>;
  notifications?: { script: string; pid?: number }[];
  error?: string;
  errno?: number;
}

/** Runs the pycriu driver (as `uid` when given) and returns what it printed. */
async function pycriu(
  args: Record<string, unknown>,
  opts: { uid?: number; env?: Record<string, string> } = {},
) {
  const argv = [DRIVER, JSON.stringify(args)];
  const cmd = opts.uid === undefined
    ? new Deno.Command(PYTHON, { args: argv, stdout: "piped", stderr: "piped", env: opts.env ?? {} })
    : new Deno.Command("/usr/bin/setpriv", {
      args: [`--reuid=${opts.uid}`, `--regid=${opts.uid}`, "--clear-groups", PYTHON, ...argv],
      stdout: "piped",
      stderr: "piped",
      env: opts.env ?? {},
    });
  const out = await cmd.output();
  const stdout = new TextDecoder().decode(out.stdout).trim();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  assert.ok(out.success && stdout !== "", `pycriu driver failed (${out.code}): ${stderr}`);
  return JSON.parse(stdout) as DriverResult;
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

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `pid` is gone, reaping it if it is (or becomes) our child. */
async function reap(pid: number, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      if (waitRaw(pid, true) !== null) return;
    } catch (e) {
      if (!isSyscallError(e, "ECHILD")) throw e;
      // Not our child (yet): it is reparented to us when its parent ends.
      if (!exists(`/proc/${pid}`)) return;
    }
    if (performance.now() > deadline) assert.fail(`Process ${pid} did not end`);
    await sleep(10);
  }
}

async function kill(pid: number): Promise<void> {
  signalProcess(pid, SIGKILL);
  await reap(pid);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Our children that are zombies (e.g. workers of a service we stopped): reap them. */
function reapZombieChildren(): void {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
    } catch {
      continue;
    }
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z" && Number(fields[1]) === Deno.pid) waitRaw(Number(entry.name), true);
  }
}

/** Our live children, apart from those named. */
function children(): number[] {
  const out: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === Deno.pid) out.push(Number(entry.name));
    } catch {
      // gone
    }
  }
  return out;
}

function openFds(): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      out.push(`${entry.name} -> ${Deno.readLinkSync(`/proc/self/fd/${entry.name}`)}`);
    } catch {
      // the directory's own fd
    }
  }
  return out.sort();
}

/** Warm up what the runtime opens once (child-process plumbing), so fd checks see only leaks. */
await new Deno.Command("/bin/true").output();

/** A test that must leave no fd open and no child behind. */
function rpcTest(name: string, fn: (dir: string) => Promise<void>): void {
  Deno.test(name, async () => {
    const fdsBefore = openFds();
    const dir = Deno.makeTempDirSync({ prefix: "criu-rpc-" });
    try {
      await fn(dir);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    reapZombieChildren();
    assert.deepEqual(children(), [], "processes left behind");
    assert.deepEqual(openFds(), fdsBefore, "fds left open");
  });
}

/** A `criu service` on a socket in `dir`; stop() kills it and removes the socket. */
async function startService(dir: string, env: Record<string, string> = {}, extra: string[] = []) {
  const address = `${dir}/criu.sock`;
  const pid = spawn(CRIU, [
    CRIU,
    "service",
    "--address",
    address,
    "-o",
    `${dir}/service.log`,
    "-v4",
    ...extra,
  ], {
    fds: { 2: 2 },
    env: { ...Deno.env.toObject(), ...env },
  });
  const deadline = performance.now() + 20_000;
  while (!exists(address)) {
    if (performance.now() > deadline) assert.fail("The service did not create its socket");
    await sleep(20);
  }
  return {
    address,
    pid,
    async stop() {
      signalProcess(pid, SIGTERM);
      await reap(pid);
      await sleep(50);
      reapZombieChildren();
      Deno.removeSync(address);
    },
  };
}

function images(dir: string, name: string): string {
  const path = `${dir}/${name}`;
  Deno.mkdirSync(path);
  return path;
}

function listImages(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".img")).sort();
}

// ---------------------------------------------------------------------------------------------
// Pure parts: access policy and option mapping

Deno.test("accessPolicy() lets only root in by default", () => {
  const policy = accessPolicy(() => undefined, () => "");
  assert.equal(policy.mode, 0o600);
  assert.equal(policy.gid, undefined);
  assert.equal(peerAllowed(policy, { pid: 1, uid: 0, gid: 0 }, 0), true);
  assert.equal(peerAllowed(policy, { pid: 1, uid: NOBODY, gid: NOBODY }, 0), false);
});

Deno.test("accessPolicy() reads the mode, group and uids from the environment", () => {
  const env: Record<string, string> = {
    CRIU_TS_SERVICE_MODE: "0660",
    CRIU_TS_SERVICE_GROUP: "criu",
    CRIU_TS_SERVICE_ALLOW_UIDS: "1000, 1001",
  };
  const policy = accessPolicy((n) => env[n], () => "root:x:0:\ncriu:x:777:alice\n");
  assert.equal(policy.mode, 0o660);
  assert.equal(policy.gid, 777);
  assert.equal(peerAllowed(policy, { pid: 1, uid: 1001, gid: 5 }, 0), true);
  assert.equal(peerAllowed(policy, { pid: 1, uid: 2000, gid: 777 }, 0), true);
  assert.equal(peerAllowed(policy, { pid: 1, uid: 2000, gid: 5 }, 0, () => [5, 777]), true);
  assert.equal(peerAllowed(policy, { pid: 1, uid: 2000, gid: 5 }, 0, () => [5]), false);
});

Deno.test("accessPolicy() refuses malformed settings", () => {
  assert.throws(() => accessPolicy((n) => n === "CRIU_TS_SERVICE_MODE" ? "rw" : undefined), /octal mode/);
  assert.throws(
    () => accessPolicy((n) => n === "CRIU_TS_SERVICE_GROUP" ? "nosuch" : undefined, () => ""),
    /no such group/,
  );
  assert.throws(
    () => accessPolicy((n) => n === "CRIU_TS_SERVICE_ALLOW_UIDS" ? "bob" : undefined),
    /uids separated/,
  );
});

function setup(
  kind: "dump" | "restore",
  init: Parameters<typeof create<typeof criu_optsSchema>>[1],
  mode = "swrk",
) {
  const opts = create(criu_optsSchema, { imagesDirFd: -1, imagesDir: "/tmp", ...init });
  return setupRequest(kind, opts, {
    base: defaultOptions(),
    peer: { pid: Deno.pid, uid: 0, gid: 0 },
    mode: mode as "swrk" | "service",
  });
}

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof RpcRequestError) return `${e.crErrno}: ${e.message}`;
    throw e;
  }
  assert.fail("Expected the request to be refused");
}

Deno.test("setupRequest() takes orphan_pts_master and empty_ns net for a restore", () => {
  const s = setup("restore", { orphanPtsMaster: true, emptyNs: 0x40000000 });
  assert.deepEqual([s.options.orphanPtsMaster, s.options.emptyNetNs], [true, true]);
});

Deno.test("setupRequest() takes empty_ns net for a dump too (CRIU's dump then saves nothing of the namespace)", () => {
  assert.equal(setup("dump", { pid: 42, emptyNs: 0x40000000 }).options.emptyNetNs, true);
});

Deno.test("setupRequest() maps criu_opts onto the CLI's options", () => {
  const s = setup("dump", { pid: 42, leaveRunning: true, shellJob: true, logLevel: 4, logFile: "d.log" });
  assert.equal(s.pid, 42);
  assert.equal(s.selfDump, false);
  assert.equal(s.options.finalState, "running");
  assert.equal(s.options.shellJob, true);
  assert.equal(s.logLevel, 4);
  assert.equal(s.logPath, `${Deno.realPathSync("/tmp")}/d.log`);
});

Deno.test("setupRequest() reads unix_sk_ino only alongside ext_unix_sk, as CRIU", () => {
  const inodes = [{ inode: 12345 }, { inode: 678 }];
  assert.deepEqual(setup("dump", { pid: 1, extUnixSk: true, unixSkIno: inodes }).options.extUnixSkInodes, [
    12345,
    678,
  ]);
  assert.deepEqual(setup("dump", { pid: 1, unixSkIno: inodes }).options.extUnixSkInodes, []);
});

Deno.test("setupRequest() dumps the client itself when no pid is given", () => {
  const s = setup("dump", {});
  assert.equal(s.pid, Deno.pid);
  assert.equal(s.selfDump, true);
  assert.equal(s.logPath, `${Deno.realPathSync("/tmp")}/criu.log`);
});

Deno.test("setupRequest() accepts and logs options not acted on yet", () => {
  const s = setup("dump", { pid: 1, autoDedup: true, fileLocks: true, extUnixSk: true, root: "/r" });
  assert.ok(s.notes.some((n) => /auto_dedup \(--auto-dedup\) is accepted/.test(n)));
  assert.ok(s.notes.some((n) => /root is ignored for a dump/.test(n)));
});

Deno.test("setupRequest() takes runc's root for a restore (mount namespaces are restored)", () => {
  assert.equal(setup("restore", { root: "/r" }).options.root, "/r");
});

Deno.test("setupRequest() takes lsm_profile for a dump and a restore, to be checked as --lsm-profile is", () => {
  for (const kind of ["dump", "restore"] as const) {
    const s = setup(kind, { pid: 1, lsmProfile: "apparmor:unconfined" });
    assert.equal(s.options.lsmProfile, "apparmor:unconfined");
    assert.ok(!s.notes.some((n) => /lsm_profile/.test(n)), s.notes.join("\n"));
  }
});

Deno.test("setupRequest() refuses what would change the result", () => {
  assert.match(
    refusal(() => setup("dump", { pid: 1, trackMem: true })),
    /^56: criu_opts.track_mem .*not supported/,
  );
  assert.match(
    refusal(() => setup("dump", { pid: 1, ps: {} })),
    /criu_opts.ps \(--page-server\) is not supported/,
  );
  assert.match(refusal(() => setup("restore", { lazyPages: true })), /lazy_pages/);
  assert.match(refusal(() => setup("restore", { emptyNs: 0x20000 })), /empty_ns/);
  assert.match(refusal(() => setup("dump", { pid: 1, logFile: "a/b.log" })), /plain file name/);
});

Deno.test("setupRequest() refuses leave_stopped for a restore, by the option table's row for -s", () => {
  assert.match(
    refusal(() => setup("restore", { leaveStopped: true })),
    /^56: criu_opts.leave_stopped \(--leave-stopped\) is not supported by criu-ts yet/,
  );
});

Deno.test("setupRequest() restores detached and never into the pidfile of criu's own command line", () => {
  const base = { ...defaultOptions(), pidfile: "/run/criu-service.pid" };
  const opts = create(criu_optsSchema, { imagesDirFd: -1, imagesDir: "/tmp" });
  const s = setupRequest("restore", opts, { base, peer: { pid: Deno.pid, uid: 0, gid: 0 }, mode: "service" });
  assert.equal(s.options.restoreDetached, true);
  assert.equal(s.options.pidfile, undefined);
});

Deno.test("setupRequest() refuses rst_sibling and inherit_fd in a service worker", () => {
  assert.match(
    refusal(() => setup("restore", { rstSibling: true }, "service")),
    /not allowed in standalone service/,
  );
  assert.match(
    refusal(() => setup("restore", { inheritFd: [{ key: "pipe:[1]", fd: 5 }] }, "service")),
    /not allowed in standalone service/,
  );
});

Deno.test("setupRequest() needs an images directory that exists", () => {
  assert.match(
    refusal(() => setup("dump", { pid: 1, imagesDir: "" })),
    /Neither criu_opts.images_dir_fd nor/,
  );
  assert.match(refusal(() => setup("dump", { pid: 1, imagesDir: "/nonexistent" })), /it does not exist/);
});

// ---------------------------------------------------------------------------------------------
// pycriu against `criu swrk`

rpcTest("pycriu gets VERSION, CHECK and FEATURE_CHECK answers from criu swrk", async () => {
  const version = await pycriu({ criu: CRIU, action: "raw", type: "VERSION" });
  assert.equal(version.ok, true);
  const v = version.resp!.version as Record<string, unknown>;
  assert.equal(v.major_number, 4);
  assert.equal(v.minor_number, 2);
  assert.equal(v.gitid, undefined);

  assert.deepEqual(await pycriu({ criu: CRIU, action: "check" }), { ok: true });

  const features = await pycriu({ criu: CRIU, action: "raw", type: "FEATURE_CHECK" });
  assert.equal(features.ok, true);
  assert.deepEqual(features.resp!.features, { mem_track: false, lazy_pages: false, pidfd_store: false });
});

rpcTest("pycriu dumps a running process through criu swrk and restores it", async (dir) => {
  const pid = startSleeper();
  const imgs = images(dir, "ckpt");
  try {
    const dumped = await pycriu({
      criu: CRIU,
      action: "dump",
      images: imgs,
      opts: { pid, leave_running: true },
    });
    assert.deepEqual(dumped, { ok: true, resp: { restored: false } });
    assert.ok(alive(pid), "the process runs on after a dump with leave_running");
    assert.ok(listImages(imgs).includes("inventory.img"));
    assert.ok(exists(`${imgs}/criu.log`), "the log goes to criu.log in the images dir by default");
  } finally {
    await kill(pid);
  }
  const restored = await pycriu({
    criu: CRIU,
    action: "restore",
    images: imgs,
    opts: { log_file: "restore.log" },
  });
  assert.deepEqual(restored, { ok: true, resp: { pid } });
  try {
    assert.ok(alive(pid));
    assert.equal(Deno.readTextFileSync(`/proc/${pid}/cmdline`), "sleep\x00100\x00");
    assert.ok(exists(`${imgs}/restore.log`));
  } finally {
    await kill(pid);
  }
  assert.ok(!exists(`/proc/${pid}`));
});

rpcTest("pycriu is notified of every hook and action scripts run after it", async (dir) => {
  const pid = startSleeper();
  const imgs = images(dir, "ckpt");
  const record = `${dir}/scripts.log`;
  const config = `${dir}/criu.conf`;
  Deno.writeTextFileSync(config, `action-script "echo $CRTOOLS_SCRIPT_ACTION >> ${record}"\n`);
  const env = { CRIU_CONFIG_FILE: config };
  try {
    const dumped = await pycriu(
      {
        criu: CRIU,
        action: "raw",
        type: "DUMP",
        images: imgs,
        opts: { pid, leave_running: true, notify_scripts: true },
      },
      { env },
    );
    assert.equal(dumped.ok, true, dumped.resp?.cr_errmsg as string);
    assert.deepEqual(dumped.notifications, [{ script: "pre-dump" }, { script: "post-dump" }]);
    assert.deepEqual(Deno.readTextFileSync(record).trim().split("\n"), ["pre-dump", "post-dump"]);
  } finally {
    await kill(pid);
  }
  Deno.removeSync(record);
  const restored = await pycriu(
    { criu: CRIU, action: "raw", type: "RESTORE", images: imgs, opts: { notify_scripts: true } },
    { env },
  );
  try {
    assert.equal(restored.ok, true, restored.resp?.cr_errmsg as string);
    assert.deepEqual(restored.resp!.restore, { pid });
    const scripts = restored.notifications!.map((n) => n.script);
    // setup-namespaces and post-setup-namespaces come only when the restore makes namespaces.
    assert.deepEqual(scripts, ["pre-restore", "post-restore", "pre-resume", "post-resume"]);
    for (const n of restored.notifications!) {
      const withPid = n.script === "setup-namespaces" || n.script === "post-restore";
      assert.equal(n.pid, withPid ? pid : undefined, `pid of the ${n.script} notification`);
    }
    assert.deepEqual(Deno.readTextFileSync(record).trim().split("\n"), scripts);
  } finally {
    await kill(pid);
  }
});

rpcTest("A failed notification aborts the dump and leaves the process running", async (dir) => {
  const pid = startSleeper();
  const imgs = images(dir, "ckpt");
  try {
    const r = await pycriu({
      criu: CRIU,
      action: "raw",
      type: "DUMP",
      images: imgs,
      opts: { pid, notify_scripts: true },
      fail_at: "post-dump",
    });
    assert.equal(r.ok, false);
    assert.equal(r.resp!.type, "DUMP");
    assert.match(r.resp!.cr_errmsg as string, /reported a failure at the post-dump notification/);
    assert.deepEqual(r.notifications, [{ script: "pre-dump" }, { script: "post-dump" }]);
    assert.ok(alive(pid), "an aborted dump resumes the tree");
    assert.ok(!listImages(imgs).includes("inventory.img"), "an aborted dump leaves no checkpoint");
  } finally {
    await kill(pid);
  }
});

rpcTest("criu swrk answers a dump of a missing process with ESRCH", async (dir) => {
  // Above the kernel's pid_max: no process can have it, however busy the machine (a pid freed a
  // moment ago may be taken again by then).
  const pid = Number(Deno.readTextFileSync("/proc/sys/kernel/pid_max").trim()) + 1;
  const r = await pycriu({
    criu: CRIU,
    action: "raw",
    type: "DUMP",
    images: images(dir, "x"),
    opts: { pid },
  });
  assert.equal(r.ok, false);
  assert.equal(r.resp!.cr_errno, 3);
  assert.equal(r.resp!.cr_errmsg, `Process ${pid} does not exist`);
  const api = await pycriu({ criu: CRIU, action: "dump", images: `${dir}/x`, opts: { pid } });
  assert.equal(api.ok, false);
  assert.equal(api.errno, 3);
});

rpcTest("criu swrk answers a request without a usable images dir with EBADRQC", async (dir) => {
  const noFd = await pycriu({ criu: CRIU, action: "raw", type: "RESTORE", opts: { images_dir_fd: 999 } });
  assert.equal(noFd.ok, false);
  assert.equal(noFd.resp!.type, "RESTORE");
  assert.equal(noFd.resp!.cr_errno, 56);
  assert.match(noFd.resp!.cr_errmsg as string, /Cannot open the images directory \/proc\/\d+\/fd\/999/);
  assert.deepEqual(noFd.resp!.restore, { pid: -1 });

  const empty = images(dir, "empty");
  const nothing = await pycriu({ criu: CRIU, action: "raw", type: "RESTORE", images: empty });
  assert.equal(nothing.ok, false);
  assert.match(nothing.resp!.cr_errmsg as string, /holds no checkpoint/);

  const none = await pycriu({ criu: CRIU, action: "raw", type: "DUMP", opts: { pid: 1 } });
  assert.match(none.resp!.cr_errmsg as string, /Neither criu_opts.images_dir_fd nor criu_opts.images_dir/);
});

rpcTest("criu swrk refuses unsupported requests and options cleanly", async (dir) => {
  const imgs = images(dir, "x");
  const preDump = await pycriu({
    criu: CRIU,
    action: "raw",
    type: "PRE_DUMP",
    images: imgs,
    opts: { pid: 1 },
  });
  assert.deepEqual([preDump.resp!.type, preDump.resp!.cr_errno], ["PRE_DUMP", 95]);
  assert.match(preDump.resp!.cr_errmsg as string, /Pre-dump .* not supported/);

  for (const type of ["PAGE_SERVER", "PAGE_SERVER_CHLD", "CPUINFO_DUMP", "CPUINFO_CHECK"]) {
    const r = await pycriu({ criu: CRIU, action: "raw", type, images: imgs });
    assert.deepEqual([r.ok, r.resp!.type, r.resp!.cr_errno], [false, type, 95]);
  }

  const notify = await pycriu({ criu: CRIU, action: "raw", type: "NOTIFY" });
  assert.deepEqual([notify.ok, notify.resp!.type], [false, "EMPTY"]);

  // pycriu cannot send a type its enum lacks; our client can.
  const unknown = await new CriuClient({ criuPath: CRIU }).request({ type: 77 as criu_req_type });
  assert.deepEqual([unknown.success, unknown.type, unknown.crErrno], [false, criu_req_type.EMPTY, 56]);
  assert.match(unknown.crErrmsg, /Unknown RPC request type 77/);

  const tracked = await pycriu({
    criu: CRIU,
    action: "raw",
    type: "DUMP",
    images: imgs,
    opts: { pid: 1, track_mem: true },
  });
  assert.equal(tracked.resp!.cr_errno, 56);
  assert.match(
    tracked.resp!.cr_errmsg as string,
    /criu_opts.track_mem \(--track-mem\) is not supported by criu-ts yet/,
  );

  const waited = await pycriu({ criu: CRIU, action: "raw", type: "WAIT_PID", pid: 1 });
  assert.deepEqual([waited.ok, waited.resp!.cr_errno], [false, 10]);
});

// ---------------------------------------------------------------------------------------------
// pycriu against `criu service`

rpcTest("pycriu uses criu service: VERSION, CHECK, dump and restore", async (dir) => {
  const service = await startService(dir);
  try {
    assert.equal(Deno.statSync(service.address).mode! & 0o777, 0o600);
    const version = await pycriu({ socket: service.address, action: "raw", type: "VERSION" });
    assert.equal((version.resp!.version as Record<string, unknown>).major_number, 4);
    assert.deepEqual(await pycriu({ socket: service.address, action: "check" }), { ok: true });

    const pid = startSleeper();
    const imgs = images(dir, "ckpt");
    try {
      const dumped = await pycriu({
        socket: service.address,
        action: "dump",
        images: imgs,
        opts: { pid, leave_running: true },
      });
      assert.deepEqual(dumped, { ok: true, resp: { restored: false } });
      assert.ok(alive(pid));
    } finally {
      await kill(pid);
    }
    const restored = await pycriu({ socket: service.address, action: "restore", images: imgs });
    assert.deepEqual(restored, { ok: true, resp: { pid } });
    await kill(pid);

    const missing = await pycriu({
      socket: service.address,
      action: "raw",
      type: "DUMP",
      images: imgs,
      opts: { pid },
    });
    assert.equal(missing.resp!.cr_errno, 3);
    const sibling = await pycriu({
      socket: service.address,
      action: "raw",
      type: "RESTORE",
      images: imgs,
      opts: { rst_sibling: true },
    });
    assert.match(sibling.resp!.cr_errmsg as string, /rst_sibling is not allowed in standalone service/);
  } finally {
    await service.stop();
  }
});

rpcTest("criu service refuses an unprivileged peer unless allowed", async (dir) => {
  Deno.chmodSync(dir, 0o755);
  // The default socket mode keeps other users from connecting at all.
  const closed = await startService(dir);
  try {
    const r = await pycriu({ socket: closed.address, action: "raw", type: "VERSION" }, { uid: NOBODY });
    assert.equal(r.ok, false);
    assert.match(r.error!, /Permission denied/);
  } finally {
    await closed.stop();
  }
  // A socket others may connect to: the peer check still refuses them.
  const open = await startService(dir, { CRIU_TS_SERVICE_MODE: "0666" });
  try {
    assert.equal(Deno.statSync(open.address).mode! & 0o777, 0o666);
    const r = await pycriu({ socket: open.address, action: "raw", type: "VERSION" }, { uid: NOBODY });
    assert.equal(r.ok, false);
    assert.deepEqual([r.resp!.type, r.resp!.cr_errno], ["VERSION", 13]);
    assert.match(r.resp!.cr_errmsg as string, /refuses uid 65534/);
    const root = await pycriu({ socket: open.address, action: "raw", type: "VERSION" });
    assert.equal(root.ok, true, "root is still served");
  } finally {
    await open.stop();
  }
  const allowed = await startService(dir, {
    CRIU_TS_SERVICE_MODE: "0666",
    CRIU_TS_SERVICE_ALLOW_UIDS: `${NOBODY}`,
  });
  try {
    const r = await pycriu({ socket: allowed.address, action: "raw", type: "VERSION" }, { uid: NOBODY });
    assert.equal(r.ok, true);
  } finally {
    await allowed.stop();
  }
});

rpcTest("criu service --daemon writes the daemon's pid and serves in the background", async (dir) => {
  const pidfile = `${dir}/service.pid`;
  const address = `${dir}/daemon.sock`;
  const parent = spawn(CRIU, [CRIU, "service", "--daemon", "--address", address, "--pidfile", pidfile], {
    fds: { 2: 2 },
  });
  const status = await (async () => {
    for (;;) {
      const done = waitRaw(parent, true);
      if (done) return done.status;
      await sleep(10);
    }
  })();
  assert.equal(status, 0, "the launching process exits 0");
  const daemon = Number(Deno.readTextFileSync(pidfile));
  try {
    assert.notEqual(daemon, parent);
    assert.ok(alive(daemon));
    assert.equal(
      Deno.readTextFileSync(`/proc/${daemon}/stat`).split(" ")[5],
      `${daemon}`,
      "the daemon leads a session",
    );
    const version = await pycriu({ socket: address, action: "raw", type: "VERSION" });
    assert.equal(version.ok, true);
  } finally {
    signalProcess(daemon, SIGTERM);
    await reap(daemon);
    await sleep(50);
    reapZombieChildren();
    Deno.removeSync(address);
  }
});

// ---------------------------------------------------------------------------------------------
// The TypeScript client

rpcTest("CriuClient asks criu swrk and criu service for the version, check and features", async (dir) => {
  const service = await startService(dir);
  try {
    for (
      const client of [
        new CriuClient({ criuPath: CRIU }),
        new CriuClient({ serviceAddress: service.address }),
      ]
    ) {
      const v = await client.version();
      assert.deepEqual([v.majorNumber, v.minorNumber, v.gitid], [4, 2, ""]);
      await client.check();
      const f = await client.featureCheck({ memTrack: true, lazyPages: true, pidfdStore: true });
      assert.deepEqual([f.memTrack, f.lazyPages, f.pidfdStore], [false, false, false]);
    }
  } finally {
    await service.stop();
  }
});

rpcTest("CriuClient dumps and restores with notification callbacks", async (dir) => {
  const client = new CriuClient({ criuPath: CRIU });
  const pid = startSleeper();
  const imgs = images(dir, "ckpt");
  const seen: string[] = [];
  try {
    const resp = await client.dump({ pid, imagesDir: imgs, leaveRunning: true }, {
      preDump: () => void seen.push("pre-dump"),
      postDump: async () => {
        await sleep(1);
        seen.push("post-dump");
      },
    });
    assert.equal(resp.restored, false);
    assert.deepEqual(seen, ["pre-dump", "post-dump"]);
    assert.ok(alive(pid));
  } finally {
    await kill(pid);
  }
  seen.length = 0;
  let postRestorePid = 0;
  const restored = await client.restore({ imagesDir: imgs }, {
    preRestore: () => void seen.push("pre-restore"),
    postRestore: (p) => void (postRestorePid = p, seen.push("post-restore")),
    other: (script) => void seen.push(script),
  });
  try {
    assert.equal(restored.pid, pid);
    assert.equal(postRestorePid, pid);
    // Hooks without a callback of their own go to other().
    assert.deepEqual(seen, ["pre-restore", "post-restore", "pre-resume", "post-resume"]);
    assert.ok(alive(pid));
  } finally {
    await kill(pid);
  }
});

rpcTest("CriuClient reports a failed callback and criu's errors", async (dir) => {
  const client = new CriuClient({ criuPath: CRIU });
  const pid = startSleeper();
  const imgs = images(dir, "ckpt");
  try {
    await assert.rejects(
      client.dump({ pid, imagesDir: imgs }, {
        preDump() {
          throw new Error("not now");
        },
      }),
      (e: unknown) => {
        assert.ok(e instanceof CriuRpcError);
        assert.equal(e.requestType, criu_req_type.DUMP);
        assert.match(e.message, /failure at the pre-dump notification/);
        assert.equal((e.cause as Error).message, "not now");
        return true;
      },
    );
    assert.ok(alive(pid), "the dump was aborted before freezing");
  } finally {
    await kill(pid);
  }
  await assert.rejects(client.dump({ pid, imagesDir: imgs }), (e: unknown) => {
    assert.ok(e instanceof CriuRpcError);
    assert.equal(e.crErrno, 3);
    return true;
  });
  await assert.rejects(
    client.restore({ imagesDir: `${dir}/missing` }),
    /Cannot open the images directory .*missing: it does not exist/,
  );
  await assert.rejects(client.preDump({ imagesDir: imgs, pid: 1 }), /Pre-dump .* not supported/);
});

rpcTest("CriuConnection restores and waits for the restored process on one connection", async (dir) => {
  const pid = startSleeper();
  const imgs = images(dir, "ckpt");
  const dirFd = openFd(imgs, 0o200000 | OPEN.CLOEXEC); // O_DIRECTORY: passed as images_dir_fd
  try {
    await new CriuClient({ criuPath: CRIU }).dump({ pid, imagesDirFd: dirFd, leaveRunning: true });
  } finally {
    closeFd(dirFd);
    await kill(pid);
  }
  const service = await startService(dir);
  try {
    for (
      const client of [
        new CriuClient({ criuPath: CRIU }),
        new CriuClient({ serviceAddress: service.address }),
      ]
    ) {
      await using conn = await client.connect();
      const restored = await conn.restore({ imagesDir: imgs });
      assert.equal(restored.pid, pid);
      signalProcess(pid, SIGKILL);
      const status = await conn.waitPid(pid);
      assert.equal(status & 0x7f, SIGKILL, "the raw wait status says SIGKILL");
      assert.ok(!exists(`/proc/${pid}`), "WAIT_PID reaped it");
      await assert.rejects(conn.waitPid(pid), /not a child of this criu/);
    }
  } finally {
    await service.stop();
  }
});

rpcTest("CriuClient restores with rst_sibling: the root becomes a child of the client", async (dir) => {
  const client = new CriuClient({ criuPath: CRIU });
  const pid = startSleeper();
  const imgs = images(dir, "sibling");
  try {
    await client.dump({ pid, imagesDir: imgs });
  } finally {
    await kill(pid);
  }
  const restored = await client.restore({ imagesDir: imgs, rstSibling: true });
  try {
    assert.equal(restored.pid, pid);
    const ppid = Number(Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ")[1]);
    assert.equal(ppid, Deno.pid, "the restored root is our child, as runc expects");
  } finally {
    await kill(pid);
  }
});
