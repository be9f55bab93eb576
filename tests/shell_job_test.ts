/**
 * Terminals of shell jobs. --shell-job: a program started by an interactive shell on a terminal is dumped with -j and
 * restored with -j on criu's terminal, in criu's session and foreground process group. The whole
 * scenario runs inside a real pty (util-linux `script`), with job control on, as a user would.
 * orphan_pts_master (RPC, as runc asks it for a container with a console): the job comes back on
 * a new pty whose master goes to the RPC client.
 */
import assert from "node:assert/strict";
import { CRIU, criuOk, exists, reap, tempDir, waitFor, workloadBin } from "./lib/harness.ts";
import { CriuClient } from "../mod.ts";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import { libc } from "../ffi/libc.ts";
import { openPty } from "../ffi/pty.ts";

Deno.test("a shell job comes back on criu's terminal as its foreground group", async () => {
  const dir = tempDir();
  const result = `${dir}/shell_job.result`;
  const scenario = `${dir}/scenario.sh`;
  // A non-interactive bash on the pty: its background job shares its (foreground) group, and is
  // given the terminal explicitly (bash would give it /dev/null otherwise).
  Deno.writeTextFileSync(
    scenario,
    `term=$(tty)
"${await workloadBin("shell_job")}" "${result}" <"$term" &
pid=$!
while [ ! -e "${result}.ready" ]; do sleep 0.05; done
mkdir "${dir}/img"
"${CRIU}" dump -t $pid -D "${dir}/img" -j -o dump.log -v4 || exit 11
wait $pid 2>/dev/null
"${CRIU}" restore -D "${dir}/img" -j -o restore.log -v4 &
restorer=$!
until grep -q "Restored [0-9]* task" "${dir}/img/restore.log" 2>/dev/null; do sleep 0.05; done
kill -TERM $pid
wait $restorer
echo $? > "${dir}/restore.status"
`,
  );
  try {
    const out = await new Deno.Command("timeout", {
      args: ["60", "script", "-qec", `bash ${scenario}`, "/dev/null"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, text);
    assert.equal(Deno.readTextFileSync(result).trim(), "PASS", text);
    assert.equal(
      Deno.readTextFileSync(`${dir}/restore.status`).trim(),
      "0",
      "criu restore -j exits with the job's status",
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** Everything the master side has buffered now (it never blocks). */
function drain(master: number): string {
  const fds = new Int32Array([master, 1]); // struct pollfd { int fd; short events (POLLIN); short revents }
  const buf = new Uint8Array(4096);
  let text = "";
  while (libc.poll(new Uint8Array(fds.buffer), 1n, 0) > 0 && (fds[1]! >>> 16 & 1) !== 0) {
    const n = Number(libc.read(master, buf, BigInt(buf.length)));
    if (n <= 0) break;
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
  return text;
}

Deno.test("with orphan_pts_master the job comes back on a new pty whose master the RPC client gets", async () => {
  const dir = tempDir();
  const result = `${dir}/shell_job.result`;
  const images = `${dir}/img`;
  Deno.mkdirSync(images);
  const pty = openPty();
  let newMaster: number | undefined;
  let pid = 0;
  try {
    // setsid -c: a session of its own with the pty as controlling terminal (as a container's init).
    const slave = openFd(pty.slavePath, OPEN.RDWR | OPEN.CLOEXEC | 0o400);
    try {
      const bin = await workloadBin("shell_job");
      pid = spawn("/usr/bin/setsid", ["setsid", "-c", bin, result], {
        fds: { 0: slave, 1: slave, 2: slave },
      });
    } finally {
      closeFd(slave);
    }
    await waitFor("shell_job to be ready", () => exists(`${result}.ready`) || exists(result));
    assert.ok(!exists(result), drain(pty.master));
    await criuOk(["dump", "-t", `${pid}`, "-D", images, "-j", "-o", "dump.log", "-v4"]);
    await reap(pid);
    const seen: string[] = [];
    const client = new CriuClient({ criuPath: CRIU });
    const restored = await client.restore({
      imagesDir: images,
      orphanPtsMaster: true,
      logLevel: 4,
      logFile: "restore.log",
    }, {
      orphanPtsMaster: (fd) => {
        seen.push("orphan-pts-master");
        newMaster = fd;
      },
    });
    assert.equal(restored.pid, pid);
    assert.deepEqual(seen, ["orphan-pts-master"]);
    assert.ok(newMaster !== undefined && newMaster >= 0, "no master fd came with the notification");
    Deno.kill(pid, "SIGTERM");
    await waitFor(
      "shell_job to report",
      () => exists(result) && Deno.readTextFileSync(result).endsWith("\n"),
    );
    const said = drain(newMaster);
    assert.equal(Deno.readTextFileSync(result).trim(), "PASS", said);
    // The job's log goes to its terminal: the master we were given reads it.
    assert.match(said, /after the wait: on \/dev\/pts\/\d+/);
    await reap(pid);
  } finally {
    if (pid && exists(`/proc/${pid}`)) {
      Deno.kill(pid, "SIGKILL");
      await reap(pid);
    }
    if (newMaster !== undefined) closeFd(newMaster);
    closeFd(pty.master);
    Deno.removeSync(dir, { recursive: true });
  }
});
