/**
 * --external file[MNT_ID:INODE] on dump (RPC `external`): the fd is recorded as external, not by
 * its path; the restore needs the file back from --inherit-fd fd[N]:file[...] and opens it with the
 * dumped flags at the dumped offset. The workload writes "XY" at its offset when it ends: the
 * bytes must land in the file the restore was given, not in the one dumped.
 */
import assert from "node:assert/strict";
import { CRIU, criuOk, exists, openFds, reap, sleep, tempDir, Workload } from "./lib/harness.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import { spawn } from "../ffi/spawn.ts";
import { waitRaw } from "../ffi/wait.ts";
import { CriuClient } from "../mod.ts";

/** The key CRIU's --external takes for fd `fd` of `pid`: file[MNT_ID:INODE] in hex. */
function externalKey(pid: number, fd: number): string {
  const mnt = Number(/^mnt_id:\s*(\d+)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`))![1]);
  const ino = Deno.statSync(`/proc/${pid}/fd/${fd}`).ino!;
  return `file[${mnt.toString(16)}:${ino.toString(16)}]`;
}

/** `criu ARGS` with our fd `given` as its fd 5. */
async function criuWithFd(
  args: string[],
  given: number,
  errPath: string,
): Promise<{ code: number; stderr: string }> {
  const err = openFd(errPath, OPEN.WRONLY | OPEN.CREAT | OPEN.TRUNC | OPEN.CLOEXEC);
  let pid: number;
  try {
    pid = spawn(CRIU, [CRIU, ...args], { fds: { 2: err, 5: given } });
  } finally {
    closeFd(err);
  }
  for (;;) {
    const done = waitRaw(pid, true);
    if (done) return { code: (done.status >> 8) & 0xff, stderr: Deno.readTextFileSync(errPath) };
    await sleep(20);
  }
}

interface Run {
  w: Workload;
  images: string;
  /** The file the workload opened, and the one restores hand in instead. */
  dumped: string;
  given: string;
}

async function withExternalFile(expectGiven: boolean, body: (run: Run) => Promise<void>): Promise<void> {
  const fds = openFds();
  const images = tempDir();
  const w = await Workload.start("external_file");
  const run: Run = { w, images, dumped: `${w.result}.ext`, given: `${w.result}.given` };
  Deno.writeTextFileSync(run.given, "HELLO");
  try {
    await body(run);
    assert.equal(await w.finish(), "PASS", w.output());
    assert.equal(Deno.readTextFileSync(run.dumped), expectGiven ? "hello" : "heXYo");
    assert.equal(Deno.readTextFileSync(run.given), expectGiven ? "HEXYO" : "HELLO");
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
}

async function dumpExternal(run: Run, extra: string[] = []): Promise<string> {
  const key = externalKey(run.w.pid, 5);
  await criuOk([
    "dump",
    "-t",
    `${run.w.pid}`,
    "-D",
    run.images,
    "-o",
    "dump.log",
    "-v4",
    "--external",
    key,
    ...extra,
  ]);
  return key;
}

/** Restores with the given file as criu's fd 5, named by `key`. */
async function restoreGiven(
  run: Run,
  key: string,
  inherit = true,
): Promise<{ code: number; stderr: string }> {
  const fd = openFd(run.given, OPEN.RDWR | OPEN.CLOEXEC);
  try {
    const args = ["restore", "-D", run.images, "-d", "-o", "restore.log", "-v4"];
    if (inherit) args.push("--inherit-fd", `fd[5]:${key}`);
    return await criuWithFd(args, fd, `${run.images}/restore.err`);
  } finally {
    closeFd(fd);
  }
}

async function cycle(run: Run): Promise<void> {
  const key = await dumpExternal(run);
  await reap(run.w.pid);
  const r = await restoreGiven(run, key);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(exists(`/proc/${run.w.pid}`), "the workload is not back");
  assert.equal(Deno.realPathSync(`/proc/${run.w.pid}/fd/5`), Deno.realPathSync(run.given));
}

Deno.test("external_file passes plain", () => withExternalFile(false, async () => {}));

Deno.test("external_file passes after dump --external and restore --inherit-fd", () =>
  withExternalFile(true, cycle));

Deno.test("external_file keeps running after dump --external --leave-running", () =>
  withExternalFile(false, async (run) => {
    await dumpExternal(run, ["-R"]);
    assert.ok(exists(`/proc/${run.w.pid}`));
  }));

Deno.test("external_file passes after 10 dump --external / restore --inherit-fd cycles", () =>
  withExternalFile(true, async (run) => {
    for (let i = 0; i < 10; i++) await cycle(run);
  }));

Deno.test("an external file is recorded by its key, and a restore without its --inherit-fd is refused", () =>
  withExternalFile(true, async (run) => {
    const key = await dumpExternal(run);
    await reap(run.w.pid);
    const files = await criuOk(["crit", "decode", "-i", `${run.images}/files.img`, "--pretty"]);
    assert.match(files.stdout, new RegExp(`"name": "${key.replace(/[[\]]/g, "\\$&")}"`));
    assert.match(files.stdout, /"ext": true/);
    assert.doesNotMatch(files.stdout, new RegExp(run.dumped), "the path of an external file is not recorded");
    const refused = await restoreGiven(run, key, false);
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      new RegExp(
        `was dumped as external \\(--external file\\[.*\\]\\): the restore needs it back with --inherit-fd fd\\[N\\]:file\\[`,
      ),
    );
    assert.ok(!exists(`/proc/${run.w.pid}`), "a refused restore left the workload behind");
    const r = await restoreGiven(run, key);
    assert.equal(r.code, 0, r.stderr);
  }));

Deno.test("RPC external marks the file external on dump", () =>
  withExternalFile(true, async (run) => {
    const key = externalKey(run.w.pid, 5);
    await new CriuClient({ inheritOutput: false }).dump({
      pid: run.w.pid,
      imagesDir: run.images,
      logFile: "dump.log",
      logLevel: 4,
      external: [key],
    });
    await reap(run.w.pid);
    const r = await restoreGiven(run, key);
    assert.equal(r.code, 0, r.stderr);
  }));
