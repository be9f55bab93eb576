/**
 * Mount, cgroup and user namespaces and cgroups across the two tools, with CRIU_UPSTREAM pointing
 * at a CRIU 4.x binary: each workload dumped by criu-ts and restored by CRIU, and dumped by CRIU
 * and restored by criu-ts, with the options it needs (--root for a mount namespace, the
 * --manage-cgroups modes); the restored workload checks its own state and passes. Where CRIU
 * cannot restore even its own dump of a case on this kernel, the test that needs it is ignored
 * and its name says why: each reason was seen with CRIU 4.2 dumping and restoring the workload.
 */
import { exists, tempDir } from "./lib/harness.ts";
import { type CrossCase, registerCross } from "./lib/upstream.ts";

function run(cmd: string, ...args: string[]): void {
  const out = new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).outputSync();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

// The restore's --root: a (non-recursive) bind mount of /, made here and removed at the end.
const ROOTFS = tempDir();
run("mount", "--bind", "/", ROOTFS);
let unmounted = false;
function dropRootfs(): void {
  if (unmounted) return;
  unmounted = true;
  run("umount", ROOTFS);
  Deno.removeSync(ROOTFS);
}
globalThis.addEventListener("unload", dropRootfs);

const V2 = "/sys/fs/cgroup/unified";
const V1 = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpu"];
let serial = 0;

/** Removes the cgroups a cgroup workload named `name` made (once its tasks are gone). */
async function removeCgroups(name: string): Promise<void> {
  const dirs = [
    `${V2}/${name}/inner`,
    `${V2}/${name}/other/deep`,
    `${V2}/${name}/other`,
    `${V2}/${name}`,
    ...V1.map((h) => `${h}/${name}`),
  ];
  for (const dir of dirs) {
    for (let i = 0; exists(dir); i++) {
      try {
        Deno.removeSync(dir);
      } catch (e) {
        if (i > 200) throw new Error(`Cannot remove the cgroup ${dir}: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
}

/**
 * The cgroup workload in cgroups named for this case alone (in a cgroup namespace of its own with
 * `ns`), restored with `criuArgs`; with `remove`, its cgroups are removed between dump and restore,
 * so that the restore makes them again with the saved properties.
 */
function cgroupCase(ns: boolean, criuArgs: string[], remove: boolean): CrossCase {
  const name = `criu-ts-cgx-${Deno.pid}-${++serial}`;
  return {
    name: "cgroup",
    args: [name, ...(ns ? ["ns"] : [])],
    title: [
      "cgroup",
      ...(ns ? ["in a cgroup namespace"] : []),
      ...criuArgs,
      ...(remove ? ["(cgroups removed after the dump)"] : []),
    ].join(" "),
    criuArgs,
    ...(remove ? { afterDump: () => removeCgroups(name) } : {}),
    cleanup: () => removeCgroups(name),
  };
}

/**
 * Why CRIU 4.2 cannot dump a workload that made its mount namespace without exec'ing itself in it:
 * the program's mapping is on the host's mount, outside the namespace.
 */
const EXE_OUTSIDE =
  "its program stays mapped from the host's mount, which is not in the namespace (\"Can't lookup mount\")";

/** Runs `ip` (or another tool) and fails with what it said. */
function tool(program: string, ...args: string[]): void {
  run(program, ...args);
}

function linkExists(name: string): boolean {
  return new Deno.Command("ip", { args: ["link", "show", "dev", name], stdout: "null", stderr: "null" })
    .outputSync().success;
}

/**
 * The netdev workload (a veth from its network namespace to ours, addresses, routes, a rule, an
 * iptables rule, sysctls): the outer end is given its addresses, as a runtime does, at start and
 * again after the restore, which names it with `outerOption`. Its subnets are netdev_test.ts's:
 * the two files must not run at the same time (two outer ends with 198.19.77.1 on the host).
 */
function netdevCase(
  outerOption: (outer: string) => string[],
  args: string[] = [],
  criuArgs: string[] = [],
): CrossCase {
  const outer = `ctsx${Deno.pid % 10000}n${++serial}`;
  const configure = () => {
    tool("ip", "addr", "add", "198.19.77.1/24", "dev", outer);
    tool("ip", "-6", "addr", "add", "fd00:198:19:77::1/64", "dev", outer, "nodad");
    tool("ip", "link", "set", "dev", outer, "up");
  };
  const gone = async () => {
    for (let i = 0; linkExists(outer); i++) {
      if (i > 1000) throw new Error(`The outer end ${outer} stays after its namespace is gone`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return {
    name: "netdev",
    args: [outer, ...args],
    title: ["netdev", ...args, ...outerOption("OUTER"), ...criuArgs].join(" "),
    criuArgs,
    restoreArgs: outerOption(outer),
    started: configure,
    afterDump: gone,
    restored: configure,
    cleanup: gone,
  };
}

registerCross([
  {
    name: "mntns",
    restoreArgs: ["--root", ROOTFS],
    upstreamDumpFails: EXE_OUTSIDE,
  },
  // The same tree as a container's init: exec'd inside its new root.
  { name: "mntns", args: ["exec"], restoreArgs: ["--root", ROOTFS] },
  {
    name: "mntns",
    args: ["overlay"],
    restoreArgs: ["--root", ROOTFS],
    upstreamDumpFails: EXE_OUTSIDE,
  },
  // A runc-like container: devices bound from the host, external both ways.
  {
    name: "mntns_container",
    criuArgs: ["/dev/null", "/dev/urandom"].flatMap((d) => ["--external", `mnt[${d}]:${d}`]),
    restoreArgs: ["--root", ROOTFS],
    upstreamDumpFails: EXE_OUTSIDE,
  },
  cgroupCase(false, [], false),
  cgroupCase(false, [], true),
  cgroupCase(false, ["--manage-cgroups=full"], false),
  {
    ...cgroupCase(false, ["--manage-cgroups=strict"], true),
    upstreamDumpFails:
      'its image lists the root of every hierarchy a task sits at the top of (blkio /), which strict refuses as existing ("Abort restore of existing cgroups")',
  },
  cgroupCase(true, [], false),
  cgroupCase(true, [], true),
  {
    name: "userns",
    upstreamRestoreFails:
      "without a PID and mount namespace of its own, mounting proc in the new user namespace fails (EPERM)",
  },
  // Several tasks in a user namespace whose PID namespace is criu's (with network, IPC and UTS).
  {
    name: "userns_tree",
    upstreamRestoreFails:
      "without a PID and mount namespace of its own, mounting proc in the new user namespace fails (EPERM)",
  },
  netdevCase((outer) => ["--veth-pair", `eth0=${outer}`]),
  netdevCase((outer) => ["--external", `veth[eth0]:${outer}`]),
  netdevCase((outer) => ["--veth-pair", `eth0=${outer}`], [], ["--network-lock", "nftables"]),
  netdevCase((outer) => ["--veth-pair", `eth0=${outer}`], ["bridge", "pair"]),
  {
    ...netdevCase((outer) => ["--veth-pair", `eth0=${outer}`], ["policy"]),
    upstreamDumpFails:
      "CRIU 4.2 saves the main table's routes only (ip route save): table 100 and the local table's added route are lost",
  },
]);

Deno.test("upstream_ns_cross: the --root bind mount is removed", () => dropRootfs());
