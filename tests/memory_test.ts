/**
 * Memory mappings of every kind a backing or an advice covers, each in a workload of its own that
 * checks its memory after restore, run through the standard matrix (plain, dump and restore,
 * --leave-running, ten cycles); and Debian's crit reads every image their dumps write.
 */
import assert from "node:assert/strict";
import { criu, criuOk, exists, reap, tempDir, Workload } from "./lib/harness.ts";
import { type Case, dumpRestore, label, registerMatrix, withWorkload } from "./lib/matrix.ts";

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
  const out = await new Deno.Command("/usr/bin/crit", { args, stdout: "piped", stderr: "piped" }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

for (const c of CASES) {
  Deno.test(`Debian's crit decodes every image of a dump of ${c.name}`, async () => {
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
  });
}

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
