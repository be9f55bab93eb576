/**
 * runc driving a criu, for tests/runc_test.ts and the bench: an OCI bundle in a temp dir with a
 * busybox-static root file system, `runc spec` edited so that the container counts into a file on
 * a bind mount from the host (optionally with a tmpfs it checks, or a TCP server behind a veth);
 * `runc run -d`, `runc checkpoint`, `runc restore -d` with `--criu` naming the criu to use; and
 * the removal of everything a container leaves (the container, its mounts and cgroups).
 */
import assert from "node:assert/strict";

export const RUNC = "/usr/sbin/runc";
export const BUSYBOX = "/bin/busybox";

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The container's program: counts into /data/count; with a tmpfs, checks its note every step. */
const COUNTER = "i=0; while true; do i=$((i+1)); echo $i >> /data/count; " +
  '[ -e /scratch ] && { [ "$(cat /scratch/note)" = "$SCRATCH" ] || echo LOST >> /data/count; }; ' +
  "sleep 0.1; done";

/**
 * The container's program in a user namespace of its own: counts as COUNTER does, and each step
 * writes who it is (its uid and /proc/self/uid_map, as it sees them) to /data/whoami (renamed into
 * place, so that a reader never finds it half written); should that ever differ from what it was at
 * its start, it writes CHANGED into the count. Its tmpfs /scratch holds a note of its root's and
 * one it gave to its uid and gid 1000: should either lose its contents or owner, LOST.
 */
const USERNS_COUNTER = 'echo "$SCRATCH" > /scratch/note; echo 1000 > /scratch/user; ' +
  "chown 1000:1000 /scratch/user; " +
  'me="$(id -u) $(cat /proc/self/uid_map)"; i=0; while true; do i=$((i+1)); ' +
  'echo $i >> /data/count; now="$(id -u) $(cat /proc/self/uid_map)"; ' +
  '[ "$now" = "$me" ] || echo CHANGED >> /data/count; echo "$now" > /data/whoami.new; ' +
  "mv /data/whoami.new /data/whoami; " +
  '[ "$(cat /scratch/note) $(stat -c %u:%g /scratch/note) $(cat /scratch/user) $(stat -c %u:%g /scratch/user)" = ' +
  '"$SCRATCH 0:0 1000 1000:1000" ] || echo LOST >> /data/count; sleep 0.1; done';

/** The ids a user-namespaced container's root has on the host (its uid and gid maps: 0 → this, 65536 ids). */
export const USERNS_HOST_ID = 100000;

export interface Container {
  id: string;
  dir: string;
  bundle: string;
  host: string;
  images: string;
  work: string;
}

export async function run(cmd: string, args: string[], cwd = "/"): Promise<{ ok: boolean; out: string }> {
  const got = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped", stdin: "null" })
    .output();
  const text = new TextDecoder().decode(got.stdout) + new TextDecoder().decode(got.stderr);
  return { ok: got.success, out: text.trim() };
}

/** Workload `name` of tests/workloads linked statically into `to` (a busybox root has no libc). */
export async function staticWorkload(name: string, to: string): Promise<void> {
  const src = new URL("../workloads/", import.meta.url).pathname;
  const out = await new Deno.Command("gcc", {
    args: ["-static", "-O1", "-Wall", "-Werror", "-o", to, `${src}${name}.c`, `${src}lib.c`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

/** A bundle in a temp dir: busybox-static installed into rootfs, `runc spec` edited for the test. */
export async function makeBundle(
  opts: { tmpfs?: boolean; veth?: string; terminal?: boolean; userns?: boolean } = {},
): Promise<Container> {
  const dir = Deno.makeTempDirSync({ prefix: "criu-runc-" });
  const id = `criu-ts-${dir.slice(dir.lastIndexOf("-") + 1)}`;
  const bundle = `${dir}/bundle`;
  const host = `${dir}/host`;
  Deno.mkdirSync(`${bundle}/rootfs/bin`, { recursive: true });
  Deno.mkdirSync(host);
  Deno.copyFileSync(BUSYBOX, `${bundle}/rootfs/bin/busybox`);
  Deno.chmodSync(`${bundle}/rootfs/bin/busybox`, 0o755);
  const install = await run("/usr/sbin/chroot", [
    `${bundle}/rootfs`,
    "/bin/busybox",
    "--install",
    "-s",
    "/bin",
  ]);
  assert.ok(install.ok, install.out);
  const spec = await run(RUNC, ["spec"], bundle);
  assert.ok(spec.ok, spec.out);
  const config = JSON.parse(Deno.readTextFileSync(`${bundle}/config.json`));
  config.process.terminal = false;
  config.process.args = ["/bin/sh", "-c", COUNTER];
  config.process.env.push("SCRATCH=kept in tmpfs");
  config.root.readonly = false;
  config.mounts.push({ destination: "/data", type: "bind", source: host, options: ["rbind", "rw"] });
  if (opts.tmpfs) {
    config.mounts.push({ destination: "/scratch", type: "tmpfs", source: "tmpfs", options: ["size=1m"] });
    config.process.args = ["/bin/sh", "-c", 'echo "$SCRATCH" > /scratch/note; ' + COUNTER];
  }
  if (opts.terminal) {
    // A shell on the container's terminal (runc's console: a pty whose slave is /dev/console too),
    // with the counter beside it.
    config.process.terminal = true;
    config.process.args = ["/bin/sh", "-c", `(${COUNTER}) & exec /bin/sh`];
  }
  if (opts.veth) {
    // A TCP server in the container's own network namespace, answering with the count so far.
    config.process.args = ["/bin/sh", "-c", "nc -ll -p 7000 -e /bin/tail -n1 /data/count & " + COUNTER];
    const hook = `${dir}/veth-hook.sh`;
    Deno.writeTextFileSync(hook, vethHook(opts.veth, `${dir}/veth-hook.log`));
    Deno.chmodSync(hook, 0o755);
    config.hooks = { createRuntime: [{ path: hook, args: ["veth-hook.sh"] }] };
  }
  if (opts.userns) await idMapped(config, dir, bundle, host);
  Deno.writeTextFileSync(`${bundle}/config.json`, JSON.stringify(config, null, 1));
  return { id, dir, bundle, host, images: `${dir}/images`, work: `${dir}/work` };
}

/**
 * An id-mapped container, as rootless runtimes run them: a user namespace of its own whose ids
 * 0..65535 are the host's USERNS_HOST_ID.. (runc 1.1 has no id-mapped mounts, so the root file
 * system and the host directory belong to those ids, and the temp dir above them may be crossed).
 */
async function idMapped(
  config: {
    process: { args: string[]; capabilities: Record<string, string[]> };
    mounts: unknown[];
    linux: Record<string, unknown> & { namespaces: unknown[] };
  },
  dir: string,
  bundle: string,
  host: string,
): Promise<void> {
  config.process.args = ["/bin/sh", "-c", USERNS_COUNTER];
  // runc spec's root keeps only CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE: chown needs its own.
  for (const set of ["bounding", "effective", "permitted"]) {
    config.process.capabilities[set]!.push("CAP_CHOWN");
  }
  config.mounts.push({ destination: "/scratch", type: "tmpfs", source: "tmpfs", options: ["size=1m"] });
  config.linux.namespaces.push({ type: "user" });
  const map = [{ containerID: 0, hostID: USERNS_HOST_ID, size: 65536 }];
  config.linux.uidMappings = map;
  config.linux.gidMappings = map;
  Deno.chmodSync(dir, 0o755);
  const owner = `${USERNS_HOST_ID}:${USERNS_HOST_ID}`;
  const chown = await run("/bin/chown", ["-R", "-h", owner, `${bundle}/rootfs`, host]);
  assert.ok(chown.ok, chown.out);
}

/**
 * The hook runc runs when it creates the container's namespaces, and again at the restore's
 * setup-namespaces (its createRuntime hooks): a veth pair from the container (eth0, 198.18.0.2) to
 * the client's namespace `clientNs` (198.18.0.1). runc always asks criu for an empty network
 * namespace (empty_ns CLONE_NEWNET: "runc doesn't manage network devices"), so at restore the hook
 * finds it new and empty and makes the pair again, before the sockets come back.
 */
function vethHook(clientNs: string, log: string): string {
  return `#!/bin/sh
set -e
pid=$(sed -n 's/.*"pid": *\\([0-9]*\\).*/\\1/p')
inside() { /usr/bin/nsenter -t "$pid" -n "$@"; }
if inside ip link show eth0 >/dev/null 2>&1; then echo "eth0 exists" >> ${log}; exit 1; fi
ip link add outside netns ${clientNs} type veth peer name eth0 netns "$pid"
inside ip addr add 198.18.0.2/24 dev eth0
inside ip link set eth0 up
inside ip link set lo up
ip -n ${clientNs} addr add 198.18.0.1/24 dev outside
ip -n ${clientNs} link set outside up
echo made >> ${log}
`;
}

/**
 * Starts runc detached with the container's stdio on pipes of ours, as runc's own tests do: a file
 * of the host (/dev/null, a log) is on a mount the container does not have, which no criu can
 * dump. runc's messages go to its --log file, since its stderr is the container's.
 */
export async function runcDetached(
  c: Container,
  criu: string,
  args: string[],
): Promise<{ ok: boolean; out: string }> {
  const log = `${c.dir}/runc.log`;
  const child = new Deno.Command(RUNC, {
    args: ["--log", log, "--criu", criu, ...args],
    cwd: c.bundle,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const status = await child.status;
  await child.stdin.close();
  await child.stdout.cancel();
  await child.stderr.cancel();
  let out = "";
  try {
    out = Deno.readTextFileSync(log);
  } catch {
    // no message
  }
  return { ok: status.success, out };
}

export function counts(c: Container): string[] {
  try {
    return Deno.readTextFileSync(`${c.host}/count`).trim().split("\n");
  } catch {
    return [];
  }
}

export async function countReaches(c: Container, n: number): Promise<void> {
  const deadline = performance.now() + 30_000;
  while (counts(c).length < n) {
    if (performance.now() > deadline) {
      assert.fail(`The container did not count to ${n}: ${counts(c).join(" ")}`);
    }
    await sleep(50);
  }
}

/** The log criu wrote for runc, for a failure message. */
export function criuLog(c: Container, name: string): string {
  try {
    return Deno.readTextFileSync(`${c.work}/${name}`).split("\n").filter((l) => /Error|Warn/.test(l)).join(
      "\n",
    );
  } catch {
    return `(no ${name})`;
  }
}

/** Runs `runc checkpoint` of `c` with `criu`; its outcome, for a checkpoint that may be refused. */
export async function tryCheckpoint(c: Container, criu: string, extra: string[] = []) {
  return await run(RUNC, [
    "--criu",
    criu,
    "checkpoint",
    "--image-path",
    c.images,
    "--work-path",
    c.work,
    ...extra,
    c.id,
  ], c.bundle);
}

export async function checkpoint(c: Container, criu: string, extra: string[] = []): Promise<void> {
  const got = await tryCheckpoint(c, criu, extra);
  assert.ok(got.ok, `runc checkpoint failed: ${got.out}\n${criuLog(c, "dump.log")}`);
}

export async function restore(c: Container, criu: string, extra: string[] = []): Promise<void> {
  const got = await runcDetached(c, criu, [
    "restore",
    "-d",
    ...extra,
    "--image-path",
    c.images,
    "--work-path",
    c.work,
    c.id,
  ]);
  assert.ok(got.ok, `runc restore failed: ${got.out}\n${criuLog(c, "restore.log")}`);
}

export async function state(c: Container): Promise<string> {
  const got = await run(RUNC, ["state", c.id]);
  return got.ok ? JSON.parse(got.out).status : "gone";
}

/**
 * The other end of `--console-socket` (tests/workloads/console_socket.c): takes the pty master
 * runc sends and relays it, the terminal's output appended to `out`, `type` writing to its input.
 */
export interface ConsoleSocket {
  path: string;
  out: string;
  type(text: string): Promise<void>;
  /** Waits until the terminal has said `pattern`; fails with what it said. */
  says(pattern: RegExp): Promise<void>;
  close(): Promise<void>;
}

export async function consoleSocket(c: Container, bin: string, name: string): Promise<ConsoleSocket> {
  const path = `${c.dir}/${name}.sock`;
  const out = `${c.dir}/${name}.out`;
  const child = new Deno.Command(bin, { args: [path, out], stdin: "piped", stdout: "null", stderr: "piped" })
    .spawn();
  const writer = child.stdin.getWriter();
  let closed = false;
  const said = () => {
    try {
      return Deno.readTextFileSync(out);
    } catch {
      return "";
    }
  };
  const deadline = performance.now() + 10_000;
  while (!exists(path)) {
    if (performance.now() > deadline) assert.fail(`${bin} did not listen on ${path}`);
    await sleep(20);
  }
  return {
    path,
    out,
    type: (text) => writer.write(new TextEncoder().encode(text)),
    async says(pattern) {
      const until = performance.now() + 30_000;
      while (!pattern.test(said())) {
        if (performance.now() > until) {
          assert.fail(`The console did not say ${pattern}: ${JSON.stringify(said())}`);
        }
        await sleep(50);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await writer.close().catch(() => {});
      try {
        child.kill("SIGTERM");
      } catch {
        // gone already: the terminal hung up
      }
      await child.status;
      await child.stderr.cancel();
    },
  };
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Removes the container (any state), its temp dir, and checks nothing of it is left. */
export async function cleanUp(c: Container): Promise<void> {
  await run(RUNC, ["kill", c.id, "KILL"]);
  const deadline = performance.now() + 10_000;
  while ((await state(c)) === "running" && performance.now() < deadline) await sleep(50);
  await run(RUNC, ["delete", "-f", c.id]);
  Deno.removeSync(c.dir, { recursive: true });
  const mounts = Deno.readTextFileSync("/proc/self/mountinfo").split("\n").filter((l) => l.includes(c.dir));
  assert.deepEqual(mounts, [], "mounts left behind");
  const cgroups = [...Deno.readDirSync("/sys/fs/cgroup")].filter((d) => {
    try {
      Deno.statSync(`/sys/fs/cgroup/${d.name}/${c.id}`);
      return true;
    } catch {
      return false;
    }
  });
  assert.deepEqual(cgroups, [], "cgroups left behind");
  assert.equal(await state(c), "gone");
}
