/**
 * Unix sockets: every case through the standard matrix, the images as Debian's crit reads them,
 * the refusals (each leaving the workload running as it was), --ext-unix-sk, and a real program
 * (Python's socketserver) answering the same after a restore.
 */
import assert from "node:assert/strict";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import {
  bindSocket,
  closeSocket,
  connectSocket,
  listenSocket,
  makeSocket,
  MSG,
  receiveBytes,
  sendBytes,
  SOCK,
} from "../ffi/sockcall.ts";
import { AF, encodeSockaddr, unixAddress } from "../ffi/sockaddr.ts";
import { sendSome } from "../ffi/unix_sk.ts";
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
import { CriuClient, CriuRpcError } from "../mod.ts";
import { dumpRestore, refusedDump, registerMatrix, withWorkload } from "./lib/matrix.ts";
import { UPSTREAM } from "./lib/upstream.ts";
import { debianCrit, python3 } from "./lib/tools.ts";

registerMatrix([
  { name: "unix_sockets", args: ["pair-stream", "pair-dgram", "pair-seqpacket", "unbound"] },
  { name: "unix_sockets", args: ["path", "abstract", "deleted"] },
  { name: "unix_sockets", args: ["fork", "shared", "shutdown", "scm-rights"] },
  {
    name: "unix_sk",
    args: ["backlog", "options", "filter", "relative", "dgram-server", "semi-closed", "scm-mix", "peek-off"],
  },
  { name: "unix_sk", args: ["dgram-senders"] },
]);

async function crit(path: string): Promise<{ entries: Record<string, unknown>[] }> {
  const out = await new Deno.Command(debianCrit(), {
    args: ["decode", "--pretty", "-i", path],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, `crit decode ${path}: ${dec.decode(out.stderr)}`);
  return JSON.parse(dec.decode(out.stdout));
}

type Usk = {
  id: number;
  ino: number;
  type: string;
  state: string;
  peer: number;
  name: string;
  deleted?: boolean;
  shutdown?: string;
  file_perms?: { mode: number };
  opts: Record<string, unknown>;
};

Deno.test("Debian's crit reads the unix sockets and their queues as dumped", async () => {
  const fds = openFds();
  const w = await Workload.start("unix_sockets", ["pair-seqpacket", "path", "deleted", "shutdown"]);
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", "-o", "dump.log", "-v4"]);
    const files = await crit(`${images}/files.img`);
    // crit shows names quoted-printable: a path keeps the NUL the kernel reports after it ("=00").
    const usk = files.entries.filter((e) => e.type === "UNIXSK").map((e) => e.usk as Usk)
      .map((u) => ({ ...u, name: u.name.replace(/=00$/, "") }));
    const byIno = new Map(usk.map((u) => [u.ino, u]));
    const listener = usk.find((u) => u.state === "LISTEN" && u.name.endsWith("unix_sockets.result.sock"));
    assert.ok(listener, `no listener bound to the path in ${JSON.stringify(usk)}`);
    assert.equal(listener.type, "STREAM");
    assert.ok(listener.file_perms, "a bound path keeps its file's mode");
    const gone = usk.filter((u) => u.deleted);
    // The accepted end of the removed listener's connection shares its name, so "gone-stream" twice.
    assert.deepEqual([...new Set(gone.map((u) => u.name.replace(/.*\./, "")))].sort(), [
      "gone",
      "gone-stream",
    ]);
    for (const u of usk) {
      if (u.peer) assert.ok(byIno.has(u.peer), `socket ${u.ino}'s peer ${u.peer} is not in the image`);
    }
    const seqpackets = usk.filter((u) => u.type === "SEQPACKET");
    assert.equal(seqpackets.length, 2);
    assert.equal(seqpackets[0]!.peer, seqpackets[1]!.ino);
    assert.ok(usk.some((u) => u.shutdown === "BOTH"), "the SHUT_RDWR pair keeps its shutdown");
    const queues = await crit(`${images}/sk-queues.img`);
    const ids = new Set(usk.map((u) => u.id));
    for (const q of queues.entries) {
      assert.ok(ids.has(q.id_for as number), `queue for unknown file ${q.id_for}`);
    }
    // The seqpacket pair queued messages of 100, 1 and 700 bytes each way, boundaries kept.
    for (const s of seqpackets) {
      const lengths = queues.entries.filter((q) => q.id_for === s.id).map((q) => q.length);
      assert.deepEqual(lengths, [100, 1, 700]);
    }
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
});

Deno.test("queued sender credentials (SCM_CREDENTIALS) are refused by name and stay queued", () =>
  refusedDump(
    "unix_sockets",
    ["scm-creds"],
    /Control messages in queue, not supported \(sender credentials, SCM_CREDENTIALS\)/,
  ));

// CRIU 4.2 keeps no sender credentials either (sk_packet_entry has only SCM_RIGHTS): its dump of the
// same queue fails with the words ours uses, and the workload runs on with its datagrams queued.
Deno.test({
  name: "CRIU 4.x refuses queued sender credentials (SCM_CREDENTIALS) with the same words",
  ignore: !UPSTREAM,
  fn: () =>
    withWorkload({ name: "unix_sockets", args: ["scm-creds"] }, async (w, images) => {
      const out = await new Deno.Command(UPSTREAM!, {
        args: ["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).output();
      assert.notEqual(out.code, 0, "CRIU 4.x should refuse the dump");
      assert.match(Deno.readTextFileSync(`${images}/dump.log`), /Control messages in queue, not supported/);
    }),
});

Deno.test("a connection waiting in a backlog with data sent is refused as CRIU does", () =>
  refusedDump("unix_sk", ["backlog-data"], /non-empty write queue on an in-flight socket/));

Deno.test("a --leave-running dump leaves a socket's peek offset and queue as they were", async () => {
  const fds = openFds();
  const w = await Workload.start("unix_sk", ["peek-off"]);
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", "-o", "dump.log", "-v4"]);
    assert.ok(exists(`${images}/sk-queues.img`), "the queue was not dumped");
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
});

Deno.test("a refused dump leaves a socket's peek offset as it was", () =>
  refusedDump(
    "unix_sockets",
    ["options"],
    /Control messages in queue, not supported \(sender credentials, SCM_CREDENTIALS\)/,
  ));

/** A server outside the tree: a datagram socket and a listener at paths in `dir`; closed by the caller. */
function externalServer(
  dir: string,
): { dgram: number; listener: number; dgramPath: string; streamPath: string } {
  const dgramPath = `${dir}/ext-dgram.sock`;
  const streamPath = `${dir}/ext-stream.sock`;
  const dgram = makeSocket(AF.UNIX, SOCK.DGRAM);
  const listener = makeSocket(AF.UNIX, SOCK.STREAM);
  bindSocket(dgram, { family: AF.UNIX, name: new TextEncoder().encode(dgramPath) });
  bindSocket(listener, { family: AF.UNIX, name: new TextEncoder().encode(streamPath) });
  listenSocket(listener, 4); // a connection from the tree waits here; nobody accepts it
  return { dgram, listener, dgramPath, streamPath };
}

Deno.test("a socket connected outside the tree is refused without --ext-unix-sk, with CRIU's hint", async () => {
  const dir = tempDir();
  const ext = externalServer(dir);
  try {
    await refusedDump(
      "unix_sk",
      ["ext-dgram", `ext=${ext.dgramPath}`],
      /unix datagram socket \d+.*external socket is used: its peer unix socket \d+ \(.*ext-dgram.sock\) is outside the tree. Consider using --ext-unix-sk option/,
    );
    await refusedDump(
      "unix_sk",
      ["ext-stream", `extstream=${ext.streamPath}`],
      /unix stream socket \d+.*Consider using --ext-unix-sk option/,
    );
    await refusedDump(
      "unix_sk",
      ["ext-stream", `extstream=${ext.streamPath}`],
      /can't dump half of stream unix connection \(name: unnamed; peer name: .*ext-stream.sock\)/,
      ["--ext-unix-sk"],
    );
  } finally {
    closeSocket(ext.dgram);
    closeSocket(ext.listener);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("with --ext-unix-sk a datagram socket connected outside the tree is reconnected by path", async () => {
  const fds = openFds();
  const dir = tempDir();
  const ext = externalServer(dir);
  const c = { name: "unix_sk", args: ["ext-reply", `ext=${ext.dgramPath}`], criuArgs: ["--ext-unix-sk"] };
  const w = await Workload.start(c.name, c.args);
  try {
    // A datagram from outside waits in the socket's queue across the dump.
    const reply = new TextEncoder().encode("reply");
    const to = encodeSockaddr(unixAddress(`@criu-ts-${w.pid}-ext`));
    assert.equal(sendSome(ext.dgram, reply, to.bytes.slice(0, to.len)), 5);
    Deno.mkdirSync(`${dir}/images`);
    await dumpRestore(w, `${dir}/images`, c);
    assert.equal(await w.finish(), "PASS", w.output());
    const got = [receiveBytes(ext.dgram, 64, MSG.DONTWAIT), receiveBytes(ext.dgram, 64, MSG.DONTWAIT)];
    assert.deepEqual(got.map((b) => new TextDecoder().decode(b)), ["before", "after"]);
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    closeSocket(ext.dgram);
    closeSocket(ext.listener);
    Deno.removeSync(dir, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
});

/** The inodes of the sockets process `pid` holds. */
function socketInodes(pid: number): number[] {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)]
    .map((e) => /^socket:\[(\d+)\]$/.exec(Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`)))
    .filter((m) => m !== null).map((m) => Number(m[1]));
}

Deno.test("RPC unix_sk_ino: a stream socket connected outside the tree is an exception, connected again by name", async () => {
  const fds = openFds();
  const dir = tempDir();
  const ext = externalServer(dir);
  const w = await Workload.start("unix_sk", ["ext-stream", `extstream=${ext.streamPath}`]);
  const images = `${dir}/images`;
  Deno.mkdirSync(images);
  try {
    const [ino] = socketInodes(w.pid);
    assert.ok(ino, "the workload holds no socket");
    // Without the exception the dump is refused, as CRIU refuses half of a stream connection.
    const client = new CriuClient({ criuPath: CRIU, inheritOutput: false });
    await assert.rejects(
      client.dump({ pid: w.pid, imagesDir: images, extUnixSk: true, logFile: "refused.log" }),
      CriuRpcError,
    );
    assert.ok(!exists(`${images}/inventory.img`));
    await client.dump({
      pid: w.pid,
      imagesDir: images,
      extUnixSk: true,
      unixSkIno: [{ inode: ino }],
      logFile: "dump.log",
      logLevel: 4,
    });
    await reap(w.pid);
    await criuOk(["restore", "-D", images, "-d", "--ext-unix-sk", "-o", "restore.log", "-v4"]);
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    closeSocket(ext.dgram);
    closeSocket(ext.listener);
    Deno.removeSync(dir, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
});

Deno.test("a restore without --ext-unix-sk refuses images with an external socket", async () => {
  const dir = tempDir();
  const ext = externalServer(dir);
  const w = await Workload.start("unix_sk", ["ext-dgram", `ext=${ext.dgramPath}`]);
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", dir, "-R", "--ext-unix-sk", "-o", "dump.log"]);
    const r = await criu(["restore", "-D", dir, "-d", "-o", "restore.log"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /External socket found in image.*Consider using the --ext-unix-sk option/);
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    closeSocket(ext.dgram);
    closeSocket(ext.listener);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a restore does not replace a file that is not a socket at a bound path, and leaves nothing behind", async () => {
  const fds = openFds();
  const w = await Workload.start("unix_sockets", ["path"]);
  const images = tempDir();
  try {
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"]);
    for (const pid of tree) await reap(pid);
    const path = `${w.dir}/unix_sockets.result.dsock`;
    Deno.removeSync(path);
    Deno.writeTextFileSync(path, "not a socket");
    const r = await criu(["restore", "-D", images, "-d", "-o", "restore.log", "-v4"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Cannot bind unix socket \d+ to .*\.dsock: a file that is not a socket is there/);
    assert.equal(Deno.readTextFileSync(path), "not a socket");
    for (const pid of tree) assert.ok(!exists(`/proc/${pid}`), `process ${pid} is left behind`);
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
});

/** One request to the echo server at `path`: a line out, a line back. */
function ask(path: string, line: string): string {
  const fd = makeSocket(AF.UNIX, SOCK.STREAM);
  try {
    connectSocket(fd, { family: AF.UNIX, name: new TextEncoder().encode(path) });
    const bytes = new TextEncoder().encode(line + "\n");
    sendBytes(fd, bytes);
    let answer = "";
    for (let i = 0; i < 100 && !answer.endsWith("\n"); i++) {
      const part = receiveBytes(fd, 256);
      if (part.length === 0) break;
      answer += new TextDecoder().decode(part);
    }
    return answer.trim();
  } finally {
    closeSocket(fd);
  }
}

const ECHO_SERVER = `
import os, socketserver, sys
count = 0
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        global count
        count += 1
        line = self.rfile.readline().decode().strip()
        self.wfile.write(f"{count} {line}\\n".encode())
server = socketserver.UnixStreamServer(sys.argv[1], Echo)
open(sys.argv[1] + ".ready", "w").close()
server.serve_forever()
`;

Deno.test("Python's socketserver.UnixStreamServer answers the same after dump and restore", async () => {
  const fds = openFds();
  const dir = tempDir();
  const path = `${dir}/echo.sock`;
  const nul = openFd("/dev/null", OPEN.RDWR | OPEN.CLOEXEC);
  let pid = 0;
  try {
    pid = spawn(python3(), ["python3", "-c", ECHO_SERVER, path], {
      fds: { 0: nul, 1: nul, 2: nul },
      setsid: true,
    });
    await waitFor("the echo server", () => exists(`${path}.ready`));
    assert.equal(ask(path, "hello"), "1 hello");
    const tree = [pid, ...descendants(pid)];
    await criuOk(["dump", "-t", `${pid}`, "-D", dir, "-o", "dump.log", "-v4"]);
    for (const p of tree) await reap(p);
    await criuOk(["restore", "-D", dir, "-d", "-o", "restore.log", "-v4"]);
    assert.ok(exists(`/proc/${pid}`), "the server is not back");
    // Its count lives in its memory: the next answer says 2.
    assert.equal(ask(path, "again"), "2 again");
  } finally {
    closeFd(nul);
    await killTree(pid);
    Deno.removeSync(dir, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
});

Deno.test("unix sockets of a tree in its own network namespace come back in the new one", async () => {
  const fds = openFds();
  const dir = tempDir();
  const result = `${dir}/unix_sockets.result`;
  const nul = openFd("/dev/null", OPEN.RDWR | OPEN.CLOEXEC);
  let pid = 0;
  try {
    // unshare execs the workload, same pid: abstract names then live in that namespace only.
    const bin = await workloadBin("unix_sockets");
    pid = spawn("/usr/bin/unshare", ["unshare", "-n", bin, result, "abstract", "pair-dgram"], {
      fds: { 0: nul, 1: nul, 2: nul },
      setsid: true,
    });
    await waitFor("the workload", () => exists(`${result}.ready`) || exists(result));
    assert.ok(!exists(result), "the workload failed to set up");
    await criuOk(["dump", "-t", `${pid}`, "-D", dir, "-o", "dump.log", "-v4"]);
    assert.ok(
      [...Deno.readDirSync(dir)].some((e) => e.name.startsWith("netns-")),
      "no network namespace dumped",
    );
    await reap(pid);
    await criuOk(["restore", "-D", dir, "-d", "-o", "restore.log", "-v4"]);
    Deno.kill(pid, "SIGTERM");
    await waitFor("the result", () => exists(result) && Deno.readTextFileSync(result).endsWith("\n"), 30000);
    await reap(pid);
    assert.equal(Deno.readTextFileSync(result).trim(), "PASS");
  } finally {
    closeFd(nul);
    await killTree(pid);
    Deno.removeSync(dir, { recursive: true });
  }
  assert.deepEqual(openFds(), fds, "the test leaked fds");
});
