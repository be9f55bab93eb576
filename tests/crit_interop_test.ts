/**
 * Debian's crit (an independent reader) decodes every image a real dump writes, and every image
 * our own crit decodes the same way.
 */
import assert from "node:assert/strict";
import { criuOk, descendants, reap, tempDir, Workload } from "./lib/harness.ts";
import { debianCrit as debianCritPath } from "./lib/tools.ts";

async function debianCrit(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(debianCritPath(), { args, stdout: "piped", stderr: "piped" }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** Every field Debian's (older) crit shows is in ours with the same value; ours may know newer ones. */
function assertCovers(ours: unknown, theirs: unknown, where: string): void {
  if (theirs && typeof theirs === "object") {
    assert.ok(ours && typeof ours === "object", `${where}: missing`);
    for (const [k, v] of Object.entries(theirs)) {
      assertCovers((ours as Record<string, unknown>)[k], v, `${where}.${k}`);
    }
  } else {
    assert.deepEqual(ours, theirs, where);
  }
}

/** mmap_zoo has every kind of memory area; netns writes the network namespace images. */
for (const workload of ["mmap_zoo", "netns"]) {
  Deno.test(`Debian's crit decodes every image of a dump and restore of ${workload}, as our crit does`, () =>
    critChecksEveryImage(workload));
}

/** gone_files writes ghost files (chunked and raw), remap-fpath.img and filelocks.img. */
Deno.test("Debian's crit decodes the ghost, remap and lock images of gone_files, as our crit does", () =>
  critChecksEveryImage(
    "gone_files",
    ["ghost", "link", "device", "locks", "cwd", "map"],
    ["--link-remap", "--evasive-devices", "--file-locks"],
    ["remap-fpath.img", "ghost-file-1.img", "ghost-file-2.img", "ghost-file-3.img", "filelocks.img"],
  ));

/** The UTS, time and IPC namespace images (ids as the ids images number them: ipc 3, uts 4, time 8). */
for (
  const [workload, args, expected] of [
    ["utsns", [], ["utsns-4.img"]],
    ["timens", [], ["timens-8.img"]],
    ["ipcns", ["attached"], ["ipcns-var-3.img", "ipcns-shm-3.img", "ipcns-sem-3.img", "ipcns-msg-3.img"]],
  ] as const
) {
  Deno.test(`Debian's crit decodes the namespace images of ${workload}, as our crit does`, () =>
    critChecksEveryImage(workload, [...args], [], [...expected]));
}

const RAW_NET_IMAGE = /^(ifaddr|route6?|rule|ip6?tables|nftables)-\d+\.img$/;

async function critChecksEveryImage(
  workload: string,
  args: string[] = [],
  options: string[] = [],
  expected: string[] = [],
): Promise<void> {
  const w = await Workload.start(workload, args);
  const images = tempDir();
  try {
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, ...options]);
    for (const pid of tree) await reap(pid);
    await criuOk(["restore", "-D", images, "-d", ...options]);
    assert.equal(await w.finish(), "PASS");
    // Pages and the network tools' own dumps (ip, iptables, nft: raw images CRIU's crit does not read) aside.
    const files = [...Deno.readDirSync(images)].map((e) => e.name).filter((n) =>
      !n.startsWith("pages-") && !n.endsWith(".log") && !RAW_NET_IMAGE.test(n)
    );
    for (
      const f of ["inventory.img", "pstree.img", "files.img", "stats-dump", "stats-restore", ...expected]
    ) {
      assert.ok(files.includes(f), f);
    }
    for (const f of files) {
      const theirs = await debianCrit(["decode", "-i", `${images}/${f}`]);
      assert.equal(theirs.code, 0, `crit decode ${f}: ${theirs.stderr}`);
      const ours = await criuOk(["crit", "decode", "-i", `${images}/${f}`]);
      assertCovers(JSON.parse(ours.stdout), JSON.parse(theirs.stdout), f);
    }
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
}
