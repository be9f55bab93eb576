/**
 * A container-like tree, as a runtime leaves one: PID, mount (rooted at a bind mount of the root
 * filesystem, with its own proc; restored with --root), UTS, IPC, network (a veth leading out,
 * restored with --veth-pair) and cgroup namespaces, in a cgroup of its own that the restore makes.
 * (No user namespace: there, the kernel refuses the non-recursive bind of / (it would uncover the
 * locked mounts under it), and a recursive one would bring every mount of the machine into the
 * tree; userns_test.ts has a container-like tree with a user namespace and no mount namespace.)
 * Checks two promises of issue 20: the setup-namespaces and post-setup-namespaces scripts run with
 * every namespace in place (devices filled by the second, as in CRIU), and a restore that fails
 * late leaves no process, mount, namespace, device or cgroup behind.
 */
import assert from "node:assert/strict";
import { criu, criuOk, descendants, exists, killTree, reap, tempDir, waitFor } from "./lib/harness.ts";

const KINDS = ["pid", "mnt", "uts", "ipc", "net", "cgroup"] as const;
const INNER = "eth0";
const HOSTNAME = "ct-tree";
/** The cgroup v2 hierarchy (this machine mounts v1 ones beside it). */
const V2 = "/sys/fs/cgroup/unified";

function run(cmd: string, ...args: string[]): string {
  const out = new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" }).outputSync();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

/** What --root names at restore: a non-recursive bind mount of /, as the tree's own root is. */
const ROOTFS = tempDir();
run("mount", "--bind", "/", ROOTFS);
let unmounted = false;
globalThis.addEventListener("unload", () => {
  if (unmounted) return;
  unmounted = true;
  run("umount", ROOTFS);
  Deno.removeSync(ROOTFS);
});

/** The mounts a restore could leave in our namespace: under --root and criu-ts's scratch dirs. */
function ourMounts(): string[] {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n").filter((l) => {
    const mountpoint = l.split(" ")[4] ?? "";
    return mountpoint.startsWith(`${ROOTFS}/`) || /^\/tmp\/criu-ts-(mnt|tar|tmpfs)-/.test(mountpoint);
  });
}

function linkExists(name: string): boolean {
  return new Deno.Command("ip", { args: ["link", "show", "dev", name], stdout: "null", stderr: "null" })
    .outputSync().success;
}

function nsLinks(pid: number | "self"): Record<string, string> {
  return Object.fromEntries(KINDS.map((k) => [k, Deno.readLinkSync(`/proc/${pid}/ns/${k}`)]));
}

/** Every namespace link held by a task (as its namespace or an open fd) anywhere on the machine. */
function heldNamespaces(): Set<string> {
  const held = new Set<string>();
  for (const p of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(p.name)) continue;
    for (const dir of [`/proc/${p.name}/ns`, `/proc/${p.name}/fd`]) {
      try {
        for (const e of Deno.readDirSync(dir)) {
          try {
            const link = Deno.readLinkSync(`${dir}/${e.name}`);
            if (/^[a-z_]+:\[\d+\]$/.test(link)) held.add(link);
          } catch {
            // closed or gone meanwhile
          }
        }
      } catch {
        // the task ended, or hides its fds
      }
    }
  }
  return held;
}

let serial = 0;

interface Tree {
  dir: string;
  outer: string;
  cgroup: string;
  launcher: Deno.ChildProcess;
  init: number;
}

/**
 * Starts the tree: a launcher joins a new cgroup and unshares the namespaces; its child, the
 * tree's init (PID 1 inside), pivots into a bind mount of / with proc on it, names its host, closes
 * its stdio (the host's /dev is not in its view) and runs as sleep with a sleeping child. The test
 * then leads a veth out of it, its inner end with an address and up.
 */
async function startTree(): Promise<Tree> {
  const n = serial++;
  const dir = tempDir();
  const outer = `ctstr${Deno.pid % 10000}x${n}`;
  const cgroup = `${V2}/criu-ts-ctree-${Deno.pid}-${n}`;
  Deno.mkdirSync(cgroup);
  const root = `${dir}/root`;
  Deno.mkdirSync(root);
  const inside = [
    "set -e",
    // Fds the test runner was started with (a runtime hands its containers none).
    'for fd in /proc/self/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-" || true; done',
    `mount --bind / ${root}`,
    `mount -t proc proc ${root}/proc`,
    `cd ${root}`,
    "pivot_root . .",
    "umount -l .",
    "cd /",
    `hostname ${HOSTNAME}`,
    "exec 0<&- 1>&- 2>&-",
    // bash, not dash: dash opens /dev/null for a background command, and there is none in this view.
    "sleep 600 0<&- &",
    "exec sleep 601",
  ].join("\n");
  const launcher = new Deno.Command("setsid", {
    args: [
      "sh",
      "-c",
      `echo $$ > ${cgroup}/cgroup.procs && exec unshare --mount --propagation private --uts --ipc --net ` +
      `--pid --cgroup --fork bash -c '${inside}'`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const tree: Tree = { dir, outer, cgroup, launcher, init: 0 };
  try {
    await waitFor("the tree's init and its child", () => {
      const init = descendants(launcher.pid)[0];
      if (!init) return false;
      const kids = descendants(init);
      const comm = (pid: number) => {
        try {
          return Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
        } catch {
          return "";
        }
      };
      if (kids.length !== 1 || comm(init) !== "sleep" || comm(kids[0]!) !== "sleep") return false;
      tree.init = init;
      return true;
    });
    run("ip", "link", "add", outer, "type", "veth", "peer", "name", INNER, "netns", `${tree.init}`);
    const inNet = (...args: string[]) => run("nsenter", "-t", `${tree.init}`, "-n", "ip", ...args);
    inNet("addr", "add", "198.18.77.2/24", "dev", INNER);
    inNet("link", "set", "dev", INNER, "up");
    inNet("link", "set", "dev", "lo", "up");
  } catch (e) {
    await stopTree(tree);
    throw e;
  }
  return tree;
}

/** Dumps the tree; it ends, its veth and its cgroup go, so that the restore makes them again. */
async function dumpTree(t: Tree): Promise<void> {
  const tasks = [t.init, ...descendants(t.init)];
  await criuOk(["dump", "-t", `${t.init}`, "-D", t.dir, "-j", "-o", "dump.log", "-v4"]);
  for (const pid of tasks) await reap(pid);
  await t.launcher.status;
  await waitFor(`${t.outer} to go with its namespace`, () => !linkExists(t.outer), 20000);
  Deno.removeSync(t.cgroup);
}

function restoreArgs(t: Tree, script: string, pidfile = `${t.dir}/restored.pid`): string[] {
  return [
    "restore",
    "-D",
    t.dir,
    "-d",
    "-j",
    "--root",
    ROOTFS,
    "--veth-pair",
    `${INNER}=${t.outer}`,
    "--pidfile",
    pidfile,
    "--action-script",
    script,
    "-o",
    "restore.log",
    "-v4",
  ];
}

async function stopTree(t: Tree): Promise<void> {
  if (t.init) await killTree(t.init);
  try {
    t.launcher.kill("SIGKILL");
  } catch {
    // ended with its tree
  }
  await t.launcher.status;
  if (exists(`${t.dir}/restored.pid`)) {
    const restored = Number(Deno.readTextFileSync(`${t.dir}/restored.pid`).trim());
    if (restored > 0 && exists(`/proc/${restored}`)) await killTree(restored);
  }
  await waitFor(`${t.outer} to go`, () => !linkExists(t.outer), 20000);
  if (exists(t.cgroup)) {
    await waitFor(`${t.cgroup} to empty`, () => {
      try {
        Deno.removeSync(t.cgroup);
        return true;
      } catch {
        return false;
      }
    });
  }
  Deno.removeSync(t.dir, { recursive: true });
}

/**
 * An action script that, at setup-namespaces and post-setup-namespaces, records into DIR/HOOK.*
 * the root's namespace links, mounts, PID inside, cgroup, network devices and host name, and that
 * exits 1 at `failAt`.
 */
function writeRecorder(dir: string, failAt = ""): string {
  const script = `${dir}/record.sh`;
  Deno.writeTextFileSync(
    script,
    `#!/bin/sh
pid=$CRTOOLS_INIT_PID
case "$CRTOOLS_SCRIPT_ACTION" in
setup-namespaces|post-setup-namespaces)
  out=${dir}/$CRTOOLS_SCRIPT_ACTION
  for ns in ${KINDS.join(" ")}; do echo "$ns $(readlink /proc/$pid/ns/$ns)"; done > $out.ns
  echo $pid > $out.pid
  cat /proc/$pid/mountinfo > $out.mounts
  grep '^NSpid:' /proc/$pid/status > $out.nspid
  cat /proc/$pid/cgroup > $out.cgroup
  nsenter -t $pid -n ip -o link > $out.links
  nsenter -t $pid -u hostname > $out.hostname
  ;;
esac
[ "$CRTOOLS_SCRIPT_ACTION" != "${failAt}" ]
`,
  );
  Deno.chmodSync(script, 0o755);
  return script;
}

function recorded(dir: string, hook: string, what: string): string {
  const path = `${dir}/${hook}.${what}`;
  assert.ok(exists(path), `the ${hook} script recorded no ${what}`);
  return Deno.readTextFileSync(path);
}

function recordedNs(dir: string, hook: string): Record<string, string> {
  return Object.fromEntries(
    recorded(dir, hook, "ns").trim().split("\n").map((l) => l.split(" ") as [string, string]),
  );
}

const HOOKS = ["setup-namespaces", "post-setup-namespaces"] as const;

Deno.test("the setup-namespaces and post-setup-namespaces scripts of a container-like tree see every namespace in place, the devices filled by post-setup-namespaces", async () => {
  const t = await startTree();
  try {
    const criuNs = nsLinks("self");
    assert.ok(KINDS.every((k) => nsLinks(t.init)[k] !== criuNs[k]), "the tree does not have its namespaces");
    await dumpTree(t);
    const script = writeRecorder(t.dir);
    await criuOk(restoreArgs(t, script));
    t.init = Number(Deno.readTextFileSync(`${t.dir}/restored.pid`).trim());
    const restored = nsLinks(t.init);
    const cgroupLine = `0::/${t.cgroup.slice(V2.length + 1)}`;
    for (const hook of HOOKS) {
      const seen = recordedNs(t.dir, hook);
      for (const k of KINDS) {
        assert.notEqual(seen[k], criuNs[k], `at ${hook} the ${k} namespace is still criu's`);
        assert.equal(seen[k], restored[k], `at ${hook} the ${k} namespace is not the restored one`);
      }
      // The mount tree is built in the root before its memory: both hooks see it.
      const mountpoints = recorded(t.dir, hook, "mounts").trim().split("\n").map((l) => l.split(" ")[4]);
      assert.deepEqual(mountpoints.sort(), ["/", "/proc"], `at ${hook}`);
      assert.match(recorded(t.dir, hook, "nspid"), new RegExp(`^NSpid:\\s+${t.init}\\s+1\\n$`));
      const cgroups = recorded(t.dir, hook, "cgroup").split("\n");
      assert.ok(cgroups.includes(cgroupLine), `at ${hook} the root is not in ${cgroupLine}: ${cgroups}`);
    }
    // As in CRIU, the namespaces are filled between the two hooks.
    const links = recorded(t.dir, "post-setup-namespaces", "links");
    assert.match(links, new RegExp(`^\\d+: ${INNER}@`, "m"), links);
    assert.match(links, /^\d+: lo:/m, links);
    assert.equal(recorded(t.dir, "post-setup-namespaces", "hostname").trim(), HOSTNAME);
    assert.ok(linkExists(t.outer), `the outer end ${t.outer} was not made`);
    // And the tree goes on in them.
    assert.equal(descendants(t.init).length, 1);
    assert.equal(run("nsenter", "-t", `${t.init}`, "-u", "hostname").trim(), HOSTNAME);
    assert.match(
      run("nsenter", "-t", `${t.init}`, "-n", "ip", "-o", "addr", "show", "dev", INNER),
      /198\.18\.77\.2\/24/,
    );
  } finally {
    await stopTree(t);
  }
});

/**
 * Restores the dumped tree with a failure injected late (after post-setup-namespaces filled the
 * namespaces and post-restore ran) and checks that nothing of it is left.
 */
async function failedRestore(t: Tree, extra: { failAt?: string; pidfile?: string }, error: RegExp) {
  // What an earlier restore recorded must not pass for this one's.
  for (const e of Deno.readDirSync(t.dir)) {
    if (HOOKS.some((hook) => e.name.startsWith(`${hook}.`))) Deno.removeSync(`${t.dir}/${e.name}`);
  }
  const mountsBefore = ourMounts();
  const r = await criu(restoreArgs(t, writeRecorder(t.dir, extra.failAt), extra.pidfile));
  assert.equal(r.code, 1, `the restore should fail: ${r.stderr}`);
  assert.match(r.stderr, error);
  // The tree was made, in its cgroup, with its namespaces filled, before the failure.
  const made = recordedNs(t.dir, "post-setup-namespaces");
  assert.match(recorded(t.dir, "post-setup-namespaces", "links"), new RegExp(`^\\d+: ${INNER}@`, "m"));
  const cgroupLine = `0::/${t.cgroup.slice(V2.length + 1)}`;
  assert.ok(recorded(t.dir, "post-setup-namespaces", "cgroup").split("\n").includes(cgroupLine));
  const root = Number(recorded(t.dir, "post-setup-namespaces", "pid").trim());
  // No process of the tree (the root, criu's child, was killed and reaped), and no task or fd
  // anywhere holds one of the namespaces it was given.
  await waitFor(`the root ${root} to go`, () => !exists(`/proc/${root}`));
  await waitFor("the restored namespaces to be let go", () => {
    const held = heldNamespaces();
    return KINDS.every((k) => !held.has(made[k]!));
  }, 20000);
  assert.deepEqual(ourMounts(), mountsBefore, "a mount was left in criu's namespace");
  await waitFor(`${t.outer} to go`, () => !linkExists(t.outer), 20000);
  assert.ok(!exists(t.cgroup), `the cgroup ${t.cgroup} the restore made is still there`);
}

Deno.test("a restore of a container-like tree failing late (a post-restore script, the pidfile) leaves no process, mount, namespace, device or cgroup", async () => {
  const t = await startTree();
  try {
    await dumpTree(t);
    await failedRestore(t, { failAt: "post-restore" }, /at the post-restore hook/);
    assert.ok(!exists(`${t.dir}/restored.pid`), "a pidfile was written for a failed restore");
    await failedRestore(
      t,
      { pidfile: `${t.dir}/no-such-dir/pid` },
      /Cannot write the pidfile .*no-such-dir\/pid/,
    );
    // Nothing is in the way: the same images restore.
    await criuOk(restoreArgs(t, writeRecorder(t.dir)));
    t.init = Number(Deno.readTextFileSync(`${t.dir}/restored.pid`).trim());
    assert.equal(descendants(t.init).length, 1);
  } finally {
    await stopTree(t);
  }
});
