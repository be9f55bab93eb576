/**
 * External network namespaces, as runc uses them for a container whose namespace its config names
 * by path (Podman's bridge networks; tests/podman_test.ts has that end to end): the dump is told
 * `--external net[INODE]:KEY` and saves only the key, the restore is handed the namespace to put
 * the root into with `--inherit-fd fd[N]:KEY`.
 *
 * The workload (tests/workloads/netns.c) unshares a network namespace and brings its loopback up
 * with an MTU of 61440; after the restore it checks it sees only an up loopback with that MTU and
 * moves a datagram over it. Nothing of its namespace is saved, so it passes only in a namespace
 * prepared as the caller must: one made here with that loopback.
 */
import assert from "node:assert/strict";
import { CRIU, criu, criuOk, exists, reap, tempDir, Workload } from "./lib/harness.ts";

const IP = "/usr/sbin/ip";

async function ip(args: string[]): Promise<void> {
  const got = await new Deno.Command(IP, { args, stdout: "piped", stderr: "piped" }).output();
  assert.ok(got.success, `ip ${args.join(" ")}: ${new TextDecoder().decode(got.stderr)}`);
}

Deno.test("--external net[INODE]:KEY saves only the key; --inherit-fd fd[N]:KEY restores the root into that namespace", async () => {
  const w = await Workload.start("netns");
  const images = tempDir();
  const netns = `criu-ts-ext-${Deno.pid}`;
  let made = false;
  try {
    const inode = Deno.statSync(`/proc/${w.pid}/ns/net`).ino;
    await criuOk([
      "dump",
      "-t",
      `${w.pid}`,
      "-D",
      images,
      "-o",
      "dump.log",
      "-v4",
      "--external",
      `net[${inode}]:ext`,
    ]);
    await reap(w.pid);
    const names = [...Deno.readDirSync(images)].map((e) => e.name);
    assert.ok(names.some((n) => /^netns-\d+\.img$/.test(n)), `no netns image: ${names}`);
    assert.deepEqual(
      names.filter((n) => /^(netdev|ifaddr|route|iptables)/.test(n)),
      [],
      "saved network images",
    );

    // Without the namespace: refused before any process exists.
    const refused = await criu(["restore", "-D", images, "-d", "-o", "restore.log"]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /network namespace is external \(key ext\).*--inherit-fd fd\[N\]:ext/);
    assert.ok(!exists(`/proc/${w.pid}`), "a process left by the refused restore");

    await ip(["netns", "add", netns]);
    made = true;
    await ip(["-n", netns, "link", "set", "lo", "mtu", "61440", "up"]);
    const script = 'exec 7<"$1"; shift; exec "$@"';
    const restore = [CRIU, "restore", "-D", images, "-d", "-o", "restore.log", "--inherit-fd", "fd[7]:ext"];
    const got = await new Deno.Command("/bin/bash", {
      args: ["-c", script, "bash", `/run/netns/${netns}`, ...restore],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(got.success, new TextDecoder().decode(got.stderr));
    assert.equal(Deno.statSync(`/proc/${w.pid}/ns/net`).ino, Deno.statSync(`/run/netns/${netns}`).ino);
    assert.equal(await w.finish(), "PASS");
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
    if (made) await ip(["netns", "delete", netns]);
  }
});
