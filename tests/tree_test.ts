/**
 * Threads, process trees, sessions and zombies: every workload through the standard matrix
 * (plain, dump+restore, --leave-running, ten cycles).
 */
import assert from "node:assert/strict";
import { spawn } from "../ffi/spawn.ts";
import {
  criu,
  criuOk,
  descendants,
  exists,
  killTree,
  readNumbers,
  reap,
  tempDir,
  waitFor,
  workloadBin,
} from "./lib/harness.ts";
import { dumpRestore, registerMatrix, withWorkload } from "./lib/matrix.ts";
import { python3 } from "./lib/tools.ts";

registerMatrix([
  { name: "threads", args: ["1"] },
  { name: "threads", args: ["2"] },
  { name: "threads", args: ["64"] },
  { name: "threads", args: ["500"] },
  { name: "tree" },
  { name: "waiter" },
  { name: "shared_files" },
]);

registerMatrix([
  { name: "pipeline.sh", settleMs: 200 },
  { name: "pipeline.sh", settleMs: 200, criuArgs: ["--shell-job"] },
]);

/**
 * Starts `bin/pidns RESULT init [session]` (a launcher that leaves a PID-namespace init behind),
 * dumps the init's tree with -j, restores it with -j and `restoreArgs`, lets `check` look at the
 * restored init, then ends it and expects PASS from inside the namespace.
 */
async function pidnsRoundTrip(
  mode: string[],
  restoreArgs: string[],
  check: (init: number, dir: string) => void,
) {
  const dir = tempDir();
  const result = `${dir}/pidns.result`;
  const launcher = spawn(await workloadBin("pidns"), ["pidns", result, "init", ...mode], { setsid: true });
  let init = 0;
  try {
    await waitFor("the namespace", () => exists(`${result}.ready`));
    await reap(launcher);
    init = Number(Deno.readTextFileSync(`${result}.pid`).trim());
    const tree = [init, ...descendants(init)];
    // Without "session" the init's session is its launcher's, outside the namespace: a shell job.
    await criuOk(["dump", "-t", `${init}`, "-D", dir, "-j", "-o", "dump.log", "-v4"]);
    for (const pid of tree) await reap(pid);
    const args = ["-d", "-j", "--pidfile", `${dir}/restored.pid`, ...restoreArgs];
    await criuOk(["restore", "-D", dir, ...args, "-o", "restore.log", "-v4"]);
    init = Number(Deno.readTextFileSync(`${dir}/restored.pid`).trim());
    check(init, dir);
    Deno.kill(init, "SIGTERM");
    await waitFor("the verdict", () => exists(result) && Deno.readTextFileSync(result).endsWith("\n"));
    assert.equal(Deno.readTextFileSync(result).trim(), "PASS");
  } finally {
    await killTree(init);
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("a PID namespace's init and its child round-trip, pids inside unchanged", async () => {
  const record = (dir: string) => `echo "$CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID" >> ${dir}/hooks`;
  const hooksDir = tempDir();
  try {
    await pidnsRoundTrip([], ["--action-script", record(hooksDir)], (init) => {
      // A new PID namespace was made: the namespace hooks run, with the init's pid in ours.
      const seen = Deno.readTextFileSync(`${hooksDir}/hooks`).trim().split("\n");
      assert.deepEqual(seen.map((l) => l.split(" ")[0]), [
        "pre-restore",
        "setup-namespaces",
        "post-setup-namespaces",
        "post-restore",
        "pre-resume",
        "post-resume",
      ]);
      assert.ok(seen.includes(`setup-namespaces ${init}`), seen.join("; "));
      assert.match(Deno.readTextFileSync(`/proc/${init}/status`), /NSpid:\s+\d+\s+1\n/);
    });
  } finally {
    Deno.removeSync(hooksDir, { recursive: true });
  }
});

Deno.test("a PID namespace nested below the dump root round-trips, pids inside and outside unchanged", () =>
  withWorkload({ name: "pidns" }, (w, images) => dumpRestore(w, images, { name: "pidns" })));

Deno.test("a tree with one process that cannot be dumped is resumed whole, and the error names it", async () => {
  const dir = tempDir();
  // The child holds a vsock socket, which is not supported yet; the parent holds only plain files.
  const py = new Deno.Command(python3(), {
    args: [
      "-c",
      "import os,socket,sys,time\nos.setsid()\nc=os.fork()\nif c==0:\n    s=socket.socket(socket.AF_VSOCK,socket.SOCK_STREAM)\n    time.sleep(60)\nprint(os.getpid(),c,flush=True)\ntime.sleep(60)",
    ],
    stdout: "piped",
    stdin: "null",
  }).spawn();
  const [parent, child] = await readNumbers(py.stdout, 2);
  try {
    await waitFor("the child's socket", () => [...Deno.readDirSync(`/proc/${child}/fd`)].length > 3);
    const r = await criu(["dump", "-t", `${parent}`, "-D", dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`socket:\\[\\d+\\]\\) of process ${child}`));
    for (const pid of [parent!, child!]) {
      const status = Deno.readTextFileSync(`/proc/${pid}/status`);
      assert.match(status, /TracerPid:\s+0\n/);
      assert.doesNotMatch(status, /State:\s+[tT]/);
    }
    assert.ok(!exists(`${dir}/inventory.img`));
  } finally {
    py.kill("SIGKILL");
    await py.status;
    try {
      Deno.kill(child!, "SIGKILL");
    } catch {
      // ended
    }
    await reap(child!);
    await py.stdout.cancel().catch(() => {});
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("with --shell-job a root that led its own session keeps it (as CRIU)", () =>
  pidnsRoundTrip(["session"], [], () => {}));

Deno.test("memory a tree shares copy-on-write stays shared after restore (not restored once per process)", async () => {
  const prog =
    "import os,time\ndata=bytearray(os.urandom(32<<20))\nfor i in range(4):\n    if os.fork()==0:\n        data[0]=i\n        time.sleep(60)\ntime.sleep(60)";
  const pid = spawn(python3(), ["python3", "-c", prog], { setsid: true, fds: {} });
  const dir = tempDir();
  const pss = (pids: number[]) =>
    pids.reduce(
      (kb, p) =>
        kb + Number(/Pss:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${p}/smaps_rollup`))?.[1] ?? 0),
      0,
    );
  try {
    await waitFor("four children", () => descendants(pid).length === 4 && pss(descendants(pid)) > 0, 20000);
    await new Promise((r) => setTimeout(r, 300));
    const tree = [pid, ...descendants(pid)];
    const before = pss(tree);
    await criuOk(["dump", "-t", `${pid}`, "-D", dir]);
    for (const p of tree) await reap(p);
    await criuOk(["restore", "-D", dir, "-d"]);
    const restored = [pid, ...descendants(pid)];
    assert.equal(restored.length, 5);
    const after = pss(restored);
    assert.ok(
      after < before * 1.5,
      `PSS ${after} kB after restore, ${before} kB before: memory was duplicated`,
    );
  } finally {
    await killTree(pid);
    Deno.removeSync(dir, { recursive: true });
  }
});
