/**
 * POSIX message queues of a tree's IPC namespace (posix_mq.ts) and the fds that hold them
 * (mqueue.ts): the posix_mq workload's queues, with their attributes, owners, modes and
 * messages in order, through the usual matrix; a dump that fails after reading the queues leaves
 * them as they were; a registered notification is refused before any queue is touched; Debian's
 * crit reads every image of such a dump but criu-ts's own queue image, which our crit reads.
 */
import assert from "node:assert/strict";
import { criu, criuOk, descendants, exists, reap } from "./lib/harness.ts";
import { type Case, dumpRestore, refusedDump, registerMatrix, withWorkload } from "./lib/matrix.ts";
import { debianCrit } from "./lib/tools.ts";
import { UPSTREAM } from "./lib/upstream.ts";

const CASES: Case[] = [{ name: "posix_mq" }, { name: "posix_mq", args: ["nested"] }];

registerMatrix(CASES);

Deno.test("a dump refused after the queues were read leaves every queue and message as it was", () =>
  withWorkload({ name: "posix_mq", args: ["refused"] }, async (w, images) => {
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"]);
    assert.equal(r.code, 1, `the dump should fail: ${r.stderr}`);
    assert.match(r.stderr, /semaphore-mode eventfds are not supported yet/);
    // The queues were drained and refilled before the refusal: the workload's checks then mean something.
    const log = Deno.readTextFileSync(`${images}/dump.log`);
    assert.match(
      log,
      /POSIX message queue \/criu-ts-a of IPC namespace \d+: 5 message\(s\) read and put back/,
    );
    assert.match(
      log,
      /POSIX message queue \/criu-ts-b of IPC namespace \d+: 2 message\(s\) read and put back/,
    );
    assert.deepEqual(
      [...Deno.readDirSync(images)].map((e) => e.name),
      ["dump.log"],
      "the failed dump left images",
    );
  }));

Deno.test("a queue of 256 KiB (eight 32 KiB messages) comes back in order after dump and restore", () =>
  withWorkload(
    { name: "posix_mq", args: ["big"] },
    (w, images) => dumpRestore(w, images, { name: "posix_mq" }),
  ));

Deno.test("a dump that runs out of disk while writing the queues leaves every queue and message as it was", () =>
  withWorkload({ name: "posix_mq", args: ["big"] }, async (w, images) => {
    const small = `${images}/small`;
    Deno.mkdirSync(small);
    const mount = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=128k", "tmpfs", small],
    })
      .output();
    assert.ok(mount.success, "mounting a small tmpfs");
    try {
      const r = await criu(["dump", "-t", `${w.pid}`, "-D", small, "-o", `${images}/dump.log`, "-v4"]);
      assert.equal(r.code, 1, `the dump should fail: ${r.stderr}`);
      assert.match(r.stderr, /ENOSPC|No space/);
      assert.deepEqual([...Deno.readDirSync(small)], [], "the failed dump left files behind");
    } finally {
      await new Deno.Command("umount", { args: [small] }).output();
    }
    // It failed in the queue image: the big queue was being written when the space ran out.
    const log = Deno.readTextFileSync(`${images}/dump.log`);
    assert.doesNotMatch(log, /POSIX message queue \/criu-ts-big .* read and put back/);
    assert.match(log, /POSIX message queue \/criu-ts-a .* read and put back/);
  }));

Deno.test("a queue with a registered notification (mq_notify) is refused by name, the queues untouched", () =>
  refusedDump(
    "posix_mq",
    ["notify"],
    /POSIX message queue \/criu-ts-a of process \d+: process \d+ is registered for its notification \(mq_notify\)/,
  ));

Deno.test("an fd of a queue in criu's own IPC namespace (not saved) is refused by name, the queue untouched", () =>
  refusedDump(
    "mqueue_fd",
    ["named"],
    /POSIX message queue \/criu-ts-mq-\d+ \(fd \d+\) of process \d+: it is in criu's own IPC namespace/,
  ));

Deno.test("a queue image cut short is refused before anything is created, then the whole one restores", () =>
  withWorkload({ name: "posix_mq" }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    await reap(w.pid);
    const name = [...Deno.readDirSync(images)].map((e) => e.name).find((n) =>
      n.startsWith("ipcns-posix-mq-")
    );
    assert.ok(name, "no queue image");
    const whole = Deno.readFileSync(`${images}/${name}`);
    Deno.writeFileSync(`${images}/${name}`, whole.subarray(0, whole.length - 30));
    const r = await criu(["restore", "-D", images, "-d"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(name.replace(".", "\\.")));
    assert.ok(!exists(`/proc/${w.pid}`), "a refused restore left the process");
    Deno.writeFileSync(`${images}/${name}`, whole);
    await criuOk(["restore", "-D", images, "-d"]);
  }));

/** Images Debian's crit has no reader for: pages and the network tools' raw dumps. */
const RAW_IMAGE = /^(pages-\d+|ifaddr|route6?|rule|ip6?tables|nftables)(-\d+)?\.img$/;

async function debianCritDecode(path: string): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(debianCrit(), { args: ["decode", "-i", path] }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("Debian's crit decodes every image of a dump with queues but ours, which our crit decodes", () =>
  withWorkload({ name: "posix_mq" }, async (w, images) => {
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    for (const pid of tree) await reap(pid);
    const names = [...Deno.readDirSync(images)].map((e) => e.name).filter((n) => !RAW_IMAGE.test(n));
    const ours = names.filter((n) => /^ipcns-posix-mq-\d+\.img$/.test(n));
    assert.equal(ours.length, 1, `one queue image among ${names.join(" ")}`);
    for (const f of names.filter((n) => !ours.includes(n))) {
      const r = await debianCritDecode(`${images}/${f}`);
      assert.equal(r.code, 0, `crit decode ${f}: ${r.stderr}`);
    }
    const theirs = await debianCritDecode(`${images}/${ours[0]}`);
    assert.notEqual(theirs.code, 0, "Debian's crit knows our magic: it is not our own any more");
    const decoded = JSON.parse((await criuOk(["crit", "decode", "-i", `${images}/${ours[0]}`])).stdout);
    assert.equal(decoded.magic, "IPCNS_POSIX_MQ");
    const queues = decoded.entries.map((e: Record<string, unknown>) => [e.name, e.curmsgs, e.maxmsg, e.mode]);
    assert.deepEqual(queues, [["criu-ts-a", 5, 16, 0o600], ["criu-ts-b", 2, 3, 0o640]]);
    const priorities = (decoded.entries[0].extra as Record<string, unknown>[])
      .filter((_, i) => i % 2 === 0).map((m) => m.priority);
    assert.deepEqual(priorities, [7, 3, 3, 1, 1]);
    // Encoded back by our crit, byte for byte.
    const json = `${images}/queues.json`;
    Deno.writeTextFileSync(json, JSON.stringify(decoded));
    await criuOk(["crit", "encode", "-i", json, "-o", `${images}/queues.img`]);
    assert.deepEqual(Deno.readFileSync(`${images}/queues.img`), Deno.readFileSync(`${images}/${ours[0]}`));
    const files = await criuOk(["crit", "decode", "-i", `${images}/files.img`]);
    assert.match(files.stdout, /"type": "EXT"/);
    await criuOk(["restore", "-D", images, "-d"]);
  }));

Deno.test({
  name:
    "CRIU 4.2 refuses to restore such a dump (no plugin for the queues' fds), leaves nothing; ours restores it",
  ignore: UPSTREAM === undefined,
  fn: () =>
    withWorkload({ name: "posix_mq" }, async (w, images) => {
      await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
      await reap(w.pid);
      const out = await new Deno.Command(UPSTREAM!, {
        args: ["restore", "-D", images, "-d", "-o", "upstream.log", "-v4"],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).output();
      assert.notEqual(out.code, 0, "CRIU restored fds it has no image for");
      assert.match(Deno.readTextFileSync(`${images}/upstream.log`), /Unable to restore 0x[0-9a-f]+/);
      await reap(w.pid);
      await criuOk(["restore", "-D", images, "-d"]);
    }),
});
