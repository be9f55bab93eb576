/**
 * IPv4/IPv6 TCP and UDP sockets: listeners (they accept after a restore), bound and unbound
 * sockets, UDP bound and connected, v6only and v4-mapped, their options (inet_sk in the matrix);
 * what Debian's crit reads of the images; established and half-closed connections refused by name
 * without --tcp-established; half-closed and closing connections (tcp_halfclosed: FIN_WAIT2 and
 * CLOSE_WAIT, then crossed FINs in CLOSING and FIN_WAIT1) with it, also across CRIU 4.x.
 */
import assert from "node:assert/strict";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import {
  criu,
  criuOk,
  exists,
  killTree,
  reap,
  sleep,
  tempDir,
  waitFor,
  Workload,
  workloadBin,
} from "./lib/harness.ts";
import { refusedDump, registerMatrix, withWorkload } from "./lib/matrix.ts";
import {
  type Dump,
  ourDump,
  ourRestore,
  registerCross,
  type Restore,
  UPSTREAM,
  upstreamDump,
  upstreamRestore,
} from "./lib/upstream.ts";
import { lockRules } from "./lib/netfilter.ts";
import { critDecode } from "./lib/tools.ts";

registerMatrix([
  { name: "inet_sk" },
  // Both ends of a busy connection (and the listener that accepted one) in one process.
  { name: "tcp_stream", args: ["pair"], criuArgs: ["--tcp-established"], settleMs: 300 },
  // Half-closed connections (FIN_WAIT2 and CLOSE_WAIT ends, IPv4 and IPv6): the FINs come back.
  { name: "tcp_halfclosed", criuArgs: ["--tcp-established"] },
  // The segments that replay the FINs carry the mark nft's lock lets through too.
  { name: "tcp_halfclosed", criuArgs: ["--tcp-established", "--network-lock", "nftables"] },
]);

// Across the tools (CRIU_UPSTREAM): CRIU's libsoccr replays the same FINs from the same images.
const noLockLeft = () => assert.deepEqual(lockRules(), [], "a network lock was left behind");
registerCross([{ name: "tcp_halfclosed", criuArgs: ["--tcp-established"], after: noLockLeft }]);

Deno.test("a half-closed TCP connection is refused by name without --tcp-established", () =>
  refusedDump(
    "tcp_halfclosed",
    [],
    /Cannot dump fd \d+ \(TCP socket\) of process \d+: connected TCP socket, consider using --tcp-established option/,
  ));

Deno.test("crit decodes half-closed connections: their states, and queues without the FIN", async () => {
  await withWorkload({ name: "tcp_halfclosed" }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", "--tcp-established"]);
    const sockets = critDecode(`${images}/files.img`).entries.filter((f) => f["type"] === "INETSK").map((f) =>
      f["isk"] as Record<string, unknown>
    );
    // FIN_WAIT2 is 5, CLOSE_WAIT 8: a client and a server of each family.
    const states = sockets.map((s) => `${s["family"]}:${s["state"]}`).sort();
    assert.deepEqual(states, ["10:5", "10:8", "2:5", "2:8"], JSON.stringify(sockets));
    for (const s of sockets) {
      const stream = critDecode(`${images}/tcp-stream-${(s["ino"] as number).toString(16)}.img`).entries[0]!;
      // Each end holds "hello" or "world" unread; the client's FIN is in no length.
      assert.equal(stream["inq_len"], 5, JSON.stringify(stream));
      assert.equal(stream["outq_len"], 0, JSON.stringify(stream));
    }
  });
});

Deno.test("crit decodes the inet sockets of files.img", async () => {
  const w = await Workload.start("inet_sk");
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const files = critDecode(`${images}/files.img`).entries;
    const sockets = files.filter((f) => f["type"] === "INETSK").map((f) =>
      f["isk"] as Record<string, unknown>
    );
    assert.equal(sockets.length, 9, JSON.stringify(files));
    // crit shows the numbers: state 10 is LISTEN, 1 ESTABLISHED; family 10 is AF_INET6; an address
    // is its words as the kernel keeps them (127.0.0.1 is 0x0100007f).
    const listeners = sockets.filter((s) => s["state"] === 10);
    assert.equal(listeners.length, 4);
    assert.ok(listeners.some((s) => s["backlog"] === 7 && JSON.stringify(s["src_addr"]) === "[16777343]"));
    assert.ok(sockets.some((s) => s["family"] === 10 && s["v6only"] === true));
    const mapped = [0, 0, 0xffff0000, 0x0100007f];
    assert.ok(sockets.some((s) => JSON.stringify(s["dst_addr"]) === JSON.stringify(mapped)));
    const udp = sockets.filter((s) => s["proto"] === 17);
    assert.equal(udp.length, 3);
    assert.equal(udp.filter((s) => s["state"] === 1).length, 2);
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("an established TCP connection is refused by name without --tcp-established", async () => {
  const w = await Workload.start("tcp_stream", ["pair"]);
  const images = tempDir();
  try {
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images]);
    assert.notEqual(r.code, 0);
    assert.deepEqual(lockRules(), []);
    assert.match(
      r.stderr,
      /Cannot dump fd \d+ \(TCP socket\) of process \d+: connected TCP socket, consider using --tcp-established option/,
    );
    assert.ok(exists(`/proc/${w.pid}`));
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

/** A server and a client in two trees; one of them is dumped and restored, the other checks. */
async function oneSideDumped(dumped: "server" | "client", lock: "iptables" | "nftables"): Promise<void> {
  const before = lockRules();
  assert.deepEqual(before, [], "netfilter holds network-lock rules before the test");
  const serverDir = tempDir();
  const starting = Workload.start("tcp_stream", ["server"], { dir: serverDir });
  const portFile = `${serverDir}/tcp_stream.result.port`;
  await waitFor(
    "the server's port",
    () => exists(portFile) && Deno.readTextFileSync(portFile).endsWith("\n"),
  );
  const client = await Workload.start("tcp_stream", ["client", Deno.readTextFileSync(portFile).trim()]);
  const server = await starting;
  const images = tempDir();
  const target = dumped === "server" ? server : client;
  const opts = ["--tcp-established", "--network-lock", lock];
  try {
    await sleep(300);
    await criuOk(["dump", "-t", `${target.pid}`, "-D", images, "-o", "dump.log", "-v4", ...opts]);
    await reap(target.pid);
    // The peer keeps sending meanwhile: only the lock keeps its packets from being answered with a reset.
    assert.equal(lockRules().length > 0, true, "nothing is locked after the dump");
    await sleep(1000);
    await criuOk(["restore", "-D", images, "-d", "-o", "restore.log", "-v4", ...opts]);
    assert.deepEqual(lockRules(), [], "the restore left network-lock rules behind");
    await sleep(500);
    // Both are told to stop first: each reads the other's stream to its end.
    // The restored one is no child of ours any more: it may be gone once it wrote its result.
    Deno.kill(server.pid, "SIGTERM");
    Deno.kill(client.pid, "SIGTERM");
    const peer = dumped === "server" ? client : server;
    assert.equal(await peer.finish(), "PASS", peer.output());
    await waitFor(
      "the restored end's result",
      () => exists(target.result) && Deno.readTextFileSync(target.result).endsWith("\n"),
    );
    assert.equal(Deno.readTextFileSync(target.result).trim(), "PASS", target.output());
    await reap(target.pid);
  } catch (e) {
    await server.kill();
    await client.kill();
    throw e;
  } finally {
    server.cleanup();
    client.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
  assert.deepEqual(lockRules(), []);
}

Deno.test("the peer of a dumped and restored server sees every byte, without a reset (iptables)", () =>
  oneSideDumped("server", "iptables"));

Deno.test("the peer of a dumped and restored client sees every byte, without a reset (nftables)", () =>
  oneSideDumped("client", "nftables"));

Deno.test("a --leave-running dump of a connection leaves no network lock behind", async () => {
  const w = await Workload.start("tcp_stream", ["pair"]);
  const images = tempDir();
  try {
    await sleep(200);
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", "--tcp-established"]);
    assert.ok(exists(`${images}/files.img`));
    assert.deepEqual(lockRules(), []);
    await sleep(300);
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("--tcp-close dumps connections without locking them and restores them closed", async () => {
  const w = await Workload.start("tcp_stream", ["pair"]);
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "--tcp-close"]);
    assert.deepEqual([...Deno.readDirSync(images)].filter((e) => e.name.startsWith("tcp-stream")), []);
    assert.deepEqual(lockRules(), []);
    await reap(w.pid);
    const refused = await criu(["restore", "-D", images, "-d"]);
    assert.notEqual(refused.code, 0);
    assert.match(
      refused.stderr,
      /established TCP connection .* restore with --tcp-established \(or --tcp-close\)/,
    );
    await criuOk(["restore", "-D", images, "-d", "--tcp-close"]);
    const sockets = [...Deno.readDirSync(`/proc/${w.pid}/fd`)].filter((e) =>
      Deno.readLinkSync(`/proc/${w.pid}/fd/${e.name}`).startsWith("socket:")
    );
    assert.equal(sockets.length, 3);
    // Its connections are closed: the workload reports the first failure it meets, a send that
    // breaks the pipe or a receive on an end no longer connected, whichever end runs first.
    assert.match(await w.finish(), /^FAIL: .*(Broken pipe|Transport endpoint is not connected)/);
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

/**
 * The closing states that do not last on loopback unless packets are lost: with what the client
 * sends dropped, its FIN and the server's cross, leaving CLOSING and FIN_WAIT1. Dumped so, restored
 * (the drop rule gone, only the lock in between); the retransmissions must then close both ends.
 */
function crossedFins(mode: "closing" | "last-ack", dump: Dump, restore: Restore) {
  return async () => {
    const rule = (port: number) => ["INPUT", "-i", "lo", "-p", "tcp", "--dport", `${port}`, "-j", "DROP"];
    const iptables = (args: string[]) => {
      const out = new Deno.Command("iptables", { args: ["-w", ...args], stderr: "piped" }).outputSync();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
    };
    // Workload.start returns once the workload is ready, which it is only after the go file: the
    // port file is answered meanwhile.
    const dir = tempDir();
    const result = `${dir}/tcp_halfclosed.result`;
    const started = Workload.start("tcp_halfclosed", [mode], { dir });
    let port = 0;
    try {
      await waitFor(
        "the port file",
        () => exists(`${result}.port`) && Deno.readTextFileSync(`${result}.port`).endsWith("\n"),
      );
      port = Number(Deno.readTextFileSync(`${result}.port`).trim());
      iptables(["-I", ...rule(port)]);
      Deno.writeTextFileSync(`${result}.go`, "");
    } finally {
      // A workload that failed its setup leaves no rule behind either.
      await started.catch((e) => {
        if (port) iptables(["-D", ...rule(port)]);
        throw e;
      });
    }
    const w = await started;
    const images = tempDir();
    try {
      await dump(w.pid, images);
      await reap(w.pid);
      iptables(["-D", ...rule(port)]);
      port = 0;
      await restore(images);
      assert.equal(await w.finish(), "PASS", w.output());
      assert.deepEqual(lockRules(), [], "a network lock was left behind");
    } catch (e) {
      await w.kill();
      throw e;
    } finally {
      if (port) iptables(["-D", ...rule(port)]);
      w.cleanup();
      Deno.removeSync(images, { recursive: true });
    }
  };
}

const established = ["--tcp-established"];
const crossedModes = [
  ["closing", "crossed FINs (CLOSING and FIN_WAIT1, unacknowledged)"],
  ["last-ack", "FINs sent both ways, unacknowledged (FIN_WAIT1 and LAST_ACK)"],
] as const;
for (const [mode, what] of crossedModes) {
  Deno.test(
    `${what} come back and close after restore`,
    crossedFins(mode, ourDump(established), ourRestore(established)),
  );
  Deno.test({
    name: `CRIU 4.x restores our dump of ${what}`,
    ignore: !UPSTREAM,
    fn: crossedFins(mode, ourDump(established), upstreamRestore(established)),
  });
  Deno.test({
    name: `we restore CRIU 4.x's dump of ${what}`,
    ignore: !UPSTREAM,
    fn: crossedFins(mode, upstreamDump(established), ourRestore(established)),
  });
}

// In a network namespace of the tree's own, the segment that replays a FIN must be sent there: the
// raw socket is made by the restored task, as its connections are.
Deno.test("half-closed connections of a tree in its own network namespace come back in the new one", async () => {
  const dir = tempDir();
  const result = `${dir}/tcp_halfclosed.result`;
  const log = openFd(`${dir}/log`, OPEN.WRONLY | OPEN.CREAT | OPEN.CLOEXEC);
  let pid = 0;
  try {
    // The shell execs the workload (same pid) once the namespace's loopback is up.
    const bin = await workloadBin("tcp_halfclosed");
    pid = spawn("/usr/bin/unshare", [
      "unshare",
      "-n",
      "/bin/sh",
      "-c",
      `ip link set lo up && exec ${bin} ${result}`,
    ], { fds: { 1: log, 2: log }, setsid: true });
    await waitFor("the workload", () => exists(`${result}.ready`) || exists(result));
    assert.ok(!exists(result), `the workload failed to set up: ${Deno.readTextFileSync(`${dir}/log`)}`);
    const opts = ["--tcp-established"];
    await criuOk(["dump", "-t", `${pid}`, "-D", dir, "-o", "dump.log", "-v4", ...opts]);
    assert.ok(
      [...Deno.readDirSync(dir)].some((e) => e.name.startsWith("netns-")),
      "no network namespace dumped",
    );
    await reap(pid);
    await criuOk(["restore", "-D", dir, "-d", "-o", "restore.log", "-v4", ...opts]);
    Deno.kill(pid, "SIGTERM");
    await waitFor("the result", () => exists(result) && Deno.readTextFileSync(result).endsWith("\n"), 30000);
    await reap(pid);
    assert.equal(Deno.readTextFileSync(result).trim(), "PASS");
  } finally {
    closeFd(log);
    await killTree(pid);
    Deno.removeSync(dir, { recursive: true });
  }
});
