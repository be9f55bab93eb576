/**
 * The socket workloads run plain, without criu: each unix_sockets and inet_sockets mode alone and
 * all together, and tcp_established over IPv4 and IPv6. The dump/restore matrix is added once the
 * socket fd kinds exist. Two tests disturb a running workload from outside (a queued byte taken
 * away through a copy of its socket) to show that its checks can fail.
 */
import assert from "node:assert/strict";
import { openFds, reapZombies, sleep, tempDir, Workload } from "./lib/harness.ts";
import { collectSockets, IPPROTO, SockDiag } from "../ffi/sock_diag.ts";
import { descendants } from "./lib/harness.ts";
import { closeSocket, MSG, receiveBytes } from "../ffi/sockcall.ts";
import { readSocketOptions, socketKind } from "../ffi/sockopt.ts";
import { copyFdOf } from "../ffi/process.ts";
import { peekQueue } from "../ffi/skqueue.ts";
import { libc } from "../ffi/libc.ts";
import { AF } from "../ffi/sockaddr.ts";
import { isSyscallError } from "../ffi/errors.ts";

const UNIX_MODES = [
  "pair-stream",
  "pair-dgram",
  "pair-seqpacket",
  "path",
  "abstract",
  "unbound",
  "backlog",
  "fork",
  "shared",
  "scm-rights",
  "scm-creds",
  "shutdown",
  "options",
  "deleted",
];
const INET_MODES = ["listener", "bound", "unbound", "udp", "ipv6", "v4mapped"];

/** Starts a workload, lets it run `ms`, optionally meddles with it, and returns its verdict. */
async function runPlain(
  name: string,
  args: string[],
  ms = 50,
  meddle?: (w: Workload) => void,
): Promise<string> {
  const fds = openFds();
  const w = await Workload.start(name, args);
  try {
    await sleep(ms);
    meddle?.(w);
    const verdict = await w.finish();
    if (verdict !== "PASS" && !meddle) throw new Error(`${name} ${args.join(" ")}: ${w.output()}`);
    return verdict;
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    assert.deepEqual(openFds(), fds, "the test leaked fds");
  }
}

/** The socket inodes in `pid`'s fd table, by fd. */
function socketFds(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`);
    } catch {
      continue; // closed between the listing and the look (a workload's own short-lived fd)
    }
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) out.set(Number(m[1]), Number(e.name));
  }
  return out;
}

/** Takes one byte (a stream) or one datagram off the queue of `pid`'s socket `fd`, through a copy of the fd. */
function stealByte(pid: number, fd: number): void {
  const copy = copyFdOf(pid, fd);
  try {
    // The queue may be empty for a moment (the workload reads it too): try for up to 5 s.
    for (let i = 0; i < 500; i++) {
      try {
        assert.equal(receiveBytes(copy, 1, MSG.DONTWAIT).length, 1);
        return;
      } catch (e) {
        if (!isSyscallError(e, "EAGAIN")) throw e;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      }
    }
    throw new Error(`The queue of fd ${fd} of process ${pid} stayed empty`);
  } finally {
    closeSocket(copy);
  }
}

for (const mode of UNIX_MODES) {
  Deno.test(`unix_sockets ${mode} passes plain`, async () => {
    assert.equal(await runPlain("unix_sockets", [mode]), "PASS");
  });
}

Deno.test("unix_sockets with every mode at once passes plain", async () => {
  assert.equal(await runPlain("unix_sockets", []), "PASS");
});

Deno.test("unix_sockets pair-dgram fails when a queued datagram goes missing", async () => {
  const verdict = await runPlain("unix_sockets", ["pair-dgram"], 0, (w) => {
    const fds = socketFds(w.pid);
    const diag = SockDiag.open();
    try {
      const queued = diag.unixSockets().filter((s) => fds.has(s.ino) && s.rqlen.rq > 0);
      assert.equal(queued.length, 2, "both ends of the pair hold data");
      stealByte(w.pid, fds.get(queued[0]!.ino)!);
    } finally {
      diag.close();
    }
  });
  assert.match(verdict, /^FAIL: pair-dgram: .*message 0 is 1 bytes, expected 100/);
});

Deno.test("unix_sockets refuses an unknown mode", async () => {
  const dir = tempDir();
  try {
    await assert.rejects(
      () => Workload.start("unix_sockets", ["no-such-mode"], { dir }),
      /unknown mode no-such-mode/,
    );
  } finally {
    reapZombies();
    Deno.removeSync(dir, { recursive: true });
  }
});

for (const mode of INET_MODES) {
  Deno.test(`inet_sockets ${mode} passes plain`, async () => {
    assert.equal(await runPlain("inet_sockets", [mode]), "PASS");
  });
}

Deno.test("inet_sockets with every mode at once passes plain", async () => {
  assert.equal(await runPlain("inet_sockets", []), "PASS");
});

Deno.test("tcp_established passes plain over IPv4", async () => {
  assert.equal(await runPlain("tcp_established", [], 300), "PASS");
});

Deno.test("tcp_established passes plain over IPv6", async () => {
  assert.equal(await runPlain("tcp_established", ["v6"], 300), "PASS");
});

Deno.test("tcp_established fails when a byte of the stream goes missing", async () => {
  const verdict = await runPlain("tcp_established", [], 100, (w) => {
    const fds = socketFds(w.pid);
    const diag = SockDiag.open();
    try {
      const conn = diag.inetSockets(AF.INET, IPPROTO.TCP).find((s) => fds.has(s.ino) && s.state === 1);
      assert.ok(conn, "the server's end of the connection is found");
      stealByte(w.pid, fds.get(conn.ino)!);
    } finally {
      diag.close();
    }
  });
  assert.match(verdict, /^FAIL: .*(byte \d+ received is|received \d+ bytes)/);
});

/** The socket fds of a workload's whole tree that sock_diag does not list, as "pid/fd". */
async function unlistedSockets(name: string, args: string[]): Promise<string[]> {
  const w = await Workload.start(name, args);
  try {
    const table = collectSockets(w.pid);
    const missing: string[] = [];
    let seen = 0;
    for (const pid of [w.pid, ...descendants(w.pid)]) {
      for (const [ino, fd] of socketFds(pid)) {
        seen++;
        if (!table.get(ino)) missing.push(`${pid === w.pid ? "root" : "child"}/${fd}`);
      }
    }
    assert.ok(seen > 0, `${name} has socket fds`);
    assert.equal(await w.finish(), "PASS");
    return missing;
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
  }
}

Deno.test("collectSockets() lists every socket of the unix and TCP workloads, children's included", async () => {
  assert.deepEqual(await unlistedSockets("unix_sockets", []), []);
  assert.deepEqual(await unlistedSockets("tcp_established", []), []);
});

Deno.test("collectSockets() lists every inet socket but the unbound ones, which the kernel does not hash", async () => {
  const bound = INET_MODES.filter((m) => m !== "unbound");
  assert.deepEqual(await unlistedSockets("inet_sockets", bound), []);
  // inet_sockets unbound makes an unbound TCP socket (fd 3) and an unbound UDP socket (fd 4).
  assert.deepEqual(await unlistedSockets("inet_sockets", ["unbound"]), ["root/3", "root/4"]);
});

/**
 * What a dump reads of every socket of a workload's tree, through copies of its fds: the options
 * and, for unix sockets, the queue in place. Returns how many sockets and queued messages it saw.
 */
function readLikeADump(root: number): { sockets: number; messages: number; options: Map<number, unknown> } {
  let sockets = 0;
  let messages = 0;
  const options = new Map<number, unknown>();
  for (const pid of [root, ...descendants(root)]) {
    for (const [ino, fd] of socketFds(pid)) {
      const copy = copyFdOf(pid, fd);
      try {
        const { family } = socketKind(copy);
        options.set(ino, readSocketOptions(copy, family));
        if (family === AF.UNIX) {
          for (const m of peekQueue(copy)) {
            messages++;
            m.fds.forEach((f) => libc.close(f));
          }
        }
        sockets++;
      } finally {
        closeSocket(copy);
      }
    }
  }
  return { sockets, messages, options };
}

Deno.test("reading every socket of the workloads the way a dump does leaves them passing", async () => {
  for (const [name, args] of [["unix_sockets", []], ["inet_sockets", []]] as const) {
    let seen = { sockets: 0, messages: 0 };
    const verdict = await runPlain(name, [...args], 0, (w) => {
      seen = readLikeADump(w.pid);
      seen = readLikeADump(w.pid); // twice: the first reading must have left everything as it was
    });
    assert.equal(verdict, "PASS", `${name} after its sockets were read`);
    assert.ok(seen.sockets > 10, `${name}: ${seen.sockets} sockets read`);
    if (name === "unix_sockets") assert.ok(seen.messages > 20, `${seen.messages} queued messages read`);
  }
});
