/**
 * Memory mappings of every kind a backing or an advice covers, each in a workload of its own that
 * checks its memory after restore, run through the standard matrix (plain, dump and restore,
 * --leave-running, ten cycles); and Debian's crit reads every image their dumps write.
 */
import assert from "node:assert/strict";
import { criuOk, tempDir, Workload } from "./lib/harness.ts";
import { type Case, registerMatrix } from "./lib/matrix.ts";

const CASES: Case[] = [
  { name: "mem_advice" },
  { name: "mem_wipe" },
  { name: "mem_fileprot" },
  { name: "mem_shmoff" },
  { name: "mem_guard" },
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
