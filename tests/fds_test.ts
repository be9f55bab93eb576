/**
 * The other fds programs hold (FIFOs, signalfd, timerfd, memfd...): each workload through the
 * usual matrix, and Debian's crit decoding what a dump of it writes, with the values it holds.
 */
import assert from "node:assert/strict";
import { criuOk } from "./lib/harness.ts";
import { debianCrit } from "./lib/tools.ts";
import { refusedDump, registerMatrix, withWorkload } from "./lib/matrix.ts";

registerMatrix([
  { name: "fifo" },
  { name: "signalfd" },
  { name: "timerfd", settleMs: 300 },
  { name: "memfd" },
  { name: "inotify" },
  { name: "fanotify" },
  { name: "pidfd" },
  { name: "opath" },
  { name: "pty" },
  { name: "fds_tree" },
]);

/** Debian's crit, as JSON: an independent reader of our images. */
async function critDecode(path: string): Promise<{ entries: Record<string, unknown>[] }> {
  const out = await new Deno.Command(debianCrit(), {
    args: ["decode", "-i", path],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const d = new TextDecoder();
  assert.equal(out.code, 0, `crit decode ${path}: ${d.decode(out.stderr)}`);
  return JSON.parse(d.decode(out.stdout));
}

/** Dumps a running workload with -R, has crit decode every image, and hands the images to `check`. */
function critCase(
  name: string,
  check: (images: string, decode: (file: string) => Promise<Record<string, unknown>[]>) => Promise<void>,
): Promise<void> {
  return withWorkload({ name }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    for (const f of Deno.readDirSync(images)) {
      if (f.name.startsWith("pages-") || f.name.endsWith(".log")) continue;
      await critDecode(`${images}/${f.name}`);
    }
    await check(images, async (file) => (await critDecode(`${images}/${file}`)).entries);
  });
}

type Entry = Record<string, unknown>;
const ofType = (files: Entry[], type: string) => files.filter((f) => f.type === type);

Deno.test("crit decodes a dump of fifo: FIFO entries naming their paths, queued bytes in fifo-data.img", () =>
  critCase("fifo", async (images, decode) => {
    const files = await decode("files.img");
    const fifos = ofType(files, "FIFO").map((f) => f.fifo as Entry);
    assert.equal(fifos.length, 5);
    for (const fifo of fifos) {
      const reg = files.find((f) => f.id === fifo.regf_id)?.reg as Entry;
      assert.match(String(reg.name), /\.fifo[12]$/);
    }
    const data = await decode("fifo-data.img");
    const bytes = data.map((d) => d.bytes).sort((a, b) => Number(a) - Number(b));
    assert.deepEqual(bytes, [3000, 70000]);
    assert.ok(data.some((d) => d.size === 131072), "fifo2's capacity is not in fifo-data.img");
    assert.ok(!Deno.readDirSync(images).some((f) => f.name === "pipes-data.img"));
  }));

Deno.test("crit decodes a dump of signalfd: each mask and flags", () =>
  critCase("signalfd", async (_images, decode) => {
    const fds = ofType(await decode("files.img"), "SIGNALFD").map((f) => f.sgfd as Entry);
    assert.deepEqual(fds.map((f) => f.sigmask).sort(), [0xa00, 2 ** 36].sort()); // USR1+USR2, SIGRTMIN+3
    assert.ok(fds.some((f) => (Number(f.flags) & 0o4000) !== 0), "no signalfd is non-blocking");
  }));

Deno.test("crit decodes a dump of timerfd: clocks, settime flags, time left, intervals, ticks", () =>
  critCase("timerfd", async (_images, decode) => {
    const fds = ofType(await decode("files.img"), "TIMERFD").map((f) => f.tfd as Entry);
    assert.deepEqual(fds.map((f) => f.clockid).sort(), [0, 1, 1, 1, 7]);
    const oneShot = fds.find((f) => f.clockid === 1 && Number(f.vsec) > 900)!;
    assert.ok(Number(oneShot.vsec) <= 1000 && oneShot.isec === 0 && oneShot.insec === 0);
    const absolute = fds.find((f) => f.clockid === 0)!;
    assert.equal(absolute.settime_flags, 1); // TFD_TIMER_ABSTIME
    assert.ok(Number(absolute.vsec) > 1900 && Number(absolute.vsec) <= 2000);
    assert.ok(fds.some((f) => f.insec === 100000000), "the periodic timer's interval is missing");
    const fired = fds.find((f) => f.clockid === 7)!;
    assert.equal(fired.ticks, 1);
  }));

Deno.test("crit decodes a dump of memfd: inodes with names, sizes and seals, contents as shmem pages", () =>
  critCase("memfd", async (images, decode) => {
    const files = ofType(await decode("files.img"), "MEMFD").map((f) => f.memfd as Entry);
    assert.equal(files.length, 4, "fds 5 and 7 share one open file description; 6, 8 and 9 have their own");
    const inodes = await decode("memfd.img");
    assert.deepEqual(inodes.map((i) => i.name).sort(), ["criu-ts data", "empty", "sealed"]);
    const data = inodes.find((i) => i.name === "criu-ts data")!;
    assert.equal(data.size, 1024 * 1024 + 123);
    assert.equal(data.seals, 2 | 4); // F_SEAL_SHRINK | F_SEAL_GROW
    assert.ok(files.some((f) => f.pos === 5000 && f.inode_id === data.inode_id));
    const [head, ...runs] = await decode(`pagemap-shmem-${data.shmid}.img`);
    const pages = runs.reduce((n, r) => n + Number(r.nr_pages), 0);
    assert.equal(pages, 4 + 1 + 1, "pages 0-3, the one at 64 KiB and the last one: holes are not stored");
    assert.equal(Deno.statSync(`${images}/pages-${head!.pages_id}.img`).size, pages * 4096);
    assert.equal(inodes.find((i) => i.name === "empty")!.seals, 1); // F_SEAL_SEAL: not sealable
  }));

Deno.test("crit decodes a dump of inotify: watches with their wds, masks and file handles", () =>
  critCase("inotify", async (_images, decode) => {
    const fds = ofType(await decode("files.img"), "INOTIFY").map((f) => f.ify as Entry);
    assert.equal(fds.length, 2);
    const watches = (fds.find((f) => Array.isArray(f.wd) && f.wd.length > 0)!.wd as Entry[])
      .sort((a, b) => Number(a.wd) - Number(b.wd));
    assert.deepEqual(watches.map((w) => w.wd), [1, 2, 4]);
    assert.equal(watches[0]!.mask, 0x100 | 0x200); // IN_CREATE | IN_DELETE
    for (const w of watches) {
      const fh = w.f_handle as Entry;
      assert.ok(Number(fh.bytes) > 0 && (fh.handle as unknown[]).length >= 16, "a watch has no file handle");
      assert.match(String(fh.path), /inotify\.result\.(dir|file|other)$/);
    }
  }));

Deno.test("crit decodes a dump of pidfd: live ones by their pid, dead ones as -1 sharing an inode", () =>
  critCase("pidfd", async (images) => {
    // Debian's crit (CRIU 3.17) decodes files.img but predates pidfds: our crit shows them.
    const ours = JSON.parse((await criuOk(["crit", "decode", "-i", `${images}/files.img`])).stdout);
    const fds = ofType(ours.entries, "PIDFD").map((f) => f.pidfd as Entry);
    assert.equal(fds.length, 6);
    const dead = fds.filter((f) => f.nspid === -1);
    assert.equal(dead.length, 2);
    assert.equal(dead[0]!.ino, dead[1]!.ino, "the two pidfds of B are one process");
    assert.ok(fds.some((f) => (Number(f.flags) & 0o4000) !== 0), "no pidfd is non-blocking");
  }));

Deno.test("a pidfd on a process outside the tree is refused by name and the process runs on", () =>
  refusedDump(
    "pidfd",
    ["outside"],
    /Cannot dump fd 11 \(pidfd\) of process \d+: it refers to process \d+, which is not in the dumped tree/,
  ));

Deno.test("crit decodes a dump of pty: each side's tty info (index, packet mode, lock, termios) and its path", () =>
  critCase("pty", async (_images, decode) => {
    const files = await decode("files.img");
    const ttys = ofType(files, "TTY").map((f) => f.tty as Entry);
    assert.equal(ttys.length, 6);
    const paths = ttys.map((t) => (files.find((f) => f.id === t.regf_id)?.reg as Entry).name);
    assert.equal(paths.filter((p) => p === "/dev/ptmx").length, 3);
    const infos = await decode("tty-info.img");
    assert.ok(infos.every((i) => i.type === "PTY" && (i.pty as Entry).index !== undefined && i.termios));
    assert.equal(infos.filter((i) => i.packet_mode).length, 1, "B's master is in packet mode");
    assert.equal(infos.filter((i) => i.locked).length, 1, "C's slave is locked");
    assert.ok(infos.some((i) => (i.winsize as Entry).ws_row === 33 && (i.winsize as Entry).ws_col === 101));
  }));

Deno.test("crit decodes a dump of fanotify: group flags and inode and mount marks", () =>
  critCase("fanotify", async (_images, decode) => {
    const groups = ofType(await decode("files.img"), "FANOTIFY").map((f) => f.ffy as Entry);
    assert.equal(groups.length, 1);
    assert.equal(groups[0]!.faflags, 2); // FAN_NONBLOCK
    const marks = groups[0]!.mark as Entry[];
    assert.deepEqual(marks.map((m) => m.type).sort(), ["INODE", "INODE", "MOUNT"]);
    assert.ok(marks.some((m) => m.ignored_mask === 2 && m.mflags === 0x40), "the ignore mark is missing");
    assert.ok(
      marks.filter((m) => m.type === "INODE").every((m) => ((m.ie as Entry).f_handle as Entry).bytes),
    );
  }));

for (
  const [mode, why] of [
    ["lost", /its session leader holds no fd of it/],
    ["member", /it does not lead its session, and only a session leader's terminal comes back yet/],
  ] as const
) {
  Deno.test(`a pty of the tree as a terminal that cannot come back (${mode}) is refused by name`, () =>
    refusedDump("pty", [mode], [
      /Cannot dump its controlling terminal \/dev\/pts\/\d+ of process \d+: /,
      why,
    ]));
}

Deno.test("crit decodes a dump of fds_tree: the session's pty with its session and group, /dev/tty as CTTY", () =>
  critCase("fds_tree", async (_images, decode) => {
    const infos = await decode("tty-info.img");
    assert.ok(infos.some((i) => i.type === "CTTY"), "no CTTY record for /dev/tty");
    const slave = infos.find((i) => i.type === "PTY" && Number(i.sid) !== 0);
    assert.ok(
      slave && Number(slave.pgrp) === Number(slave.sid),
      "the child's session is not on its pty's record",
    );
    assert.ok(ofType(await decode("files.img"), "FIFO").length === 2);
  }));
