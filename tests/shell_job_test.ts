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
import { ImageDir } from "../src/images/dir.ts";
import { KINDS } from "../src/images/kinds.ts";
import { type tty_info_entry, TtyType } from "../src/images/gen/tty_pb.ts";
import type { file_entry } from "../src/images/gen/fdinfo_pb.ts";

Deno.test("a shell job comes back on criu's terminal as its foreground group", async () => {
  const images = await shellJobScenario(CRIU, CRIU);
  checkTerminalImages(new ImageDir(images.path));
  images.remove();
});

// With CRIU_UPSTREAM pointing at a CRIU 4.x binary: shell jobs go across the two tools.
const upstream = Deno.env.get("CRIU_UPSTREAM");
Deno.test({
  name: "CRIU 4.x restores our dump of a shell job on its terminal",
  ignore: !upstream,
  fn: async () => (await shellJobScenario(CRIU, upstream!)).remove(),
});
Deno.test({
  name: "we restore CRIU 4.x's dump of a shell job on our terminal",
  ignore: !upstream,
  fn: async () => (await shellJobScenario(upstream!, CRIU)).remove(),
});

/**
 * A shell job on a real pty (util-linux `script`): started by a shell, dumped with -j by
 * `dumper`, restored with -j by `restorer` on the same terminal, then ended; it must pass and
 * the restorer exit with its status. Returns the images, for the caller to look at and remove.
 */
async function shellJobScenario(dumper: string, restorer: string) {
  const dir = tempDir();
  const result = `${dir}/shell_job.result`;
  const scenario = `${dir}/scenario.sh`;
  // A non-interactive bash on the pty: its background job shares its (foreground) group, and is
  // given the terminal explicitly (bash would give it /dev/null otherwise; CRIU's restore needs
  // it on stdin).
  Deno.writeTextFileSync(
    scenario,
    `term=$(tty)
"${await workloadBin("shell_job")}" "${result}" <"$term" &
pid=$!
while [ ! -e "${result}.ready" ]; do sleep 0.05; done
mkdir "${dir}/img"
"${dumper}" dump -t $pid -D "${dir}/img" -j -o dump.log -v4 || exit 11
wait $pid 2>/dev/null
"${restorer}" restore -D "${dir}/img" -j -o restore.log -v4 <"$term" &
restorer=$!
until grep -q "Restored [0-9]* task\\|Restore finished successfully" "${dir}/img/restore.log" 2>/dev/null; do sleep 0.05; done
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
  } catch (e) {
    Deno.removeSync(dir, { recursive: true });
    throw e;
  }
  return { path: `${dir}/img`, remove: () => Deno.removeSync(dir, { recursive: true }) };
}

/**
 * The terminal is recorded as CRIU records it, or CRIU's restore refuses it: a pty with its index,
 * termios, locked termios and window size (without them it is a hung-up one), and each terminal
 * file with a regular-file entry holding its path.
 */
function checkTerminalImages(dir: ImageDir): void {
  const [info] = dir.read<tty_info_entry>(KINDS.TTY_INFO);
  assert.equal(info!.type, TtyType.PTY);
  assert.ok(info!.pty, "the pty's index");
  assert.equal(info!.termios?.cCc.length, 19);
  assert.ok(info!.termios!.cLflag & 0o10, "ECHO is on in the terminal's termios");
  assert.ok(info!.termiosLocked && info!.winsize);
  const files = dir.read<file_entry>(KINDS.FILES);
  const ttys = files.filter((f) => f.tty);
  assert.ok(ttys.length > 0);
  for (const t of ttys) {
    const reg = files.find((f) => f.id === t.tty!.regfId)?.reg;
    assert.equal(reg?.name, `/dev/pts/${info!.pty!.index}`, `terminal file ${t.id} names its path`);
  }
}

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
