/**
 * Namespaces that tasks below the root of a rootless-style tree (a user namespace of its own, the
 * host's PID namespace, a mount namespace rooted at a bind of /) made, which must come back owned
 * by the user namespace that owned them (NS_GET_USERNS), as the userns_owner workload checks: a
 * child's mount namespace (owned by the tree's user namespace), and a child's mount, network, UTS
 * and IPC namespaces made in a user namespace of its own below the tree's (owned by that one), with
 * a grandchild in them all. The restore's --root is a (non-recursive) bind mount of / that this
 * file makes and removes.
 */
import assert from "node:assert/strict";
import { criuOk, descendants, killTree, reap, tempDir, waitFor } from "./lib/harness.ts";
import { ownerUserNamespaceOf } from "../ffi/nsenter.ts";
import { refusedDump, registerMatrix } from "./lib/matrix.ts";

const ROOTFS = tempDir();

function run(cmd: string, ...args: string[]): void {
  const out = new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).outputSync();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

run("mount", "--bind", "/", ROOTFS);
globalThis.addEventListener("unload", () => {
  run("umount", ROOTFS);
  Deno.removeSync(ROOTFS);
});

registerMatrix([
  { name: "userns_owner", args: ["mnt"], restoreArgs: ["--root", ROOTFS] },
  { name: "userns_owner", args: ["nested"], restoreArgs: ["--root", ROOTFS] },
]);

Deno.test("a network namespace a task made before the user namespace it is in is refused by name (it would come back owned by that one), and the tree runs on", () =>
  refusedDump(
    "userns_owner",
    ["net-first"],
    /Cannot dump the network namespace net:\[\d+\] of process \d+: it is owned by user namespace user:\[\d+\], not by the process's own \(user:\[\d+\]\), where the restore makes it again \(it was made before its maker entered its user namespace/,
  ));

// The root and its child, which unshares a user namespace with the others: in a container (its
// init, pid 1, root of a user namespace of its own), and in criu's namespaces (sh execs into it).
for (
  const [where, unshareArgs] of [
    ["in a container with a PID namespace of its own", ["-r", "--pid", "--fork"]],
    ["below a root in criu's user namespace", ["--fork"]],
  ] as const
) {
  Deno.test(`${where}, the network, UTS and IPC namespaces a child made in a user namespace of its own come back owned by that one, twice`, async () => {
    const dir = tempDir();
    const p = new Deno.Command("setsid", {
      args: [
        "unshare",
        ...unshareArgs,
        "sh",
        "-c",
        "unshare -U -r -n -u -i sleep 600 & exec sleep 601",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const userNs = (pid: number) => Deno.readLinkSync(`/proc/${pid}/ns/user`);
    const owners = (pid: number) => ["net", "uts", "ipc"].map((k) => ownerUserNamespaceOf(pid, k));
    let root = 0;
    try {
      await waitFor("the root and its child in a user namespace of its own", () => {
        root = descendants(p.pid).find((x) => descendants(x).length === 1) ?? 0;
        return root !== 0 && userNs(descendants(root)[0]!) !== userNs(root);
      });
      for (let cycle = 0; cycle < 2; cycle++) {
        const child = descendants(root)[0]!;
        assert.deepEqual(owners(child), [userNs(child), userNs(child), userNs(child)], `cycle ${cycle}`);
        await criuOk(["dump", "-t", `${root}`, "-D", dir, "-j", "-o", "dump.log", "-v4"]);
        await reap(root);
        await criuOk([
          "restore",
          "-D",
          dir,
          "-d",
          "-j",
          "--pidfile",
          `${dir}/pid`,
          "-o",
          "restore.log",
          "-v4",
        ]);
        root = Number(Deno.readTextFileSync(`${dir}/pid`).trim());
      }
      const child = descendants(root)[0]!;
      assert.notEqual(userNs(child), userNs(root));
      assert.deepEqual(owners(child), [userNs(child), userNs(child), userNs(child)]);
    } finally {
      if (root) await killTree(root);
      try {
        p.kill("SIGKILL");
      } catch {
        // ended with its tree
      }
      await p.status;
      Deno.removeSync(dir, { recursive: true });
    }
  });
}
