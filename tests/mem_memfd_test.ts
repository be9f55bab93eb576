/**
 * memfd mappings (mapping_memfd.ts): a memfd mapped shared and private and held as an fd, another
 * only mapped, across a fork, in the usual matrix; the images as CRIU writes them (a memfd entry
 * of files.img named by the areas, VMA_AREA_MEMFD, the inode with its contents in memfd.img), read
 * by Debian's crit; a damaged reference refused before anything is restored.
 */
import assert from "node:assert/strict";
import { criu, criuOk, descendants, exists, reap } from "./lib/harness.ts";
import { debianCrit } from "./lib/tools.ts";
import { registerMatrix, withWorkload } from "./lib/matrix.ts";
import { ImageDir } from "../src/images/dir.ts";
import { KINDS } from "../src/images/kinds.ts";
import type { mm_entry } from "../src/images/gen/mm_pb.ts";

registerMatrix([{ name: "mem_memfd" }]);

const VMA_AREA_MEMFD = 1 << 14;
const VMA_FILE_PRIVATE = 1 << 6;
const VMA_FILE_SHARED = 1 << 7;

async function crit(dir: string, image: string): Promise<{ entries: Record<string, unknown>[] }> {
  const out = await new Deno.Command(debianCrit(), {
    args: ["decode", "-i", `${dir}/${image}`],
    stdout: "piped",
  }).output();
  assert.equal(out.code, 0, `crit cannot decode ${image}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("memfd areas are recorded as CRIU's memfd mappings (crit decode)", () =>
  withWorkload({ name: "mem_memfd" }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const dir = new ImageDir(images);
    const [mm] = dir.read<mm_entry>(KINDS.MM, w.pid);
    const areas = mm!.vmas.filter((v) => v.status & VMA_AREA_MEMFD);
    assert.equal(areas.length, 3, "two areas of wl-map, one of wl-only");
    assert.equal(areas.filter((v) => v.status & VMA_FILE_SHARED).length, 2);
    assert.equal(areas.filter((v) => v.status & VMA_FILE_PRIVATE).length, 1);
    const files = (await crit(images, "files.img")).entries as {
      type: string;
      id: number;
      memfd?: { inode_id: number };
    }[];
    const inodes = (await crit(images, "memfd.img")).entries as {
      inode_id: number;
      name: string;
      seals: number;
    }[];
    const inodeOf = (v: { shmid: bigint }) =>
      inodes.find((i) => i.inode_id === files.find((f) => f.id === Number(v.shmid))?.memfd?.inode_id);
    for (const v of areas) {
      assert.equal(files.find((f) => f.id === Number(v.shmid))?.type, "MEMFD", "an area names a memfd entry");
    }
    assert.deepEqual(areas.map((v) => inodeOf(v)?.name).sort(), ["wl-map", "wl-map", "wl-only"]);
    // fd 7 is the same memfd as the wl-map areas: one inode.
    assert.equal(inodes.length, 2);
    const wlOnly = inodes.find((i) => i.name === "wl-only")!;
    assert.equal(wlOnly.seals, 4 | 2, "F_SEAL_GROW | F_SEAL_SHRINK");
  }));

Deno.test("a memfd area naming a memfd that memfd.img lacks is refused before anything is restored", () =>
  withWorkload({ name: "mem_memfd" }, async (w, images) => {
    const tree = [w.pid, ...descendants(w.pid)];
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    for (const pid of tree) await reap(pid);
    const memfdImg = `${images}/memfd.img`;
    const saved = Deno.readFileSync(memfdImg);
    Deno.removeSync(memfdImg);
    const r = await criu(["restore", "-D", images, "-d", "-o", "restore.log"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /maps file \d+ at 0x[0-9a-f]+, whose memfd is not in memfd\.img/);
    for (const pid of tree) assert.ok(!exists(`/proc/${pid}`), "a refused restore left a process");
    Deno.writeFileSync(memfdImg, saved);
    await criuOk(["restore", "-D", images, "-d", "-o", "restore.log"]);
  }));
