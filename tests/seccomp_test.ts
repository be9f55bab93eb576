/**
 * Seccomp: strict mode and filters (stacked, shared by threads through TSYNC or not), dumped into
 * seccomp.img and the threads' cores as CRIU writes them, and installed again (a leader's before
 * its credentials, as CRIU does; a thread's own last): the workload checks that each filter still answers as before (an errno, the
 * newest filter's errno winning, a kill) and that /proc/PID/status says the same.
 */
import assert from "node:assert/strict";
import { criu, criuOk, exists, reap } from "./lib/harness.ts";
import { debianCrit } from "./lib/tools.ts";
import { type Case, registerMatrix, withWorkload } from "./lib/matrix.ts";
import { ImageDir } from "../src/images/dir.ts";
import { KINDS } from "../src/images/kinds.ts";
import type { core_entry } from "../src/images/gen/core_pb.ts";

const cases: Case[] = [
  { name: "seccomp" },
  { name: "seccomp", args: ["threads"] },
  { name: "seccomp", args: ["mixed"] },
  { name: "seccomp", args: ["strict"] },
  // Filters installed with CAP_SYS_ADMIN, which the task then drops (a runc container's init).
  { name: "seccomp", args: ["nocaps"] },
];

registerMatrix(cases);

/** Debian's crit's JSON of one image of `dir` (an independent reader of CRIU's format). */
async function decode(dir: string, image: string): Promise<{ entries: Record<string, unknown>[] }> {
  const out = await new Deno.Command(debianCrit(), {
    args: ["decode", "-i", `${dir}/${image}`],
    stdout: "piped",
  })
    .output();
  assert.equal(out.code, 0, `crit cannot decode ${image}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("seccomp.img and the cores hold the filters as CRIU writes them (crit decode)", () =>
  withWorkload({ name: "seccomp", args: ["mixed"] }, async (w, images) => {
    const tids = [...Deno.readDirSync(`/proc/${w.pid}/task`)].map((e) => Number(e.name)).sort((a, b) =>
      a - b
    );
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const filters = (await decode(images, "seccomp.img")).entries[0]!.seccomp_filters as {
      filter: string;
      prev?: number;
      flags?: number;
    }[];
    // The main thread has two filters, each other thread one: five in all, none shared (mixed).
    assert.equal(filters.length, 2 + (tids.length - 1));
    for (const f of filters) assert.equal(atob(f.filter.replace(/\n/g, "")).length % 8, 0);
    for (const tid of tids) {
      const core = (await decode(images, `core-${tid}.img`)).entries[0]!.thread_core as Record<
        string,
        unknown
      >;
      assert.equal(core.seccomp_mode, "filter", `thread ${tid}`);
      // The core names the oldest filter; prev leads to the newer ones, ending at one without.
      let at = core.seccomp_filter as number;
      let chain = 1;
      while (filters[at]!.prev !== undefined) {
        at = filters[at]!.prev!;
        chain++;
      }
      assert.equal(chain, tid === w.pid ? 2 : 1, `thread ${tid}'s chain`);
    }
  }));

Deno.test("threads sharing every filter keep them on the leader alone, flagged TSYNC, as CRIU", () =>
  withWorkload({ name: "seccomp", args: ["threads"] }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const filters = (await decode(images, "seccomp.img")).entries[0]!.seccomp_filters as { flags?: number }[];
    assert.equal(filters.length, 2);
    assert.ok(filters.every((f) => ((f.flags ?? 0) & 1) === 1), "every filter is flagged TSYNC");
    const leader = (await decode(images, `core-${w.pid}.img`)).entries[0]!.thread_core as Record<
      string,
      unknown
    >;
    assert.equal(leader.seccomp_mode, "filter");
    for (const e of Deno.readDirSync(images)) {
      const m = /^core-(\d+)\.img$/.exec(e.name);
      if (!m || Number(m[1]) === w.pid) continue;
      const core = (await decode(images, e.name)).entries[0]!.thread_core as Record<string, unknown>;
      assert.ok(core.seccomp_mode === undefined || core.seccomp_mode === "disabled", `thread ${m[1]}`);
    }
  }));

Deno.test("a core naming a filter seccomp.img does not have is refused before anything is restored", () =>
  withWorkload({ name: "seccomp" }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images]);
    await reap(w.pid);
    const dir = new ImageDir(images);
    const [core] = dir.read<core_entry>(KINDS.CORE, w.pid);
    const good = core!.threadCore!.seccompFilter;
    core!.threadCore!.seccompFilter = 99;
    dir.write(KINDS.CORE, w.pid, [core!]);
    const r = await criu(["restore", "-D", images, "-d", "-o", "restore.log"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Refusing the images: thread \d+ names filter 99 of seccomp\.img, which has 2/);
    assert.ok(!exists(`/proc/${w.pid}`), "a refused restore left a process");
    core!.threadCore!.seccompFilter = good;
    dir.write(KINDS.CORE, w.pid, [core!]);
    await criuOk(["restore", "-D", images, "-d", "-o", "restore.log"]);
  }));
