/**
 * User namespaces: a process in a user namespace of its own, with uid and gid maps and
 * credentials that differ inside and outside, through the usual matrix, alone and with a child; a
 * tree of several tasks (a zombie, a grandchild, other credentials) in a user namespace whose PID
 * namespace is criu's, with network, IPC and UTS namespaces that user namespace owns; the saved
 * maps as crit reads them; a nested user namespace is refused by name, as in CRIU, and runs on.
 */
import assert from "node:assert/strict";
import { criuOk, descendants, exists, killTree, reap, tempDir, waitFor, workloadBin } from "./lib/harness.ts";
import { spawn } from "../ffi/spawn.ts";
import { refusedDump, registerMatrix, withWorkload } from "./lib/matrix.ts";

registerMatrix([{ name: "userns" }, { name: "userns", args: ["child"] }, { name: "userns_tree" }]);

Deno.test("crit decodes userns-ID.img: the uid and gid maps; the core holds the credentials seen inside", () =>
  withWorkload({ name: "userns" }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const files = [...Deno.readDirSync(images)].map((e) => e.name).filter((n) => /^userns-\d+\.img$/.test(n));
    assert.equal(files.length, 1, files.join(" "));
    const decode = async (file: string) => {
      const out = await new Deno.Command("crit", { args: ["decode", "-i", `${images}/${file}`] }).output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      return JSON.parse(new TextDecoder().decode(out.stdout)).entries[0];
    };
    const maps = await decode(files[0]!);
    const expected = [{ first: 0, lower_first: 0, count: 1 }, {
      first: 1000,
      lower_first: 101000,
      count: 1000,
    }];
    assert.deepEqual(maps.uid_map, expected);
    assert.deepEqual(maps.gid_map, expected);
    const creds = (await decode(`core-${w.pid}.img`)).thread_core.creds;
    assert.deepEqual([creds.uid, creds.gid, creds.egid, creds.groups], [0, 1000, 1000, [1000, 1001]]);
  }));

Deno.test("a task in a user namespace nested below the root's is refused by name, and runs on", () =>
  refusedDump(
    "userns_tree",
    ["nested"],
    /Cannot dump user namespace user:\[\d+\] of process \d+: it differs from the root's \(user:\[\d+\]\); nested user namespaces are not supported/,
  ));

/**
 * Runs the userns workload in `mode` (init: I is root inside; init-setuid: I switched to uid 1000
 * without exec before forking K, which shares a pipe with it) through `cycles` dump/restore
 * cycles, with `-R` dumps in between when `leaveRunning` is set, then lets it check itself.
 */
async function initTree(mode: "init" | "init-setuid", cycles: number, leaveRunning = false): Promise<void> {
  const dir = tempDir();
  const result = `${dir}/userns.result`;
  // With init-setuid, I writes its ready and result files as uid 101000 of the host.
  if (mode === "init-setuid") Deno.chmodSync(dir, 0o777);
  const launcher = spawn(await workloadBin("userns"), ["userns", result, mode], { setsid: true });
  let init = 0;
  try {
    await waitFor("the namespaces", () => exists(`${result}.ready`));
    await reap(launcher);
    init = Number(Deno.readTextFileSync(`${result}.pid`).trim());
    for (let cycle = 0; cycle < cycles; cycle++) {
      const tree = [init, ...descendants(init)];
      assert.equal(tree.length, 2);
      if (leaveRunning) await criuOk(["dump", "-t", `${init}`, "-D", dir, "-R", "-o", "dump-r.log", "-v4"]);
      await criuOk(["dump", "-t", `${init}`, "-D", dir, "-o", "dump.log", "-v4"]);
      for (const pid of tree) await reap(pid);
      await criuOk([
        "restore",
        "-D",
        dir,
        "-d",
        "--pidfile",
        `${dir}/restored.pid`,
        "-o",
        "restore.log",
        "-v4",
      ]);
      init = Number(Deno.readTextFileSync(`${dir}/restored.pid`).trim());
      const k = descendants(init)[0]!;
      // Seen from criu's namespace: K's uid 1000 inside is 101000 outside.
      assert.match(Deno.readTextFileSync(`/proc/${k}/status`), /\nUid:\t101000\t101000\t101000\t101000\n/);
      // I is non-dumpable again once restored (its /proc files are then root's, else 101000's).
      if (mode === "init-setuid") assert.equal(Deno.statSync(`/proc/${init}/environ`).uid, 0);
    }
    Deno.kill(init, "SIGTERM");
    await waitFor("the verdict", () => exists(result) && Deno.readTextFileSync(result).endsWith("\n"));
    assert.equal(Deno.readTextFileSync(result).trim(), "PASS");
  } finally {
    await killTree(init);
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("a user namespace with a PID namespace of its own: the init and a child with other credentials round-trip", () =>
  initTree("init", 2));

for (
  const [what, cycles, leaveRunning] of [["plain", 0, false], ["dump and restore", 1, false], [
    "-R, then dump and restore",
    1,
    true,
  ], ["10 cycles", 10, false]] as const
) {
  Deno.test(`userns: a parent that changed its uid without exec and its child sharing a pipe with it (${what})`, () =>
    initTree("init-setuid", cycles, leaveRunning));
}

Deno.test("a container-like tree: user, PID, UTS, IPC, network and cgroup namespaces together round-trip", async () => {
  const dir = tempDir();
  // unshare makes the user namespace first (root mapped to root), owning the others; sh is the init.
  const unshare = new Deno.Command("setsid", {
    args: [
      "unshare",
      "-r",
      "--uts",
      "--ipc",
      "--net",
      "--pid",
      "--cgroup",
      "--fork",
      "sh",
      "-c",
      "hostname ct-host; sleep 600 & exec sleep 601",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let init = 0;
  const nsOf = (pid: number) =>
    ["user", "pid", "uts", "ipc", "net", "cgroup"].map((ns) => Deno.readLinkSync(`/proc/${pid}/ns/${ns}`));
  try {
    await waitFor("the init and its child", () => {
      init = descendants(unshare.pid).find((p) => descendants(p).length === 1) ?? 0;
      return init !== 0;
    });
    const host = nsOf(Deno.pid);
    assert.ok(nsOf(init).every((link, i) => link !== host[i]));
    await criuOk(["dump", "-t", `${init}`, "-D", dir, "-j", "-o", "dump.log", "-v4"]);
    await reap(init);
    await unshare.status;
    await criuOk(["restore", "-D", dir, "-d", "-j", "--pidfile", `${dir}/pid`, "-o", "restore.log", "-v4"]);
    init = Number(Deno.readTextFileSync(`${dir}/pid`).trim());
    const restored = nsOf(init);
    assert.ok(restored.every((link, i) => link !== host[i]), restored.join(" "));
    assert.equal(descendants(init).length, 1);
    assert.match(Deno.readTextFileSync(`/proc/${init}/uid_map`), /^\s*0\s+0\s+1\n$/);
    const hostname = await new Deno.Command("nsenter", { args: ["-t", `${init}`, "-u", "hostname"] })
      .output();
    assert.equal(new TextDecoder().decode(hostname.stdout).trim(), "ct-host");
  } finally {
    if (init) await killTree(init);
    try {
      unshare.kill("SIGKILL");
    } catch {
      // ended with its tree
    }
    await unshare.status;
    Deno.removeSync(dir, { recursive: true });
  }
});
