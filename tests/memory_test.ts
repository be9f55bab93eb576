/**
 * Memory mappings of every kind a backing or an advice covers, each in a workload of its own that
 * checks its memory after restore, run through the standard matrix (plain, dump and restore,
 * --leave-running, ten cycles); and Debian's crit reads every image their dumps write.
 */
import assert from "node:assert/strict";
import { criu, criuOk, exists, reap, tempDir, Workload } from "./lib/harness.ts";
import { debianCrit as debianCritPath } from "./lib/tools.ts";
import { type Case, dumpRestore, label, registerMatrix, withWorkload } from "./lib/matrix.ts";
import { ImageDir } from "../src/images/dir.ts";
import { KINDS } from "../src/images/kinds.ts";
import type { mm_entry } from "../src/images/gen/mm_pb.ts";
import type { vma_entry } from "../src/images/gen/vma_pb.ts";
import { FileTable } from "../src/objects/files.ts";
import type { file_entry } from "../src/images/gen/fdinfo_pb.ts";
import { VMA } from "../src/objects/memory.ts";
import { MAP, O } from "../ffi/syscalls.ts";

const CASES: Case[] = [
  { name: "mem_advice" },
  { name: "mem_wipe" },
  { name: "mem_fileprot" },
  { name: "mem_shmoff" },
  { name: "mem_guard" },
  { name: "mem_aio" },
];

registerMatrix(CASES);

async function debianCrit(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(debianCritPath(), { args, stdout: "piped", stderr: "piped" }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** Dumps workload `c` with --leave-running; Debian's crit must decode every image but the pages. */
async function critDecodesDump(c: Case): Promise<void> {
  const w = await Workload.start(c.name, c.args ?? []);
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const names = [...Deno.readDirSync(images)].map((e) => e.name).filter((n) => n.endsWith(".img"));
    assert.ok(names.some((n) => n.startsWith("mm-")), `no mm image in ${names.join(" ")}`);
    for (const n of names.filter((n) => !n.startsWith("pages-"))) {
      const r = await debianCrit(["decode", "-i", `${images}/${n}`]);
      assert.equal(r.code, 0, `crit decode ${n}: ${r.stderr}`);
    }
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
}

for (const c of CASES) {
  Deno.test(`Debian's crit decodes every image of a dump of ${c.name}`, () => critDecodesDump(c));
}

// ---------------------------------------------------------------------------------------------
// The images hold these areas as CRIU writes them.

/** Dumps workload `c` with --leave-running and hands its mm entry and files to `check`. */
function inspectMm(c: Case, check: (mm: mm_entry, files: FileTable) => void) {
  return withWorkload(c, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const dir = new ImageDir(images);
    const [mm] = dir.read<mm_entry>(KINDS.MM, w.pid);
    assert.ok(mm, "no mm entry");
    check(mm, new FileTable(dir.read<file_entry>(KINDS.FILES)));
  });
}

const madvBits = (...advice: number[]) => advice.reduce((m, a) => m | (1n << BigInt(a)), 0n);

Deno.test("guards are VMA_AREA_GUARD entries after every area, inside them, as CRIU writes them", () =>
  inspectMm({ name: "mem_guard" }, (mm) => {
    const guards = mm.vmas.filter((v) => v.status & VMA.GUARD);
    assert.equal(guards.length, 5, "mem_guard installs guards on five ranges");
    const firstGuard = mm.vmas.findIndex((v) => v.status & VMA.GUARD);
    assert.equal(firstGuard, mm.vmas.length - guards.length, "guards come after every area");
    for (const g of guards) {
      assert.equal(g.status, VMA.GUARD, "a guard entry has only VMA_AREA_GUARD");
      const area = mm.vmas.find((v) => !(v.status & VMA.GUARD) && v.start <= g.start && g.end <= v.end);
      assert.ok(area, `guard 0x${g.start.toString(16)} lies inside an area`);
    }
  }));

Deno.test("an AIO ring is a VMA_AREA_AIORING area with an aio_ring_entry, as CRIU writes them", () =>
  inspectMm({ name: "mem_aio" }, (mm) => {
    const rings = mm.vmas.filter((v) => v.status & VMA.AIORING);
    assert.equal(rings.length, 1);
    const r = rings[0]!;
    assert.equal(r.status, VMA.AIORING);
    assert.equal(r.flags & (MAP.SHARED | MAP.PRIVATE), MAP.SHARED);
    // 16 requests make a one-page ring of 127 events; CRIU estimates (127 - 2) / 2 back
    assert.deepEqual(mm.aios.map((a) => [a.id, a.nrReq, a.ringLen]), [[r.start, 62, 4096]]);
  }));

Deno.test("droppable and wipe-on-fork areas carry MAP_DROPPABLE and their advice, as CRIU writes them", () =>
  inspectMm({ name: "mem_wipe" }, (mm) => {
    const droppable = mm.vmas.filter((v: vma_entry) => v.flags & MAP.DROPPABLE);
    assert.equal(droppable.length, 1);
    assert.equal(droppable[0]!.flags & MAP.PRIVATE, 0, "MAP_DROPPABLE replaces MAP_PRIVATE");
    assert.equal(droppable[0]!.madv! & madvBits(16, 18), madvBits(16, 18), "DONTDUMP and WIPEONFORK");
    const wiped = mm.vmas.filter((v) => !(v.flags & MAP.DROPPABLE) && (v.madv ?? 0n) & madvBits(18));
    assert.equal(wiped.length, 1, "one more area with MADV_WIPEONFORK");
  }));

Deno.test("madvise advice is in vma madv, one bit per advice, as CRIU writes it", () =>
  inspectMm({ name: "mem_advice" }, (mm) => {
    const advised = new Set(mm.vmas.map((v) => v.madv ?? 0n));
    // DONTFORK 10, DONTDUMP 16, HUGEPAGE 14, NOHUGEPAGE 15, RANDOM 1, SEQUENTIAL 2, MERGEABLE 12, WIPEONFORK 18
    for (const a of [10, 16, 14, 15, 1, 2, 12, 18]) {
      assert.ok(advised.has(madvBits(a)), `an area with advice ${a}`);
    }
    assert.ok(advised.has(madvBits(1, 16)), "the area with RANDOM and DONTDUMP");
  }));

Deno.test("a mapped file records its open file's access mode in vma fdflags, as CRIU writes it", () =>
  inspectMm({ name: "mem_fileprot" }, (mm, files) => {
    const mapped = mm.vmas.filter((v) =>
      v.status & (VMA.FILE_SHARED | VMA.FILE_PRIVATE) &&
      files.get(Number(v.shmid)).reg?.name.endsWith(".mapped")
    );
    assert.deepEqual(mapped.map((v) => v.fdflags).sort(), [O.RDONLY, O.RDONLY, O.RDWR, O.RDWR]);
    for (const v of mapped) assert.equal(files.get(Number(v.shmid)).reg!.flags & O.ACCMODE, v.fdflags);
  }));

// ---------------------------------------------------------------------------------------------
// hugetlb: the pages come from the kernel's pool, which the workload fills when it is empty.

const HUGE_PAGES_NEEDED = 3; // the workload's two private pages, and one shared page
const POOL = (() => {
  const m = /Hugepagesize:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/meminfo"));
  return m ? `/sys/kernel/mm/hugepages/hugepages-${m[1]}kB` : null;
})();

function readPool(file: string): number {
  return Number(Deno.readTextFileSync(`${POOL}/${file}`).trim());
}

/**
 * Can the kernel give the workload its huge pages? Asked of the kernel itself: the pool's free
 * pages, or else whether raising nr_hugepages gives some (the old value is put back at once).
 */
function hugePagesUnavailable(): string | null {
  if (!POOL || !exists(POOL)) return "this kernel has no huge page pool (no Hugepagesize in /proc/meminfo)";
  const available = () => readPool("free_hugepages") - readPool("resv_hugepages");
  if (available() >= HUGE_PAGES_NEEDED) return null;
  const nr = readPool("nr_hugepages");
  try {
    Deno.writeTextFileSync(`${POOL}/nr_hugepages`, `${nr + HUGE_PAGES_NEEDED}`);
  } catch (e) {
    return `the pool has ${available()} free huge pages and nr_hugepages cannot be raised: ${
      (e as Error).message
    }`;
  }
  const got = available();
  Deno.writeTextFileSync(`${POOL}/nr_hugepages`, `${nr}`);
  return got >= HUGE_PAGES_NEEDED ? null : `the kernel gave ${got} huge pages when nr_hugepages was raised`;
}

/** Runs a hugetlb test and puts nr_hugepages back as found, whatever the workload did. */
function keepingPool(body: () => Promise<void>): () => Promise<void> {
  return async () => {
    const nr = readPool("nr_hugepages");
    try {
      await body();
    } finally {
      if (readPool("nr_hugepages") !== nr) Deno.writeTextFileSync(`${POOL}/nr_hugepages`, `${nr}`);
    }
  };
}

const noHugePages = hugePagesUnavailable();
const HUGE: Case = { name: "mem_hugetlb" };

if (noHugePages !== null) {
  Deno.test({ name: `hugetlb memory: skipped, ${noHugePages}`, ignore: true, fn: () => {} });
} else {
  Deno.test(`${label(HUGE)} passes plain`, keepingPool(() => withWorkload(HUGE, async () => {})));
  Deno.test(
    `${label(HUGE)} passes after dump and restore`,
    keepingPool(() => withWorkload(HUGE, (w, images) => dumpRestore(w, images, HUGE))),
  );
  Deno.test(
    `${label(HUGE)} keeps running after dump --leave-running`,
    keepingPool(() =>
      withWorkload(HUGE, async (w, images) => {
        await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
        assert.ok(exists(`/proc/${w.pid}`));
      })
    ),
  );
  Deno.test(
    `${label(HUGE)} passes after 10 dump/restore cycles`,
    keepingPool(() =>
      withWorkload(HUGE, async (w, images) => {
        for (let i = 0; i < 10; i++) await dumpRestore(w, images, HUGE);
      })
    ),
  );
  Deno.test(
    `Debian's crit decodes every image of a dump of ${HUGE.name}`,
    keepingPool(() => critDecodesDump(HUGE)),
  );
  Deno.test(
    "hugetlb memory is private anonymous memory with MAP_HUGETLB and its size, as CRIU writes it",
    keepingPool(() =>
      inspectMm(HUGE, (mm) => {
        const huge = mm.vmas.filter((v) => v.flags & MAP.HUGETLB);
        assert.equal(huge.length, 1);
        const sizeBits = Math.log2(Number(/\d+/.exec(POOL!.split("/").at(-1)!)![0]) * 1024) << 26;
        assert.equal(huge[0]!.flags, MAP.PRIVATE | MAP.ANONYMOUS | MAP.HUGETLB | sizeBits);
        assert.equal(huge[0]!.status, VMA.REGULAR | VMA.ANON_PRIVATE);
      })
    ),
  );
  Deno.test(
    "a restore of hugetlb memory when the kernel has no free huge pages fails by name, leaving nothing",
    keepingPool(async () => {
      const w = await Workload.start("mem_hugetlb");
      const images = tempDir();
      const nr = readPool("nr_hugepages");
      try {
        await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
        await reap(w.pid);
        Deno.writeTextFileSync(`${POOL}/nr_hugepages`, "0");
        const r = await criu(["restore", "-D", images, "-d"]);
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, /maps 2 huge page\(s\) of \d+ kB at 0x[0-9a-f]+, but the kernel has 0 free/);
        assert.ok(!exists(`/proc/${w.pid}`), "the failed restore left the process behind");
      } finally {
        Deno.writeTextFileSync(`${POOL}/nr_hugepages`, `${nr}`);
        await w.kill();
        w.cleanup();
        Deno.removeSync(images, { recursive: true });
      }
    }),
  );
  Deno.test(
    "a dump of shared hugetlb memory is refused by name, and the process runs on",
    keepingPool(() =>
      withWorkload({ name: "mem_hugetlb", args: ["shared"] }, async (w, images) => {
        const r = await criu(["dump", "-t", `${w.pid}`, "-D", images]);
        assert.equal(r.code, 1, r.stderr);
        assert.match(
          r.stderr,
          new RegExp(`shared hugetlb memory at 0x[0-9a-f]+-0x[0-9a-f]+ of process ${w.pid}`),
        );
        assert.ok(exists(`/proc/${w.pid}`), "the refused dump killed the process");
        assert.ok(!/\s[tT]\s/.test(Deno.readTextFileSync(`/proc/${w.pid}/stat`).split(")")[1]!.slice(0, 3)));
      })
    ),
  );
}
