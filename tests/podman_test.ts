/**
 * Podman 4.3 (Debian's) with criu-ts as its criu: `podman container checkpoint` and `restore` of a
 * busybox container run by runc, Podman finding `criu` in PATH (a symlink to scripts/criu in the
 * test's temp dir). Podman asks criu's version over RPC (go-criu's VERSION request: it wants at
 * least 3.11), then runc drives `criu swrk` as in tests/runc_test.ts.
 *
 * No registry is reachable: the image is imported from a tarball of a busybox-static root. Podman
 * runs with storage of the test's own (vfs under a temp dir), the cgroupfs manager, the file
 * events logger and no network, so that nothing of the host's Podman is used or left behind.
 * Podman asks runc for RLIMIT_NOFILE and RLIMIT_NPROC of 1048576 by default, which runc cannot set
 * here (no CAP_SYS_RESOURCE, hard limits below that: "error setting rlimit type 7: operation not
 * permitted"), so the container gets lower ones with --ulimit.
 *
 * The container counts into a file on a bind mount from the host; after each restore the count
 * must go on exactly where it stopped, under the seccomp filter Podman gave it. Then what Podman
 * users do next: `--tcp-established` for a server in the host's network (`--network host`, the
 * only network a container gets here without a bridge of the host's: the test's own process is
 * the client, on 127.0.0.1), also with `--export`/`--import`; a container with a terminal
 * (`run -t`, whose pty runc hands criu as `orphan_pts_master`); `--leave-running --keep` and a
 * later `restore --keep` that rolls the container back to its checkpoint. Whether Podman can
 * start a container at all is probed first: the checkpoint test is skipped only when that probe
 * fails, and the probe's own test then fails with Podman's reason.
 */
import assert from "node:assert/strict";
import { BUSYBOX, run } from "./lib/runc.ts";
import { exists, sleep } from "./lib/harness.ts";
import { lockRules } from "./lib/netfilter.ts";
import { UPSTREAM } from "./lib/upstream.ts";

const PODMAN = "/usr/bin/podman";
const NSENTER = "/usr/bin/nsenter";
const CRIU = new URL("../scripts/criu", import.meta.url).pathname;
const IMAGE = "localhost/criu-ts-busybox:1";
const COUNTER = "i=0; while true; do i=$((i+1)); echo $i >> /data/count; echo $i; sleep 0.1; done";

/** A Podman of the test's own: storage, run and temp dirs, and a PATH whose `criu` is criu-ts. */
interface Store {
  dir: string;
  host: string;
  podman(args: string[]): Promise<{ ok: boolean; out: string }>;
}

/** Our hard limit of a resource (/proc/self/limits), which runc may give the container. */
function hardLimit(name: string): string {
  const line = Deno.readTextFileSync("/proc/self/limits").split("\n").find((l) => l.startsWith(name));
  assert.ok(line, `no ${name} in /proc/self/limits`);
  return line.slice(name.length).trim().split(/\s+/)[1]!;
}

/**
 * --ulimit flags below our hard limits (Podman's defaults are above them here): runc may always
 * lower a limit, never raise one past the hard limit it inherited.
 */
function ulimits(): string[] {
  const low = (name: string) => Math.min(1024, Number(hardLimit(name)));
  const [nofile, nproc] = [low("Max open files"), low("Max processes")];
  return ["--ulimit", `nofile=${nofile}:${nofile}`, "--ulimit", `nproc=${nproc}:${nproc}`];
}

/**
 * A Podman of the test's own (see Store), with criu `criu`; with `netns` (a name under /run/netns)
 * every podman command runs in that network namespace, and its networks are netavark's, configured
 * in the store.
 */
async function makeStore(criu = CRIU, netns?: string): Promise<Store> {
  const dir = Deno.makeTempDirSync({ prefix: "criu-podman-" });
  const host = `${dir}/host`;
  for (const d of ["bin", "host", "rootfs/bin", "tmp"]) Deno.mkdirSync(`${dir}/${d}`, { recursive: true });
  Deno.symlinkSync(criu, `${dir}/bin/criu`);
  const global = [
    "--root",
    `${dir}/root`,
    "--runroot",
    `${dir}/run`,
    "--tmpdir",
    `${dir}/tmp`,
    "--storage-driver",
    "vfs",
    "--cgroup-manager",
    "cgroupfs",
    "--events-backend",
    "file",
    "--runtime",
    "runc",
    "--network-config-dir",
    `${dir}/networks`,
    "--network-backend",
    "netavark",
  ];
  const inNetns = netns === undefined ? [] : [`--net=/run/netns/${netns}`, PODMAN];
  const podman = async (args: string[]) => {
    const got = await new Deno.Command(netns === undefined ? PODMAN : NSENTER, {
      args: [...inNetns, ...global, ...args],
      env: { PATH: `${dir}/bin:/usr/sbin:/usr/bin:/sbin:/bin` },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(got.stdout) + new TextDecoder().decode(got.stderr);
    return { ok: got.success, out: out.trim() };
  };
  Deno.copyFileSync(BUSYBOX, `${dir}/rootfs/bin/busybox`);
  Deno.chmodSync(`${dir}/rootfs/bin/busybox`, 0o755);
  const install = await run("/usr/sbin/chroot", [`${dir}/rootfs`, "/bin/busybox", "--install", "-s", "/bin"]);
  assert.ok(install.ok, install.out);
  const tar = await run("/bin/tar", ["-C", `${dir}/rootfs`, "-cf", `${dir}/busybox.tar`, "."]);
  assert.ok(tar.ok, tar.out);
  const imported = await podman(["import", `${dir}/busybox.tar`, IMAGE]);
  assert.ok(imported.ok, imported.out);
  return { dir, host, podman };
}

/** Removes every container and image of the store, then the store; checks no mount of it is left. */
async function removeStore(s: Store): Promise<void> {
  await s.podman(["rm", "-a", "-f"]);
  await s.podman(["rmi", "-a", "-f"]);
  const mounts = () =>
    Deno.readTextFileSync("/proc/self/mountinfo").split("\n").filter((l) => l.includes(s.dir));
  for (const line of mounts()) await run("/bin/umount", ["-l", line.split(" ")[4]!]);
  Deno.removeSync(s.dir, { recursive: true });
  assert.deepEqual(mounts(), [], "mounts left behind");
  // The cgroupfs manager's parent of every container's cgroup, with `conmon` (every conmon's):
  // empty once the containers are gone, and removed with them.
  const parents = [...Deno.readDirSync("/sys/fs/cgroup")]
    .map((h) => `/sys/fs/cgroup/${h.name}/libpod_parent`)
    .filter(exists);
  const left = parents.flatMap((p) =>
    [...Deno.readDirSync(p)].filter((e) => e.isDirectory && e.name !== "conmon").map((e) => `${p}/${e.name}`)
  );
  assert.deepEqual(left, [], "container cgroups left behind");
  for (const p of parents) {
    if (exists(`${p}/conmon`)) Deno.removeSync(`${p}/conmon`);
    Deno.removeSync(p);
  }
}

/** Can Podman start a container on this machine? Its answer, or why not. */
async function probe(): Promise<{ ok: true } | { ok: false; why: string }> {
  if (!exists(PODMAN)) return { ok: false, why: "podman is not installed (scripts/setup.sh installs it)" };
  const s = await makeStore();
  try {
    const got = await s.podman(["run", "--rm", "--network", "none", ...ulimits(), IMAGE, "/bin/true"]);
    return got.ok ? { ok: true } : { ok: false, why: `podman run failed: ${got.out}` };
  } finally {
    await removeStore(s);
  }
}

const probed = await probe();

Deno.test({
  name: "Podman starts a busybox container here (the probe the checkpoint test depends on)",
  ignore: !exists(PODMAN),
  fn: () => assert.ok(probed.ok, probed.ok ? "" : probed.why),
});

function counts(s: Store): string[] {
  try {
    return Deno.readTextFileSync(`${s.host}/count`).trim().split("\n");
  } catch {
    return [];
  }
}

async function countReaches(s: Store, n: number): Promise<void> {
  const deadline = performance.now() + 30_000;
  while (counts(s).length < n) {
    if (performance.now() > deadline) {
      assert.fail(`The container did not count to ${n}: ${counts(s).join(" ")}`);
    }
    await sleep(50);
  }
}

async function inspect(s: Store, name: string, format: string): Promise<string> {
  const got = await s.podman(["inspect", "--format", format, name]);
  assert.ok(got.ok, got.out);
  return got.out;
}

/** The seccomp mode of the container's process (2: filters), from its /proc status. */
async function seccompMode(s: Store, name: string): Promise<string> {
  const pid = await inspect(s, name, "{{.State.Pid}}");
  return /^Seccomp:\s+(\d+)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]!;
}

/** Runs the counter detached as container `name`, and waits until it has counted to 5. */
async function startCounter(s: Store, name: string): Promise<void> {
  const args = ["run", "-d", "--name", name, "--network", "none", ...ulimits(), "-v", `${s.host}:/data`];
  const started = await s.podman([...args, IMAGE, "/bin/sh", "-c", COUNTER]);
  assert.ok(started.ok, started.out);
  await countReaches(s, 5);
}

function assertUnbroken(s: Store): void {
  counts(s).forEach((line, i) => assert.equal(line, String(i + 1), `line ${i + 1} of the count`));
}

Deno.test({
  name: "podman container checkpoint and restore, twice: the container counts on exactly where it stopped",
  ignore: !probed.ok,
  fn: async () => {
    const s = await makeStore();
    const name = "counter";
    try {
      await startCounter(s, name);
      assert.equal(await seccompMode(s, name), "2", "Podman gives its containers a seccomp filter");
      for (let cycle = 0; cycle < 2; cycle++) {
        const dumped = await s.podman(["container", "checkpoint", name]);
        assert.ok(dumped.ok, dumped.out);
        assert.equal(await inspect(s, name, "{{.State.Status}}"), "exited");
        const atCheckpoint = counts(s).length;
        await sleep(300);
        assert.equal(counts(s).length, atCheckpoint, "the container counted on after its checkpoint");
        const restored = await s.podman(["container", "restore", name]);
        assert.ok(restored.ok, restored.out);
        assert.equal(await inspect(s, name, "{{.State.Status}}"), "running");
        await countReaches(s, atCheckpoint + 5);
        assertUnbroken(s);
        assert.equal(await seccompMode(s, name), "2", "the seccomp filter after the restore");
      }
      // The container's stdout (conmon's log) went on as well.
      const logs = await s.podman(["logs", name]);
      assert.deepEqual(logs.out.split("\n").slice(0, counts(s).length - 2), counts(s).slice(0, -2));
    } finally {
      await removeStore(s);
    }
  },
});

Deno.test({
  name:
    "podman container checkpoint --export, rm, restore --import: the container counts on exactly where it stopped",
  ignore: !probed.ok,
  fn: async () => {
    const s = await makeStore();
    const name = "migrant";
    try {
      await startCounter(s, name);
      const archive = `${s.dir}/checkpoint.tar.gz`;
      const dumped = await s.podman(["container", "checkpoint", "--export", archive, name]);
      assert.ok(dumped.ok, dumped.out);
      const atCheckpoint = counts(s).length;
      const removed = await s.podman(["rm", "-f", name]);
      assert.ok(removed.ok, removed.out);
      assert.equal((await s.podman(["ps", "-a", "-q"])).out, "", "the container is gone");
      const restored = await s.podman(["container", "restore", "--import", archive]);
      assert.ok(restored.ok, restored.out);
      assert.equal(await inspect(s, name, "{{.State.Status}}"), "running");
      await countReaches(s, atCheckpoint + 5);
      assertUnbroken(s);
    } finally {
      await removeStore(s);
    }
  },
});

/** A TCP port free on 127.0.0.1 now (the kernel's pick), for a server in the host's network. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * Whether some socket listens on `port` (/proc/net/tcp and tcp6) in the host's network, or in the
 * network namespace of process `pid`.
 */
function listening(port: number, pid?: string): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")} `;
  const net = pid === undefined ? "/proc/net" : `/proc/${pid}/net`;
  return [`${net}/tcp`, `${net}/tcp6`].some((f) =>
    Deno.readTextFileSync(f).split("\n").some((l) => {
      const fields = l.trim().split(/\s+/);
      return `${fields[1]} `.endsWith(hex) && fields[3] === "0A";
    })
  );
}

/**
 * Runs container `name` with network options `network`: a busybox nc that accepts one connection
 * on `port` and hands it to a shell numbering every line it reads ("N line"), so that an answer
 * shows the server's state (its count) went on. Waits until it listens, in its own network.
 */
async function runNumberingServer(s: Store, name: string, port: number, network: string[]): Promise<void> {
  const numbering = 'i=0; while read l; do i=$((i+1)); echo "$i $l"; done';
  const args = ["run", "-d", "--name", name, ...network, ...ulimits(), IMAGE];
  const server = ["/bin/nc", "-l", "-p", String(port), "-e", "/bin/sh", "-c", numbering];
  const started = await s.podman([...args, ...server]);
  assert.ok(started.ok, started.out);
  const pid = await inspect(s, name, "{{.State.Pid}}");
  const deadline = performance.now() + 30_000;
  while (!listening(port, pid)) {
    if (performance.now() > deadline) assert.fail(`The container's server never listened on port ${port}`);
    await sleep(50);
  }
}

/** The numbering server in the host's network, and a connection to it from the test's own process. */
async function startNumberingServer(s: Store, name: string, port: number): Promise<Deno.TcpConn> {
  await runNumberingServer(s, name, port, ["--network", "host"]);
  return await Deno.connect({ hostname: "127.0.0.1", port });
}

/** Reads one whole line from `conn` (without its newline), failing after `ms`. */
async function readLineOf(conn: Deno.TcpConn, ms = 60_000): Promise<string> {
  const buf = new Uint8Array(256);
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), ms));
  try {
    while (!text.includes("\n")) {
      const n = await Promise.race([conn.read(buf), timeout]);
      if (n === null) assert.fail(`The connection gave no whole line (${ms} ms or its end): "${text}"`);
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
  } finally {
    clearTimeout(timer);
  }
  return text.slice(0, text.indexOf("\n"));
}

async function ask(conn: Deno.TcpConn, line: string): Promise<string> {
  await conn.write(new TextEncoder().encode(`${line}\n`));
  return await readLineOf(conn);
}

/** The network lock's netfilter rules of the connection to `port`. */
function lockOf(port: number): string[] {
  return lockRules().filter((r) => r.includes(`--dport ${port} `) || r.includes(`--sport ${port} `));
}

async function tcpInPlace(criu: string): Promise<void> {
  const s = await makeStore(criu);
  const name = "server";
  const port = freePort();
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await startNumberingServer(s, name, port);
    assert.equal(await ask(conn, "hello"), "1 hello");
    // Without --tcp-established the dump is refused, and the container serves on as before.
    const refused = await s.podman(["container", "checkpoint", name]);
    assert.ok(!refused.ok, "a checkpoint of an established connection without --tcp-established");
    const log = `${await inspect(s, name, "{{.StaticDir}}")}/dump.log`;
    assert.match(Deno.readTextFileSync(log), /consider using --tcp-established/);
    assert.equal(await inspect(s, name, "{{.State.Status}}"), "running");
    assert.equal(await ask(conn, "still"), "2 still");

    const dumped = await s.podman(["container", "checkpoint", "--tcp-established", name]);
    assert.ok(dumped.ok, dumped.out);
    assert.equal(await inspect(s, name, "{{.State.Status}}"), "exited");
    assert.equal(lockOf(port).length, 2, `the connection is locked while checkpointed: ${lockRules()}`);
    // Sent while the server is checkpointed: netfilter drops it, the client's kernel sends it again.
    await conn.write(new TextEncoder().encode("meanwhile\n"));
    const restored = await s.podman(["container", "restore", "--tcp-established", name]);
    assert.ok(restored.ok, restored.out);
    assert.equal(await inspect(s, name, "{{.State.Status}}"), "running");
    assert.equal(await readLineOf(conn), "3 meanwhile");
    assert.equal(await ask(conn, "again"), "4 again");
    assert.deepEqual(lockOf(port), [], "the lock's rules after the restore");
  } finally {
    conn?.close();
    await removeStore(s);
  }
}

async function tcpExported(criu: string): Promise<void> {
  const s = await makeStore(criu);
  const name = "mover";
  const port = freePort();
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await startNumberingServer(s, name, port);
    assert.equal(await ask(conn, "hello"), "1 hello");
    const archive = `${s.dir}/checkpoint.tar.gz`;
    const dumped = await s.podman([
      "container",
      "checkpoint",
      "--export",
      archive,
      "--tcp-established",
      name,
    ]);
    assert.ok(dumped.ok, dumped.out);
    const removed = await s.podman(["rm", "-f", name]);
    assert.ok(removed.ok, removed.out);
    assert.equal(lockOf(port).length, 2, "the connection stays locked while its container is an archive");
    const restored = await s.podman(["container", "restore", "--import", archive, "--tcp-established"]);
    assert.ok(restored.ok, restored.out);
    assert.equal(await inspect(s, name, "{{.State.Status}}"), "running");
    assert.equal(await ask(conn, "moved"), "2 moved");
    assert.deepEqual(lockOf(port), [], "the lock's rules after the restore");
  } finally {
    conn?.close();
    await removeStore(s);
  }
}

/**
 * A client in network namespace `netns`: a busybox nc connected to `host`:`port`, a line in for
 * each line out.
 */
class NetnsClient {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #text = "";

  constructor(netns: string, host: string, port: number) {
    this.#child = new Deno.Command(NSENTER, {
      args: [`--net=/run/netns/${netns}`, BUSYBOX, "nc", host, String(port)],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reader = this.#child.stdout.getReader();
  }

  /** Sends `line`, and returns the next whole line the server answers, failing after `ms`. */
  async ask(line: string, ms = 60_000): Promise<string> {
    await this.#writer.write(new TextEncoder().encode(`${line}\n`));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), ms));
    try {
      while (!this.#text.includes("\n")) {
        const got = await Promise.race([this.#reader.read(), timeout]);
        if (got === null || got.done) {
          assert.fail(`The server gave no whole line (${ms} ms or the connection's end): "${this.#text}"`);
        }
        this.#text += new TextDecoder().decode(got.value);
      }
    } finally {
      clearTimeout(timer);
    }
    const answer = this.#text.slice(0, this.#text.indexOf("\n"));
    this.#text = this.#text.slice(answer.length + 1);
    return answer;
  }

  async close(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await this.#reader.cancel();
    await this.#writer.abort().catch(() => {});
    await this.#child.status;
  }
}

/** The network lock's rules in the network namespace of process `pid`: CRIU's chain or its mark. */
async function lockRulesIn(pid: string): Promise<string[]> {
  const rules: string[] = [];
  for (const tool of ["iptables-save", "ip6tables-save"]) {
    const got = await run(NSENTER, [`--net=/proc/${pid}/ns/net`, tool]);
    assert.ok(got.ok, got.out);
    rules.push(...got.out.split("\n").filter((l) => /0xc114|CRIU/i.test(l)));
  }
  return rules;
}

/** The subnet of the bridge network (in a network namespace of the test's own). */
const BRIDGE_NET = "198.18.7";

async function bridgeTcp(criu: string): Promise<void> {
  const netns = `criu-ts-podman-${crypto.randomUUID().slice(0, 8)}`;
  const added = await run("/usr/sbin/ip", ["netns", "add", netns]);
  assert.ok(added.ok, added.out);
  let s: Store | undefined;
  let client: NetnsClient | undefined;
  const name = "bridged";
  const port = 7000;
  try {
    const lo = await run("/usr/sbin/ip", ["-n", netns, "link", "set", "lo", "up"]);
    assert.ok(lo.ok, lo.out);
    s = await makeStore(criu, netns);
    const network = [
      "network",
      "create",
      "--subnet",
      `${BRIDGE_NET}.0/24`,
      "--disable-dns",
      "criu-ts-bridge",
    ];
    const created = await s.podman(network);
    assert.ok(created.ok, created.out);
    await runNumberingServer(s, name, port, ["--network", "criu-ts-bridge", "--ip", `${BRIDGE_NET}.10`]);
    client = new NetnsClient(netns, `${BRIDGE_NET}.10`, port);
    assert.equal(await client.ask("hello"), "1 hello");

    const dumped = await s.podman(["container", "checkpoint", "--tcp-established", name]);
    assert.ok(dumped.ok, dumped.out);
    assert.equal(await inspect(s, name, "{{.State.Status}}"), "exited");
    const restored = await s.podman(["container", "restore", "--tcp-established", name]);
    assert.ok(restored.ok, restored.out);
    assert.equal(await inspect(s, name, "{{.State.Status}}"), "running");
    const pid = await inspect(s, name, "{{.State.Pid}}");
    // In the namespace Podman made again for it (its address on the bridge), not an empty one.
    const addresses = await run(NSENTER, [`--net=/proc/${pid}/ns/net`, "/usr/sbin/ip", "-brief", "address"]);
    assert.match(addresses.out, new RegExp(`${BRIDGE_NET.replaceAll(".", "\\.")}\\.10/24`));
    assert.equal(await client.ask("again"), "2 again");
    assert.equal(await client.ask("and again"), "3 and again");
    assert.deepEqual(await lockRulesIn(pid), [], "the network lock in the container's namespace");
  } finally {
    await client?.close();
    if (s) await removeStore(s);
    const deleted = await run("/usr/sbin/ip", ["netns", "delete", netns]);
    assert.ok(deleted.ok, deleted.out);
  }
}

/** The numbers the container printed on its terminal so far (`podman logs`), in order. */
async function loggedNumbers(s: Store, name: string): Promise<number[]> {
  const logs = await s.podman(["logs", name]);
  assert.ok(logs.ok, logs.out);
  return logs.out.split(/\r?\n/).filter((l) => l.trim() !== "").map(Number);
}

async function logReaches(s: Store, name: string, n: number): Promise<number[]> {
  const deadline = performance.now() + 30_000;
  for (;;) {
    const numbers = await loggedNumbers(s, name);
    if (numbers.length >= n) return numbers;
    if (performance.now() > deadline) assert.fail(`The terminal did not count to ${n}: ${numbers.join(" ")}`);
    await sleep(100);
  }
}

/** The terminal of the container's process: its fd 1 and its controlling tty (stat's tty_nr). */
async function terminalOf(s: Store, name: string): Promise<{ stdout: string; ttyNr: string }> {
  const pid = await inspect(s, name, "{{.State.Pid}}");
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const ttyNr = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[4]!;
  return { stdout: Deno.readLinkSync(`/proc/${pid}/fd/1`), ttyNr };
}

async function consoleCycles(criu: string): Promise<void> {
  const s = await makeStore(criu);
  const name = "console";
  try {
    const counter = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done";
    const args = ["run", "-d", "-t", "--name", name, "--network", "none", ...ulimits(), IMAGE];
    const started = await s.podman([...args, "/bin/sh", "-c", counter]);
    assert.ok(started.ok, started.out);
    await logReaches(s, name, 5);
    const terminal = await terminalOf(s, name);
    assert.match(terminal.stdout, /^\/dev\/pts\/\d+$/, "the container's stdout is a pty");
    assert.notEqual(terminal.ttyNr, "0", "the pty is the shell's controlling terminal");
    for (let cycle = 0; cycle < 2; cycle++) {
      const dumped = await s.podman(["container", "checkpoint", name]);
      assert.ok(dumped.ok, dumped.out);
      assert.equal(await inspect(s, name, "{{.State.Status}}"), "exited");
      const atCheckpoint = (await loggedNumbers(s, name)).length;
      const restored = await s.podman(["container", "restore", name]);
      assert.ok(restored.ok, restored.out);
      assert.equal(await inspect(s, name, "{{.State.Status}}"), "running");
      const numbers = await logReaches(s, name, atCheckpoint + 5);
      numbers.forEach((n, i) => assert.equal(n, i + 1, `line ${i + 1} of the terminal's count`));
      assert.deepEqual(await terminalOf(s, name), terminal, "the terminal after the restore");
    }
  } finally {
    await removeStore(s);
  }
}

async function keptCheckpoint(criu: string): Promise<void> {
  const s = await makeStore(criu);
  const name = "keeper";
  try {
    await startCounter(s, name);
    const before = counts(s).length;
    const dumped = await s.podman(["container", "checkpoint", "--leave-running", "--keep", name]);
    assert.ok(dumped.ok, dumped.out);
    const after = counts(s).length;
    assert.equal(await inspect(s, name, "{{.State.Status}}"), "running");
    await countReaches(s, after + 5);
    assertUnbroken(s);
    const userdata = await inspect(s, name, "{{.StaticDir}}");
    assert.match(Deno.readTextFileSync(`${userdata}/dump.log`), /Dumping finished successfully/);
    assert.ok(exists(`${userdata}/checkpoint/inventory.img`), "the images are kept");

    const stopped = await s.podman(["stop", "-t", "1", name]);
    assert.ok(stopped.ok, stopped.out);
    const atStop = counts(s).length;
    const restored = await s.podman(["container", "restore", "--keep", name]);
    assert.ok(restored.ok, restored.out);
    assert.equal(await inspect(s, name, "{{.State.Status}}"), "running");
    await countReaches(s, atStop + 5);
    // Back at the checkpoint: the count goes on from where it was during the dump.
    const resumed = counts(s).slice(atStop).map(Number);
    assert.ok(
      resumed[0]! > before && resumed[0]! <= after + 1,
      `the count after the restore starts at ${resumed[0]}, not between ${before + 1} and ${after + 1}`,
    );
    resumed.forEach((n, i) => assert.equal(n, resumed[0]! + i, `line ${atStop + i + 1} of the count`));
    assert.match(Deno.readTextFileSync(`${userdata}/restore.log`), /Restore finished successfully/);
    assert.ok(exists(`${userdata}/checkpoint/inventory.img`), "the images are kept after restore --keep");
  } finally {
    await removeStore(s);
  }
}

/** Each scenario with criu-ts as Podman's criu, and with CRIU 4.x (CRIU_UPSTREAM) to compare. */
const scenarios: [string, (criu: string) => Promise<void>][] = [
  [
    "podman container checkpoint and restore --tcp-established on a bridge network (netavark, in a network namespace of the test's): the connection from outside the container carries data both ways",
    bridgeTcp,
  ],
  [
    "podman container checkpoint and restore --tcp-established: a connection from the host carries data both ways after the restore, the lock is gone",
    tcpInPlace,
  ],
  [
    "podman container checkpoint --export --tcp-established, rm, restore --import --tcp-established: the connection carries data both ways",
    tcpExported,
  ],
  [
    "podman run -t, checkpoint and restore, twice: the count on the container's terminal goes on",
    consoleCycles,
  ],
  [
    "podman container checkpoint --leave-running --keep, stop, restore --keep: the container runs on, then comes back to its checkpoint",
    keptCheckpoint,
  ],
];
for (const [name, scenario] of scenarios) {
  Deno.test({ name, ignore: !probed.ok, fn: () => scenario(CRIU) });
  Deno.test({
    name: `${name} (CRIU 4.x as Podman's criu)`,
    ignore: !probed.ok || UPSTREAM === undefined,
    fn: () => scenario(UPSTREAM!),
  });
}
