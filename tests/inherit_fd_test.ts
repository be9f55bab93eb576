/**
 * --inherit-fd (and RPC inherit_fd), as runc uses it: a tree whose stdin and stdout are pipes of
 * the caller is restored with new pipes the caller hands to criu as its own fds, named by the
 * dumped pipes (`pipe:[INO]`); the data must then flow through the new pipes and never the old.
 */
import assert from "node:assert/strict";
import {
  CRIU,
  criu,
  criuOk,
  exists,
  killTree,
  openFds,
  reap,
  sleep,
  tempDir,
  waitFor,
  Workload,
} from "./lib/harness.ts";
import { closeFd, OPEN, openFd, pipeFds, readSome, setNonblocking, writeFull } from "../ffi/fd.ts";
import { openPty } from "../ffi/pty.ts";
import { spawn } from "../ffi/spawn.ts";
import { waitRaw } from "../ffi/wait.ts";
import { CriuClient } from "../mod.ts";
import { SeqpacketSocket } from "../ffi/socket.ts";
import { bindSocket, closeSocket, makeSocket, MSG, receiveBytes, SOCK } from "../ffi/sockcall.ts";
import { AF } from "../ffi/sockaddr.ts";

/** The lines coming out of the read end of one of our pipes (non-blocking). */
class Lines {
  #text = "";
  #ended = false;
  constructor(readonly fd: number) {}

  #pull(): void {
    for (;;) {
      const got = readSome(this.fd);
      if (got === undefined) return;
      if (got === "eof") {
        this.#ended = true;
        return;
      }
      this.#text += new TextDecoder().decode(got).replaceAll("\r", ""); // a terminal's ONLCR
    }
  }

  /** The next whole line; fails after `ms` without one. */
  async next(ms = 20000): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      this.#pull();
      const nl = this.#text.indexOf("\n");
      if (nl >= 0) {
        const line = this.#text.slice(0, nl);
        this.#text = this.#text.slice(nl + 1);
        return line;
      }
      if (this.#ended) throw new Error(`The pipe ended before a whole line: "${this.#text}"`);
      if (Date.now() > deadline) throw new Error(`No whole line within ${ms} ms: "${this.#text}"`);
      await sleep(10);
    }
  }

  /** True once every writer is gone and nothing is left unread. */
  ended(): boolean {
    this.#pull();
    return this.#ended && this.#text === "";
  }
}

/** A pipe pair for the tree's stdio: our ends (write to its stdin, read its stdout) and its ends. */
interface Stdio {
  toStdin: number;
  fromStdout: Lines;
  /** The ends the tree (or criu, to hand in) gets. */
  stdin: number;
  stdout: number;
}

function newStdio(): Stdio {
  const [inR, inW] = pipeFds();
  const [outR, outW] = pipeFds(true);
  return { toStdin: inW, fromStdout: new Lines(outR), stdin: inR, stdout: outW };
}

/** A new pty instead: we hold the master, the tree gets the slave as its stdin and stdout. */
function newTtyStdio(): Stdio {
  const pty = openPty();
  setNonblocking(pty.master);
  const slave = openFd(pty.slavePath, OPEN.RDWR | OPEN.CLOEXEC | 0o400); // O_NOCTTY
  return { toStdin: pty.master, fromStdout: new Lines(pty.master), stdin: slave, stdout: slave };
}

/** Closes the ends we gave away (the tree or criu has its own copies now). */
function closeGiven(s: Stdio): void {
  new Set([s.stdin, s.stdout]).forEach(closeFd);
}

function closeOurs(s: Stdio): void {
  new Set([s.toStdin, s.fromStdout.fd]).forEach(closeFd);
}

/**
 * Sends a line into the tree and expects it back from the parent and the child, in any order (a
 * terminal also echoes the line itself).
 */
async function roundTrip(s: Stdio, word: string): Promise<void> {
  writeFull(s.toStdin, new TextEncoder().encode(`${word}\n`), "the tree's stdin");
  const got: string[] = [];
  while (got.length < 2) {
    const line = await s.fromStdout.next();
    if (line !== word) got.push(line);
  }
  assert.deepEqual(got.sort(), [`C:${word}`, `P:${word}`]);
}

/** The pipe names (pipe:[INO]) of the tree root's fds 0 and 1, as CRIU names them for --inherit-fd. */
function stdioNames(pid: number): [string, string] {
  return [Deno.readLinkSync(`/proc/${pid}/fd/0`), Deno.readLinkSync(`/proc/${pid}/fd/1`)];
}

/** CRIU's name of the terminal at fd 0 of `pid`: tty[RDEV:DEV] in hex. */
function ttyNameOf(pid: number): string {
  const st = Deno.statSync(`/proc/${pid}/fd/0`);
  return `tty[${st.rdev!.toString(16)}:${st.dev.toString(16)}]`;
}

/** Runs the launcher with `stdio`'s tree ends as its fds 0 and 1 (runc's way), stderr to a file. */
async function criuWithStdio(args: string[], stdio: Stdio, errPath: string, bin = CRIU): Promise<number> {
  const err = openFd(errPath, OPEN.WRONLY | OPEN.CREAT | OPEN.TRUNC | OPEN.CLOEXEC);
  let pid: number;
  try {
    pid = spawn(bin, [bin, ...args], { fds: { 0: stdio.stdin, 1: stdio.stdout, 2: err } });
  } finally {
    closeFd(err);
  }
  for (;;) {
    const done = waitRaw(pid, true);
    if (done) return (done.status >> 8) & 0xff;
    await sleep(20);
  }
}

interface Run {
  w: Workload;
  stdio: Stdio;
  images: string;
  /** On a terminal: dumps name it with --external tty[RDEV:DEV], restores make new ptys. */
  tty: boolean;
  /** The name of the terminal last dumped. */
  ttyName?: string;
}

/** Starts stdio_pipes on new pipes; checks the first line flows. */
async function withStdioTree(body: (run: Run) => Promise<void>, tty = false): Promise<void> {
  const fds = openFds();
  const images = tempDir();
  const run: Run = {
    w: undefined as unknown as Workload,
    stdio: tty ? newTtyStdio() : newStdio(),
    images,
    tty,
  };
  try {
    const args = tty ? ["tty"] : [];
    run.w = await Workload.start("stdio_pipes", args, { stdin: run.stdio.stdin, stdout: run.stdio.stdout });
    closeGiven(run.stdio);
    assert.equal(await run.stdio.fromStdout.next(), "ready");
    await roundTrip(run.stdio, "first");
    await body(run);
    assert.equal(await run.w.finish(), "PASS", run.w.output());
  } catch (e) {
    await run.w?.kill();
    throw e;
  } finally {
    closeOurs(run.stdio);
    run.w?.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
}

/**
 * Dumps the tree (which kills it), with criu-ts or the CRIU binary `bin`; returns the names of its
 * stdin and stdout pipes.
 */
async function dumpTree(run: Run, bin?: string): Promise<[string, string]> {
  const { w, images } = run;
  const names = stdioNames(w.pid);
  const tree = [w.pid, ...descendantsOf(w.pid)];
  const external = run.tty ? ["--external", ttyNameOf(w.pid)] : [];
  if (run.tty) run.ttyName = ttyNameOf(w.pid);
  const dump = ["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4", ...external];
  if (bin) {
    const out = await new Deno.Command(bin, { args: dump, stdin: "null", stdout: "null", stderr: "piped" })
      .output();
    assert.equal(out.code, 0, `${bin} dump failed: ${new TextDecoder().decode(out.stderr)}`);
  } else {
    await criuOk(dump);
  }
  for (const pid of tree) await reap(pid);
  return names;
}

/** `criu restore` with `fresh` as criu's stdin and stdout and `args` after the usual ones. */
async function restoreWith(
  run: Run,
  fresh: Stdio,
  args: string[],
  bin = CRIU,
): Promise<{ code: number; stderr: string }> {
  const err = `${run.images}/restore.err`;
  const restore = ["restore", "-D", run.images, "-d", "-o", "restore.log", "-v4", ...args];
  const code = await criuWithStdio(restore, fresh, err, bin);
  return { code, stderr: Deno.readTextFileSync(err) };
}

function inheritArgs([stdinName, stdoutName]: [string, string], run?: Run): string[] {
  // One terminal stands for both: one name.
  if (run?.tty) return ["--inherit-fd", `fd[0]:${run.ttyName}`];
  return ["--inherit-fd", `fd[0]:${stdinName}`, "--inherit-fd", `fd[1]:${stdoutName}`];
}

/** After a restore with `fresh`: the old stdout has no writer, lines go through the new pipes. */
async function checkNewPipes(run: Run, old: Stdio, fresh: Stdio, dumped: [string, string]): Promise<void> {
  assert.ok(exists(`/proc/${run.w.pid}`), "the tree is not back");
  assert.ok(old.fromStdout.ended(), "the old stdout pipe still has a writer after the restore");
  assert.notDeepEqual(stdioNames(run.w.pid), dumped, "the tree still holds the old pipes");
  await roundTrip(fresh, "after");
}

/**
 * Dumps the tree, restores it with new stdio pipes handed in by --inherit-fd, and checks lines go
 * through the new pipes while the old stdout has no writer left. Returns the new stdio.
 */
async function dumpRestoreWithNewPipes(
  run: Run,
  old: Stdio,
  tools: { dump?: string | undefined; restore?: string | undefined } = {},
): Promise<Stdio> {
  const dumped = await dumpTree(run, tools.dump);
  const fresh = run.tty ? newTtyStdio() : newStdio();
  try {
    const r = await restoreWith(run, fresh, inheritArgs(dumped, run), tools.restore);
    const log = `${run.images}/restore.log`;
    const errors = exists(log)
      ? Deno.readTextFileSync(log).split("\n").filter((l) => /Error|Warn|tty:/.test(l))
      : [];
    assert.equal(r.code, 0, `restore failed: ${r.stderr}${errors.slice(-10).join("\n")}`);
  } finally {
    closeGiven(fresh);
  }
  await checkNewPipes(run, old, fresh, dumped);
  return fresh;
}

function descendantsOf(pid: number): number[] {
  const kids = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/).filter((s) =>
    s
  );
  return kids.map(Number).flatMap((k) => [k, ...descendantsOf(k)]);
}

Deno.test("stdio_pipes passes plain", () =>
  withStdioTree(async (run) => await roundTrip(run.stdio, "again")));

Deno.test("stdio_pipes passes after dump and restore with --inherit-fd pipes", () =>
  withStdioTree(async (run) => {
    const fresh = await dumpRestoreWithNewPipes(run, run.stdio);
    closeOurs(run.stdio);
    Object.assign(run.stdio, fresh);
  }));

Deno.test("stdio_pipes keeps its pipes after dump --leave-running", () =>
  withStdioTree(async (run) => {
    await criuOk(["dump", "-t", `${run.w.pid}`, "-D", run.images, "-R"]);
    await roundTrip(run.stdio, "still");
  }));

Deno.test("stdio_pipes passes after 10 dump/restore cycles with new pipes each time", () =>
  withStdioTree(async (run) => {
    for (let i = 0; i < 10; i++) {
      const fresh = await dumpRestoreWithNewPipes(run, run.stdio);
      closeOurs(run.stdio);
      Object.assign(run.stdio, fresh);
    }
  }));

Deno.test("--inherit-fd naming an fd criu does not have is refused before anything is restored", () =>
  withStdioTree(async (run) => {
    const dumped = await dumpTree(run);
    const fresh = newStdio();
    try {
      const bad = await restoreWith(run, fresh, ["--inherit-fd", `fd[77]:${dumped[0]}`]);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /Cannot use --inherit-fd fd\[77\]:pipe:\[\d+\]: criu has no fd 77 open/);
      assert.ok(!exists(`/proc/${run.w.pid}`), "a refused restore left the tree behind");
      // debug[N]:MESSAGE writes a marker into the restored tree's output stream first, as in CRIU.
      const r = await restoreWith(run, fresh, [
        ...inheritArgs(dumped),
        "--inherit-fd",
        "debug[1]:restored here\n",
      ]);
      assert.equal(r.code, 0, r.stderr);
    } finally {
      closeGiven(fresh);
    }
    assert.equal(await fresh.fromStdout.next(), "restored here");
    await checkNewPipes(run, run.stdio, fresh, dumped);
    closeOurs(run.stdio);
    Object.assign(run.stdio, fresh);
  }));

Deno.test("--inherit-fd with a malformed argument is refused by name", async () => {
  const r = await criu(["restore", "-D", "/nonexistent", "--inherit-fd", "fd3:pipe:[1]"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--inherit-fd.*fd\[N\]:RESOURCE/);
});

Deno.test("crit decodes the dumped stdio pipes under the names --inherit-fd uses", () =>
  withStdioTree(async (run) => {
    const dumped = await dumpTree(run);
    const files = await criuOk(["crit", "decode", "-i", `${run.images}/files.img`, "--pretty"]);
    for (const name of dumped) {
      const ino = /^pipe:\[(\d+)\]$/.exec(name)![1];
      assert.match(files.stdout, new RegExp(`"pipe_id": ${ino}\\b`), `files.img has no pipe ${name}`);
    }
    const fresh = newStdio();
    try {
      const r = await restoreWith(run, fresh, inheritArgs(dumped));
      assert.equal(r.code, 0, r.stderr);
    } finally {
      closeGiven(fresh);
    }
    await checkNewPipes(run, run.stdio, fresh, dumped);
    closeOurs(run.stdio);
    Object.assign(run.stdio, fresh);
  }));

Deno.test("RPC inherit_fd hands a swrk's own fds to the restored tree (runc's stdio pipes)", () =>
  withStdioTree(async (run) => {
    const dumped = await dumpTree(run);
    const fresh = newStdio();
    try {
      // As runc: the swrk's fds 0 and 1 are the new pipes, each InheritFd names a dumped one.
      const client = new CriuClient({ inheritOutput: false, fds: { 0: fresh.stdin, 1: fresh.stdout } });
      const restored = await client.restore({
        imagesDir: run.images,
        logFile: "restore.log",
        logLevel: 4,
        inheritFd: [{ key: dumped[0], fd: 0 }, { key: dumped[1], fd: 1 }],
      });
      assert.equal(restored.pid, run.w.pid);
    } finally {
      closeGiven(fresh);
    }
    await checkNewPipes(run, run.stdio, fresh, dumped);
    closeOurs(run.stdio);
    Object.assign(run.stdio, fresh);
  }));

Deno.test("stdio_pipes tty passes plain", () =>
  withStdioTree(async (run) => await roundTrip(run.stdio, "again"), true));

Deno.test("stdio_pipes tty passes after dump --external tty[] and restore with a new pty by --inherit-fd", () =>
  withStdioTree(async (run) => {
    const fresh = await dumpRestoreWithNewPipes(run, run.stdio);
    closeOurs(run.stdio);
    Object.assign(run.stdio, fresh);
  }, true));

Deno.test("stdio_pipes tty keeps its terminal after dump --external tty[] --leave-running", () =>
  withStdioTree(async (run) => {
    await criuOk(["dump", "-t", `${run.w.pid}`, "-D", run.images, "-R", "--external", ttyNameOf(run.w.pid)]);
    await roundTrip(run.stdio, "still");
  }, true));

Deno.test("stdio_pipes tty passes after 10 cycles, each with a new pty", () =>
  withStdioTree(async (run) => {
    for (let i = 0; i < 10; i++) {
      const fresh = await dumpRestoreWithNewPipes(run, run.stdio);
      closeOurs(run.stdio);
      Object.assign(run.stdio, fresh);
    }
  }, true));

Deno.test("a terminal neither --external nor a shell job's is refused by name", () =>
  withStdioTree(async (run) => {
    const r = await criu(["dump", "-t", `${run.w.pid}`, "-D", run.images, "-o", "dump.log"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /terminal \/dev\/pts\/\d+\).*a terminal needs --shell-job/);
    assert.ok(!exists(`${run.images}/inventory.img`));
    await roundTrip(run.stdio, "on");
  }, true));

Deno.test("a tree that is a PID namespace's init gets the new pipes too (runc's container shape)", async () => {
  const fds = openFds();
  const images = tempDir();
  const stdio = newStdio();
  let init = 0;
  let fresh: Stdio | undefined;
  const w = await Workload.start("stdio_pipes", ["pidns"], { stdin: stdio.stdin, stdout: stdio.stdout });
  try {
    closeGiven(stdio);
    await reap(w.pid); // the launcher; the init runs on
    init = Number(Deno.readTextFileSync(`${w.result}.pid`).trim());
    assert.equal(await stdio.fromStdout.next(), "ready");
    await roundTrip(stdio, "first");
    const dumped = stdioNames(init);
    const tree = [init, ...descendantsOf(init)];
    await criuOk(["dump", "-t", `${init}`, "-D", images, "-o", "dump.log", "-v4"]);
    for (const pid of tree) await reap(pid);
    fresh = newStdio();
    try {
      const args = [
        "restore",
        "-D",
        images,
        "-d",
        "-o",
        "restore.log",
        "-v4",
        "--pidfile",
        `${images}/restored.pid`,
      ];
      const code = await criuWithStdio([...args, ...inheritArgs(dumped)], fresh, `${images}/restore.err`);
      assert.equal(code, 0, Deno.readTextFileSync(`${images}/restore.err`));
    } finally {
      closeGiven(fresh);
    }
    init = Number(Deno.readTextFileSync(`${images}/restored.pid`).trim());
    assert.match(
      Deno.readTextFileSync(`/proc/${init}/status`),
      /NSpid:\s+\d+\s+1\n/,
      "not a namespace's init",
    );
    assert.ok(stdio.fromStdout.ended(), "the old stdout pipe still has a writer after the restore");
    await roundTrip(fresh, "after");
    Deno.kill(init, "SIGTERM");
    await waitFor("the verdict", () => exists(w.result) && Deno.readTextFileSync(w.result).endsWith("\n"));
    assert.equal(Deno.readTextFileSync(w.result).trim(), "PASS", w.output());
  } finally {
    if (init) await killTree(init);
    closeOurs(stdio);
    if (fresh) closeOurs(fresh);
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
});

Deno.test("--inherit-fd socket:[INO] replaces a unix socket connected outside the tree", async () => {
  const fds = openFds();
  const dir = tempDir();
  const serverPath = `${dir}/server.sock`;
  const server = makeSocket(AF.UNIX, SOCK.DGRAM);
  bindSocket(server, { family: AF.UNIX, name: new TextEncoder().encode(serverPath) });
  const [ours, given] = SeqpacketSocket.pair();
  const w = await Workload.start("unix_sk", ["ext-dgram", `ext=${serverPath}`]);
  try {
    const socketFd = [...Deno.readDirSync(`/proc/${w.pid}/fd`)].find((e) =>
      Deno.readLinkSync(`/proc/${w.pid}/fd/${e.name}`).startsWith("socket:")
    )!.name;
    const name = Deno.readLinkSync(`/proc/${w.pid}/fd/${socketFd}`);
    assert.equal(new TextDecoder().decode(receiveBytes(server, 16)), "before");
    await criuOk(["dump", "-t", `${w.pid}`, "-D", dir, "-o", "dump.log", "-v4", "--ext-unix-sk"]);
    await reap(w.pid);
    const err = openFd(`${dir}/restore.err`, OPEN.WRONLY | OPEN.CREAT | OPEN.CLOEXEC);
    let pid: number;
    try {
      const args = ["restore", "-D", dir, "-d", "-o", "restore.log", "-v4", "--ext-unix-sk"];
      pid = spawn(CRIU, [CRIU, ...args, "--inherit-fd", `fd[5]:${name}`], { fds: { 2: err, 5: given.fd } });
    } finally {
      closeFd(err);
      given.close();
    }
    for (;;) {
      const done = waitRaw(pid, true);
      if (done) {
        assert.equal(done.status, 0, Deno.readTextFileSync(`${dir}/restore.err`));
        break;
      }
      await sleep(20);
    }
    // The workload's "after" goes to the socket we gave, not to the server it was connected to.
    assert.equal(await w.finish(), "PASS", w.output());
    assert.ok(ours.readable(5000), "nothing reached the socket handed in");
    assert.equal(new TextDecoder().decode(ours.receive()!.data), "after");
    assert.throws(
      () =>
        receiveBytes(server, 16, MSG.DONTWAIT),
      /EAGAIN/,
      "the old server still got a datagram",
    );
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    ours.close();
    closeSocket(server);
    w.cleanup();
    Deno.removeSync(dir, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
});

// Across the tools, with CRIU_UPSTREAM pointing at a CRIU 4.x binary: the same new pipes (or a
// new pty for a tree on a terminal dumped with --external tty[]) handed in.
const UPSTREAM = Deno.env.get("CRIU_UPSTREAM");
for (const tty of [false, true]) {
  for (
    const [what, tools] of [
      ["CRIU 4.x restores our dump of", { restore: UPSTREAM }],
      ["we restore CRIU 4.x's dump of", { dump: UPSTREAM }],
    ] as const
  ) {
    Deno.test({
      name: `${what} stdio_pipes${tty ? " tty" : ""} with --inherit-fd ${tty ? "pty" : "pipes"}`,
      ignore: !UPSTREAM,
      fn: () =>
        withStdioTree(async (run) => {
          const fresh = await dumpRestoreWithNewPipes(run, run.stdio, tools);
          closeOurs(run.stdio);
          Object.assign(run.stdio, fresh);
        }, tty),
    });
  }
}
