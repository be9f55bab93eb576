/**
 * Ghost FIFOs and symlinks (remap.ts, fifo.ts, opath.ts): a FIFO and a symlink still open after
 * their names were removed come back as CRIU brings them, from ghost-file images (mknod, symlink),
 * unlinked again once the tree has them: in the matrix, read by Debian's crit, with nothing left
 * next to the workload; a removed socket path (which CRIU cannot carry either) refused by name.
 */
import assert from "node:assert/strict";
import { criuOk, reap } from "./lib/harness.ts";
import { debianCrit } from "./lib/tools.ts";
import { refusedDump, registerMatrix, withWorkload } from "./lib/matrix.ts";

registerMatrix([{ name: "gone_special" }]);

async function crit(dir: string, image: string): Promise<{ entries: Record<string, unknown>[] }> {
  const out = await new Deno.Command(debianCrit(), {
    args: ["decode", "-i", `${dir}/${image}`],
    stdout: "piped",
  })
    .output();
  assert.equal(out.code, 0, `crit cannot decode ${image}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("a removed FIFO and symlink are ghost files as CRIU writes them, and nothing is left after restore", () =>
  withWorkload({ name: "gone_special" }, async (w, images) => {
    const before = [...Deno.readDirSync(w.dir)].map((e) => e.name).sort();
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log"]);
    await reap(w.pid);
    const ghosts = [...Deno.readDirSync(images)].filter((e) => e.name.startsWith("ghost-file-")).map((e) =>
      e.name
    );
    assert.equal(ghosts.length, 2, "one ghost for the FIFO, one for the symlink");
    const headers = await Promise.all(ghosts.map(async (g) => (await crit(images, g)).entries[0]!));
    const fifo = headers.find((h) => ((h.mode as number) & 0o170000) === 0o010000);
    const link = headers.find((h) => ((h.mode as number) & 0o170000) === 0o120000);
    assert.ok(fifo, "a FIFO ghost");
    assert.equal((fifo.mode as number) & 0o7777, 0o640);
    assert.equal(link?.symlnk_target, "target-text");
    const remaps = (await crit(images, "remap-fpath.img")).entries;
    assert.equal(remaps.length, 4, "three FIFO fds and the symlink fd");
    await criuOk(["restore", "-D", images, "-d", "-o", "restore.log"]);
    assert.deepEqual(
      [...Deno.readDirSync(w.dir)].map((e) => e.name).sort(),
      before,
      "the restore left files",
    );
  }));

Deno.test("an O_PATH fd of a removed socket path is refused by name", () =>
  refusedDump("gone_special", ["socket"], [
    /file \S*gone_special\.result\.sock \(fd 24\) of process \d+/,
    /it was removed, and only removed regular files, directories, FIFOs and symlinks are carried/,
  ]));
