/**
 * Cgroups: a process and its child in cgroups of their own with properties set (v2 unified, v1
 * pids and cpu, as this machine mounts them), also in a cgroup namespace of their own, through
 * the usual matrix, also frozen by the test as a user would (the tasks come back frozen); the
 * --manage-cgroups modes; --cgroup-root; --freeze-cgroup; in a rootless-style user namespace
 * that owns the cgroup namespaces (NS_GET_USERNS, checked by the workload); crit's reading of
 * cgroup.img; a failed restore leaves no cgroup. Every test removes the cgroups it made.
 */
import assert from "node:assert/strict";
import { CRIU, criu, criuOk, descendants, exists, reap, tempDir } from "./lib/harness.ts";
import { dumpRestore, withWorkload } from "./lib/matrix.ts";
import { ourDump, ourRestore, UPSTREAM, upstreamDump, upstreamRestore } from "./lib/upstream.ts";
import { create } from "@bufbuild/protobuf";
import { criu_cg_mode, criu_optsSchema } from "../src/images/gen/rpc_pb.ts";
import { setupRequest } from "../src/rpc/options.ts";
import { rewriteRoots } from "../src/objects/cgroups_restore.ts";
import { cgroup_entrySchema } from "../src/images/gen/cgroup_pb.ts";
import { defaultOptions } from "../src/cli/options.ts";

const V2 = "/sys/fs/cgroup/unified";
const V1 = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpu"];
let serial = 0;

/** A cgroup name of this test alone. */
function uniqueName(): string {
  return `criu-ts-cg-${Deno.pid}-${++serial}`;
}

/** Every cgroup dir the workload `name` (or a restore of it) may have made, deepest first. */
function dirsOf(name: string): string[] {
  return [
    `${V2}/${name}/inner`,
    `${V2}/${name}/other/deep`,
    `${V2}/${name}/other`,
    `${V2}/${name}`,
    ...V1.map((h) => `${h}/${name}`),
  ];
}

/** Removes the cgroups (once their tasks are gone, which may take a moment). */
async function removeCgroups(dirs: string[]): Promise<void> {
  for (const dir of dirs) {
    for (let i = 0; exists(dir); i++) {
      try {
        Deno.removeSync(dir);
      } catch (e) {
        if (i > 200) throw new Error(`Cannot remove the cgroup ${dir}: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
}

/**
 * Runs `body` on a cgroup workload (plain or in a cgroup namespace, or the workload's modes given:
 * `ns`, `nested`) and removes its cgroups.
 */
async function withCgroups(
  ns: boolean | readonly string[],
  body: (pid: number, images: string, name: string) => Promise<void>,
  criuArgs: string[] = [],
): Promise<void> {
  const name = uniqueName();
  const modes = typeof ns === "boolean" ? (ns ? ["ns"] : []) : ns;
  try {
    await withWorkload(
      { name: "cgroup", args: [name, ...modes], criuArgs },
      (w, images) => body(w.pid, images, name),
    );
  } finally {
    await removeCgroups(dirsOf(name));
  }
}

/** Dumps the tree (killing it) and waits until its pids are free. */
async function dumpAndReap(pid: number, images: string, args: string[] = []): Promise<void> {
  const tree = [pid, ...descendants(pid)];
  await criuOk(["dump", "-t", `${pid}`, "-D", images, "-o", "dump.log", "-v4", ...args]);
  for (const p of tree) await reap(p);
}

function restoreArgs(images: string, ...more: string[]): string[] {
  return ["restore", "-D", images, "-d", "-o", "restore.log", "-v4", ...more];
}

function cgroupLine(pid: number, hierarchy: string): string | undefined {
  return Deno.readTextFileSync(`/proc/${pid}/cgroup`).split("\n").find((l) => l.split(":")[1] === hierarchy)
    ?.split(":")[2];
}

for (const ns of [false, true]) {
  const what = ns ? "in a cgroup namespace of its own" : "in cgroups of its own";
  Deno.test(`cgroup workload ${what} passes plain`, () => withCgroups(ns, async () => {}));
  Deno.test(`cgroup workload ${what} passes after dump and restore`, () =>
    withCgroups(ns, async (pid, images) => {
      await dumpAndReap(pid, images);
      await criuOk(restoreArgs(images));
    }));
  Deno.test(`cgroup workload ${what} keeps running after dump --leave-running`, () =>
    withCgroups(ns, async (pid, images) => {
      await criuOk(["dump", "-t", `${pid}`, "-D", images, "-R"]);
      assert.ok(exists(`${images}/cgroup.img`));
    }));
  Deno.test(`cgroup workload ${what} passes after 10 dump/restore cycles`, () =>
    withCgroups(ns, async (pid, images) => {
      for (let i = 0; i < 10; i++) {
        await dumpAndReap(pid, images);
        await criuOk(restoreArgs(images));
      }
    }));
  Deno.test(`cgroups removed after the dump are made again with their properties (${what})`, () =>
    withCgroups(ns, async (pid, images, name) => {
      await dumpAndReap(pid, images);
      await removeCgroups(dirsOf(name));
      await criuOk(restoreArgs(images));
      assert.ok(exists(`${V2}/${name}/other`));
    }));
}

// A child in a cgroup namespace of its own, below the root's cgroup namespace or criu's; with
// userns, both tasks in a user namespace of their own (criu's PID namespace): each cgroup
// namespace must come back owned by it, as the workload checks; with child-userns, the child's
// by the user namespace it made below.
for (
  const modes of [
    ["nested"],
    ["ns", "nested"],
    ["userns", "ns"],
    ["userns", "ns", "nested"],
    ["ns", "nested", "child-userns"],
    ["userns", "ns", "nested", "child-userns"],
  ]
) {
  const what = `with a child in a cgroup namespace of its own (${modes.join(" ")})`;
  Deno.test(`cgroup workload ${what} passes plain`, () => withCgroups(modes, async () => {}));
  Deno.test(`cgroup workload ${what} passes after dump and restore`, () =>
    withCgroups(modes, async (pid, images) => {
      await dumpAndReap(pid, images);
      await criuOk(restoreArgs(images));
    }));
  Deno.test(`cgroup workload ${what} keeps running after dump --leave-running`, () =>
    withCgroups(modes, async (pid, images) => {
      await criuOk(["dump", "-t", `${pid}`, "-D", images, "-R"]);
      assert.ok(exists(`${images}/cgroup.img`));
    }));
  Deno.test(`cgroup workload ${what} passes after 10 dump/restore cycles`, () =>
    withCgroups(modes, async (pid, images) => {
      for (let i = 0; i < 10; i++) {
        await dumpAndReap(pid, images);
        await criuOk(restoreArgs(images));
      }
    }));
}

Deno.test("crit decodes cgroup.img: the sets with their paths and namespace prefix, the dirs with their properties", () =>
  withCgroups(true, async (pid, images, name) => {
    await criuOk(["dump", "-t", `${pid}`, "-D", images, "-R"]);
    const out = await new Deno.Command("crit", { args: ["decode", "-i", `${images}/cgroup.img`] }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const image = JSON.parse(new TextDecoder().decode(out.stdout)).entries[0];
    const v2 = image.sets.flatMap((s: { ctls: { name: string; path: string; cgns_prefix?: number }[] }) =>
      s.ctls.filter((c) => c.name === "")
    );
    assert.deepEqual(v2.map((c: { path: string }) => c.path).sort(), [`/${name}/inner`, `/${name}/other`]);
    assert.ok(
      v2.every((c: { cgns_prefix?: number }) => c.cgns_prefix === name.length + 1),
      JSON.stringify(v2),
    );
    const pids = image.controllers.find((c: { cnames: string[] }) => c.cnames.includes("pids"));
    const head = pids.dirs.find((d: { dir_name: string }) => d.dir_name === name);
    assert.equal(head.properties.find((p: { name: string }) => p.name === "pids.max").value, "64");
    const core = await new Deno.Command("crit", { args: ["decode", "-i", `${images}/core-${pid}.img`] })
      .output();
    const tc = JSON.parse(new TextDecoder().decode(core.stdout)).entries[0].tc;
    assert.ok(image.sets.some((s: { id: number }) => s.id === tc.cg_set), `core's cg_set ${tc.cg_set}`);
  }));

Deno.test("--manage-cgroups soft leaves an existing cgroup's properties; props and full write them back", () =>
  withCgroups(false, async (pid, images, name) => {
    const pidsMax = `${V1[0]}/${name}/pids.max`;
    await dumpAndReap(pid, images);
    Deno.writeTextFileSync(pidsMax, "100");
    await criuOk(restoreArgs(images, "--manage-cgroups=soft"));
    assert.equal(Deno.readTextFileSync(pidsMax).trim(), "100");
    for (const mode of ["props", "full"]) {
      Deno.writeTextFileSync(pidsMax, "64");
      await dumpAndReap(pid, images);
      Deno.writeTextFileSync(pidsMax, "100");
      await criuOk(restoreArgs(images, `--manage-cgroups=${mode}`));
      assert.equal(Deno.readTextFileSync(pidsMax).trim(), "64", mode);
    }
  }));

Deno.test("--manage-cgroups none and props refuse a missing cgroup, strict an existing one; nothing is left", () =>
  withCgroups(false, async (pid, images, name) => {
    await dumpAndReap(pid, images);
    const r = await criu(restoreArgs(images, "--manage-cgroups=strict"));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /The cgroup \S+ exists already \(--manage-cgroups strict makes every one\)/);
    assert.ok(!exists(`/proc/${pid}`));
    await removeCgroups(dirsOf(name));
    for (const mode of ["none", "props"]) {
      const r = await criu(restoreArgs(images, `--manage-cgroups=${mode}`));
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        new RegExp(`The cgroup \\S+${name} does not exist \\(--manage-cgroups ${mode} makes none\\)`),
      );
      assert.ok(!exists(`/proc/${pid}`));
      assert.ok(!exists(`${V2}/${name}`));
    }
    await criuOk(restoreArgs(images, "--manage-cgroups=strict"));
  }));

Deno.test("--manage-cgroups ignore leaves the restored tasks in criu's cgroups", () =>
  withCgroups(false, async (pid, images, name) => {
    await dumpAndReap(pid, images);
    await criuOk(restoreArgs(images, "--manage-cgroups=ignore"));
    assert.equal(cgroupLine(pid, "pids"), cgroupLine(Deno.pid, "pids"));
    moveBack(pid, name);
  }));

/** Puts the workload back where it checks itself: NAME (v1, v2) and its child in NAME/other (v2). */
function moveBack(pid: number, name: string): void {
  for (const task of [pid, ...descendants(pid)]) {
    for (const h of V1) Deno.writeTextFileSync(`${h}/${name}/cgroup.procs`, `${task}`);
    Deno.writeTextFileSync(`${V2}/${name}${task === pid ? "" : "/other"}/cgroup.procs`, `${task}`);
  }
}

Deno.test("a restore that fails after making the cgroups removes them, and leaves no process", () =>
  withCgroups(true, async (pid, images, name) => {
    await dumpAndReap(pid, images);
    await removeCgroups(dirsOf(name));
    const r = await criu(restoreArgs(images, "--pidfile", "/proc/no-such-dir/pid"));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /pidfile/);
    assert.ok(!exists(`/proc/${pid}`));
    for (const dir of dirsOf(name)) assert.ok(!exists(dir), `${dir} was left behind`);
    await reap(pid);
    await criuOk(restoreArgs(images));
  }));

Deno.test("--cgroup-root puts the restored cgroups under another root", async () => {
  let moved = "";
  try {
    await withCgroups(false, async (pid, images, name) => {
      moved = `${name}-moved`;
      await dumpAndReap(pid, images);
      await criuOk(restoreArgs(images, "--cgroup-root", `/${moved}`));
      assert.equal(cgroupLine(pid, "pids"), `/${moved}`);
      assert.equal(cgroupLine(pid, ""), `/${moved}`);
      assert.equal(Deno.readTextFileSync(`${V1[0]}/${moved}/pids.max`).trim(), "64");
      assert.equal(cgroupLine(descendants(pid)[0]!, ""), `/${moved}/other`);
      moveBack(pid, name);
    });
  } finally {
    if (moved) await removeCgroups(dirsOf(moved));
  }
});

Deno.test("--freeze-cgroup freezes through cgroup.freeze and thaws after dump -R", () =>
  withCgroups(false, async (pid, images, name) => {
    const r = await criu([
      "dump",
      "-t",
      `${pid}`,
      "-D",
      images,
      "-R",
      "-v4",
      "--freeze-cgroup",
      `${V2}/${name}`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`Froze the cgroup ${V2}/${name}`));
    assert.equal(Deno.readTextFileSync(`${V2}/${name}/cgroup.freeze`).trim(), "0");
    assert.match(Deno.readTextFileSync(`${V2}/${name}/cgroup.events`), /^frozen 0$/m);
  }));

Deno.test("--freeze-cgroup: a dump that fails after freezing thaws the cgroup, and the tree runs on", () =>
  withCgroups(false, async (pid, images, name) => {
    const script = `${images}/../fail-post-dump-${name}.sh`;
    Deno.writeTextFileSync(script, '#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] && exit 1\nexit 0\n');
    Deno.chmodSync(script, 0o755);
    try {
      const r = await criu([
        "dump",
        "-t",
        `${pid}`,
        "-D",
        images,
        "--freeze-cgroup",
        `${V2}/${name}`,
        "--action-script",
        script,
      ]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(Deno.readTextFileSync(`${V2}/${name}/cgroup.freeze`).trim(), "0");
      assert.ok(!exists(`${images}/inventory.img`));
    } finally {
      Deno.removeSync(script);
    }
  }));

Deno.test("--freeze-cgroup with a cgroup v1 freezer (runc's on this machine): dump -R, then dump and restore", () =>
  withCgroups(false, async (pid, images, name) => {
    const freezer = `/sys/fs/cgroup/freezer/${name}`;
    Deno.mkdirSync(freezer);
    const before = cgroupLine(pid, "freezer");
    try {
      for (const task of [pid, ...descendants(pid)]) {
        Deno.writeTextFileSync(`${freezer}/cgroup.procs`, `${task}`);
      }
      // A process of the cgroup outside the tree is frozen and seized with it, then let go.
      const stranger = new Deno.Command("sleep", { args: ["60"], stdin: "null", stdout: "null" }).spawn();
      try {
        Deno.writeTextFileSync(`${freezer}/cgroup.procs`, `${stranger.pid}`);
        const r = await criu(["dump", "-t", `${pid}`, "-D", images, "-R", "-v4", "--freeze-cgroup", freezer]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr, new RegExp(`Froze the cgroup ${freezer}`));
        assert.match(r.stderr, new RegExp(`Seized 3 thread\\(s\\) of ${freezer} while it was frozen`));
        assert.equal(Deno.readTextFileSync(`${freezer}/freezer.state`).trim(), "THAWED");
        const status = Deno.readTextFileSync(`/proc/${stranger.pid}/status`);
        assert.match(status, /\nState:\tS/);
        assert.match(status, /\nTracerPid:\t0\n/);
      } finally {
        stranger.kill("SIGKILL");
        await stranger.status;
      }
      await dumpAndReap(pid, images, ["--freeze-cgroup", freezer]);
      await criuOk(restoreArgs(images));
      assert.equal(cgroupLine(pid, "freezer"), `/${name}`);
    } finally {
      for (const task of [pid, ...descendants(pid)]) {
        if (exists(`/proc/${task}`)) {
          Deno.writeTextFileSync(`/sys/fs/cgroup/freezer${before}/cgroup.procs`, `${task}`);
        }
      }
      await removeCgroups([freezer]);
    }
  }));

Deno.test("--freeze-cgroup with a v1 freezer frozen before the dump (containerd pauses first): dump -R, frozen after", () =>
  withCgroups(false, async (pid, images, name) => {
    const freezer = `/sys/fs/cgroup/freezer/${name}`;
    Deno.mkdirSync(freezer);
    const before = cgroupLine(pid, "freezer");
    const tree = [pid, ...descendants(pid)];
    const state = () => Deno.readTextFileSync(`${freezer}/freezer.state`).trim();
    try {
      for (const task of tree) Deno.writeTextFileSync(`${freezer}/cgroup.procs`, `${task}`);
      Deno.writeTextFileSync(`${freezer}/freezer.state`, "FROZEN");
      const deadline = Date.now() + 10_000;
      while (state() !== "FROZEN") {
        assert.ok(Date.now() < deadline, `the freezer did not freeze: ${state()}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      // A frozen thread never stops for ptrace: a criu that does not thaw the cgroup hangs here.
      const got = await new Deno.Command("/usr/bin/timeout", {
        args: ["60", CRIU, "dump", "-t", `${pid}`, "-D", images, "-R", "-v4", "--freeze-cgroup", freezer],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(got.stderr);
      assert.equal(got.code, 0, stderr);
      assert.match(stderr, new RegExp(`Froze the cgroup ${freezer} again, as it was before the dump`));
      assert.ok(exists(`${images}/inventory.img`));
      assert.equal(state(), "FROZEN", "the cgroup is frozen again, as its owner left it");
      for (const task of tree) {
        assert.match(
          Deno.readTextFileSync(`/proc/${task}/status`),
          /\nTracerPid:\t0\n/,
          `task ${task} let go`,
        );
      }
      Deno.writeTextFileSync(`${freezer}/freezer.state`, "THAWED");
    } finally {
      if (exists(`${freezer}/freezer.state`)) Deno.writeTextFileSync(`${freezer}/freezer.state`, "THAWED");
      for (const task of tree) {
        if (exists(`/proc/${task}`)) {
          Deno.writeTextFileSync(`/sys/fs/cgroup/freezer${before}/cgroup.procs`, `${task}`);
        }
      }
      await removeCgroups([freezer]);
    }
  }));

Deno.test("--freeze-cgroup of a directory that is no freezer cgroup is refused before any task is touched", () =>
  withCgroups(false, async (pid, images) => {
    const r = await criu(["dump", "-t", `${pid}`, "-D", images, "--freeze-cgroup", images]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /is not a freezer cgroup: it has neither cgroup.freeze \(v2\) nor freezer.state \(v1\)/,
    );
  }));

Deno.test("a bad --cgroup-props is refused with what was expected", async () => {
  const images = tempDir();
  try {
    const r = await criu([
      "dump",
      "-t",
      `${Deno.pid}`,
      "-D",
      images,
      "--cgroup-props",
      '"cpu":\n - "strategy": "swap"',
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--cgroup-props: expected strategy "merge" or "replace" for cpu, found "swap"/);
  } finally {
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("--cgroup-props replaces a controller's saved properties; --cgroup-dump-controller limits the hierarchies", () =>
  withCgroups(false, async (pid, images) => {
    await criuOk([
      "dump",
      "-t",
      `${pid}`,
      "-D",
      images,
      "-R",
      "--cgroup-props",
      '"pids":\n - "strategy": "replace"\n - "properties": ["pids.current"]\n',
      "--cgroup-dump-controller",
      "pids",
    ]);
    const out = await new Deno.Command("crit", { args: ["decode", "-i", `${images}/cgroup.img`] }).output();
    const image = JSON.parse(new TextDecoder().decode(out.stdout)).entries[0];
    assert.deepEqual(image.controllers.map((c: { cnames: string[] }) => c.cnames), [["pids"]]);
    const names = image.controllers[0].dirs[0].properties.map((p: { name: string }) => p.name);
    assert.ok(names.includes("pids.current") && !names.includes("pids.max"), names.join(" "));
  }));

Deno.test("RPC: the cgroup fields fill the same options as the command line", () => {
  const request = (kind: "dump" | "restore", init: Parameters<typeof create<typeof criu_optsSchema>>[1]) =>
    setupRequest(kind, create(criu_optsSchema, { imagesDirFd: -1, imagesDir: "/tmp", ...init }), {
      base: defaultOptions(),
      peer: { pid: Deno.pid, uid: 0, gid: 0 },
      mode: "swrk",
    }).options;
  const dump = request("dump", {
    pid: 1,
    freezeCgroup: "/sys/fs/cgroup/unified/x",
    cgroupProps: '"pids":',
    cgroupPropsFile: "/p.yaml",
    cgroupDumpController: ["pids", ""],
    cgroupYard: "/yard",
  });
  assert.deepEqual(
    [dump.freezeCgroup, dump.cgroupProps, dump.cgroupPropsFile, dump.cgroupDumpControllers, dump.cgroupYard],
    ["/sys/fs/cgroup/unified/x", '"pids":', "/p.yaml", ["pids", ""], "/yard"],
  );
  const restore = request("restore", {
    manageCgroups: true,
    manageCgroupsMode: criu_cg_mode.STRICT,
    cgRoot: [{ ctrl: "pids", path: "/a" }, { path: "/b" }],
  });
  assert.equal(restore.manageCgroups, "strict");
  assert.deepEqual(restore.cgroupRoots, [{ controller: "pids", path: "/a" }, { path: "/b" }]);
  assert.equal(request("restore", { manageCgroups: false }).manageCgroups, "ignore");
  assert.equal(request("restore", { manageCgroupsMode: criu_cg_mode.DEFAULT }).manageCgroups, "soft");
});

/** The pids cgroup of a thread of `pid`, as /proc shows it. */
function pidsCgroupOf(pid: number, tid: number): string {
  return Deno.readTextFileSync(`/proc/${pid}/task/${tid}/cgroup`).split("\n")
    .find((l) => l.split(":")[1] === "pids")!.split(":")[2]!;
}

for (const [what, criuArgs] of [["", []], [" (--manage-cgroups full)", ["--manage-cgroups=full"]]] as const) {
  Deno.test(`a thread in other cgroups than its leader's comes back in them, 3 cycles${what}`, async () => {
    const name = uniqueName();
    const dir = `${V1[0]}/${name}`;
    Deno.mkdirSync(dir);
    try {
      await withWorkload({ name: "threads", args: ["2"] }, async (w, images) => {
        const thread = [...Deno.readDirSync(`/proc/${w.pid}/task`)].map((e) => Number(e.name)).find((t) =>
          t !== w.pid
        )!;
        const leader = pidsCgroupOf(w.pid, w.pid);
        Deno.writeTextFileSync(`${dir}/tasks`, `${thread}`);
        for (let i = 0; i < 3; i++) {
          await dumpRestore(w, images, { name: "threads", criuArgs: [...criuArgs] });
          assert.equal(pidsCgroupOf(w.pid, thread), `/${name}`, `cycle ${i}: the thread's pids cgroup`);
          assert.equal(pidsCgroupOf(w.pid, w.pid), leader, `cycle ${i}: the leader's pids cgroup`);
        }
        // Out again, so that the cgroup can go.
        Deno.writeTextFileSync(`${V1[0]}${leader}/tasks`, `${thread}`);
      });
    } finally {
      await removeCgroups([dir]);
    }
  });
}

for (
  const [what, dump, restore] of [
    ["CRIU 4.x restores our dump of", () => ourDump(), () => upstreamRestore()],
    ["we restore CRIU 4.x's dump of", () => upstreamDump(), () => ourRestore()],
  ] as const
) {
  Deno.test({
    name: `${what} a thread in other cgroups than its leader's`,
    ignore: !UPSTREAM,
    fn: async () => {
      const name = uniqueName();
      const dir = `${V1[0]}/${name}`;
      Deno.mkdirSync(dir);
      try {
        await withWorkload({ name: "threads", args: ["2"] }, async (w, images) => {
          const thread = [...Deno.readDirSync(`/proc/${w.pid}/task`)].map((e) => Number(e.name)).find((t) =>
            t !== w.pid
          )!;
          const leader = pidsCgroupOf(w.pid, w.pid);
          Deno.writeTextFileSync(`${dir}/tasks`, `${thread}`);
          await dump()(w.pid, images);
          await reap(w.pid);
          await restore()(images);
          assert.equal(pidsCgroupOf(w.pid, thread), `/${name}`, "the thread's pids cgroup");
          assert.equal(pidsCgroupOf(w.pid, w.pid), leader, "the leader's pids cgroup");
          Deno.writeTextFileSync(`${V1[0]}${leader}/tasks`, `${thread}`);
        });
      } finally {
        await removeCgroups([dir]);
      }
    },
  });
}

/** The v2 cgroup of a thread of `pid`, as /proc shows it. */
function unifiedCgroupOf(pid: number, tid: number): string {
  return Deno.readTextFileSync(`/proc/${pid}/task/${tid}/cgroup`).split("\n")
    .find((l) => l.startsWith("0::"))!.slice(3);
}

Deno.test("a thread in a v2 threaded cgroup of its process's subtree comes back in it, 3 cycles", async () => {
  const name = uniqueName();
  const top = `${V2}/${name}`;
  Deno.mkdirSync(top);
  Deno.mkdirSync(`${top}/t`);
  Deno.writeTextFileSync(`${top}/t/cgroup.type`, "threaded");
  try {
    await withWorkload({ name: "threads", args: ["2"] }, async (w, images) => {
      const thread = [...Deno.readDirSync(`/proc/${w.pid}/task`)].map((e) => Number(e.name)).find((t) =>
        t !== w.pid
      )!;
      const before = unifiedCgroupOf(w.pid, w.pid);
      Deno.writeTextFileSync(`${top}/cgroup.procs`, `${w.pid}`);
      Deno.writeTextFileSync(`${top}/t/cgroup.threads`, `${thread}`);
      try {
        for (let i = 0; i < 3; i++) {
          await dumpRestore(w, images, { name: "threads" });
          assert.equal(unifiedCgroupOf(w.pid, thread), `/${name}/t`, `cycle ${i}: the thread's cgroup`);
          assert.equal(unifiedCgroupOf(w.pid, w.pid), `/${name}`, `cycle ${i}: the leader's cgroup`);
          assert.equal(Deno.readTextFileSync(`${top}/t/cgroup.type`).trim(), "threaded");
        }
      } finally {
        Deno.writeTextFileSync(`${V2}${before}/cgroup.procs`, `${w.pid}`);
      }
    });
  } finally {
    await removeCgroups([`${top}/t`, top]);
  }
});

Deno.test("--cgroup-yard: the hierarchies are read and made through the yard's mounts", () =>
  withCgroups(false, async (pid, images, name) => {
    const yard = tempDir("criu-ts-cgyard-");
    const mounted: string[] = [];
    const run = async (cmd: string, args: string[]) => {
      const out = await new Deno.Command(cmd, { args, stderr: "piped" }).output();
      assert.equal(out.code, 0, `${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
    };
    try {
      // Every hierarchy criu is in, named as CRIU names them in a yard.
      for (const line of Deno.readTextFileSync("/proc/self/cgroup").trim().split("\n")) {
        const hierarchy = line.split(":")[1]!;
        const dir = hierarchy === "" ? "unified" : hierarchy.replace(/^name=/, "");
        const options = hierarchy.startsWith("name=") ? `none,${hierarchy}` : hierarchy;
        Deno.mkdirSync(`${yard}/${dir}`);
        const type = hierarchy === "" ? ["-t", "cgroup2"] : ["-t", "cgroup", "-o", options];
        await run("mount", [...type, "none", `${yard}/${dir}`]);
        mounted.push(`${yard}/${dir}`);
      }
      await dumpAndReap(pid, images, ["--cgroup-yard", yard]);
      await removeCgroups(dirsOf(name));
      await criuOk(restoreArgs(images, "--cgroup-yard", yard));
      assert.equal(Deno.readTextFileSync(`${yard}/pids/${name}/pids.max`).trim(), "64");
      assert.ok(Deno.readTextFileSync(`${images}/restore.log`).includes(`Made cgroup ${yard}/pids/${name}`));
    } finally {
      for (const m of mounted.reverse()) await run("umount", [m]);
      Deno.removeSync(yard, { recursive: true });
    }
  }));

Deno.test("rewriteRoots() moves heads and set paths under --cgroup-root, by hierarchy, as CRIU does", () => {
  const image = create(cgroup_entrySchema, {
    sets: [{
      id: 2,
      ctls: [
        { name: "", path: "/a/inner", cgnsPrefix: 2 },
        { name: "pids", path: "/ab/x" },
        { name: "cpu", path: "/c" },
      ],
    }],
    controllers: [
      { cnames: [""], dirs: [{ dirName: "a/inner" }] },
      { cnames: ["pids"], dirs: [{ dirName: "ab/x" }, { dirName: "a" }] },
      { cnames: ["cpu"], dirs: [{ dirName: "" }] },
    ],
  });
  rewriteRoots(image, [{ controller: "pids", path: "/p" }, { path: "/all" }]);
  // v2: below the namespace's root; pids: its own root, "a" does not take "/ab"; cpu: a root head.
  assert.deepEqual(image.sets[0]!.ctls.map((m) => [m.path, m.cgnsPrefix]), [
    ["/all/inner", 4],
    ["/p", 0],
    ["/all/c", 0],
  ]);
  assert.deepEqual(image.controllers.map((c) => c.dirs.map((d) => d.dirName)), [
    ["all/inner"],
    ["p", "a"],
    ["all"],
  ]);
});

// A cgroup (v2) frozen by its user, not by --freeze-cgroup: the tasks must come back frozen, and
// run on as before once thawed (CRIU 4.2 hangs on such a tree, and with --freeze-cgroup thaws it
// for good: see cgroup_freezer.ts).

function freezeState(name: string): { freeze: string; frozen: boolean; populated: boolean } {
  const events = Deno.readTextFileSync(`${V2}/${name}/cgroup.events`);
  return {
    freeze: Deno.readTextFileSync(`${V2}/${name}/cgroup.freeze`).trim(),
    frozen: /^frozen 1$/m.test(events),
    populated: /^populated 1$/m.test(events),
  };
}

/** Waits until the kernel says the cgroup `name` (v2) is frozen with its tasks in it. */
async function waitFrozen(name: string): Promise<void> {
  for (let i = 0; !freezeState(name).frozen; i++) {
    if (i > 500) assert.fail(`${V2}/${name} did not freeze: ${JSON.stringify(freezeState(name))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(freezeState(name), { freeze: "1", frozen: true, populated: true });
}

/** The cgroup workload, its v2 cgroup frozen by the test (as a user would) around `body`, thawed after. */
function withFrozenCgroup(body: (pid: number, images: string, name: string) => Promise<void>): Promise<void> {
  return withCgroups(false, async (pid, images, name) => {
    Deno.writeTextFileSync(`${V2}/${name}/cgroup.freeze`, "1");
    try {
      await waitFrozen(name);
      await body(pid, images, name);
      await waitFrozen(name);
    } finally {
      Deno.writeTextFileSync(`${V2}/${name}/cgroup.freeze`, "0");
    }
  });
}

/** cgroup.freeze as cgroup.img saves it for `dir` (the v2 hierarchy's directory of that name). */
function savedFreeze(images: string, dirName: string): string | undefined {
  const out = new Deno.Command("crit", { args: ["decode", "-i", `${images}/cgroup.img`], stdout: "piped" })
    .outputSync();
  const image = JSON.parse(new TextDecoder().decode(out.stdout));
  type Dir = { dir_name: string; properties?: { name: string; value: string }[]; children?: Dir[] };
  const find = (dirs: Dir[], path: string[]): Dir | undefined => {
    for (const d of dirs) {
      const parts = d.dir_name.split("/");
      if (parts.every((p, i) => path[i] === p)) {
        return parts.length === path.length ? d : find(d.children ?? [], path.slice(parts.length));
      }
    }
    return undefined;
  };
  const v2 = image.entries[0].controllers.find((c: { cnames: string[] }) =>
    c.cnames.length === 1 && c.cnames[0] === ""
  );
  return find(v2.dirs, dirName.split("/"))?.properties?.find((p) => p.name === "cgroup.freeze")?.value;
}

Deno.test("cgroup workload in a frozen cgroup passes plain (frozen, then thawed)", () =>
  withFrozenCgroup(async () => {}));

Deno.test("cgroup workload in a frozen cgroup comes back frozen after dump and restore", () =>
  withFrozenCgroup(async (pid, images, name) => {
    await dumpAndReap(pid, images);
    assert.equal(savedFreeze(images, name), "1");
    assert.equal(savedFreeze(images, `${name}/inner`), "0");
    await criuOk(restoreArgs(images));
    assert.ok(exists(`/proc/${pid}`));
  }));

Deno.test("cgroup workload in a frozen cgroup stays frozen after dump --leave-running", () =>
  withFrozenCgroup(async (pid, images, name) => {
    await criuOk(["dump", "-t", `${pid}`, "-D", images, "-R"]);
    assert.equal(savedFreeze(images, name), "1");
  }));

Deno.test("cgroup workload in a frozen cgroup comes back frozen after 10 dump/restore cycles", () =>
  withFrozenCgroup(async (pid, images, name) => {
    for (let i = 0; i < 10; i++) {
      await dumpAndReap(pid, images);
      await criuOk(restoreArgs(images));
      await waitFrozen(name);
    }
  }));

Deno.test("a frozen cgroup removed after the dump is made again frozen", () =>
  withFrozenCgroup(async (pid, images, name) => {
    await dumpAndReap(pid, images);
    await removeCgroups(dirsOf(name));
    await criuOk(restoreArgs(images));
    assert.ok(exists(`/proc/${pid}`));
  }));

Deno.test("--freeze-cgroup of a cgroup its user froze: the dump saves it frozen and leaves it frozen", () =>
  withFrozenCgroup(async (pid, images, name) => {
    await criuOk(["dump", "-t", `${pid}`, "-D", images, "-R", "--freeze-cgroup", `${V2}/${name}`]);
    assert.equal(savedFreeze(images, name), "1");
    await dumpAndReap(pid, images, ["--freeze-cgroup", `${V2}/${name}`]);
    await criuOk(restoreArgs(images));
  }));

Deno.test("a failed restore into a frozen cgroup leaves it frozen, and a failed dump leaves the tree frozen", () =>
  withFrozenCgroup(async (pid, images, name) => {
    // The dump fails late (post-dump): the tree is let go frozen, as it was.
    const script = `${images}/../fail-post-dump-${name}.sh`;
    Deno.writeTextFileSync(script, '#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] && exit 1\nexit 0\n');
    Deno.chmodSync(script, 0o755);
    try {
      const r = await criu(["dump", "-t", `${pid}`, "-D", images, "--action-script", script]);
      assert.equal(r.code, 1, r.stderr);
      assert.ok(exists(`/proc/${pid}`));
    } finally {
      Deno.removeSync(script);
    }
    await waitFrozen(name);
    // The restore fails late (pidfile): the cgroup it found frozen (and empty) is frozen again.
    await dumpAndReap(pid, images);
    const r = await criu(restoreArgs(images, "--pidfile", "/proc/no-such-dir/pid"));
    assert.equal(r.code, 1);
    assert.ok(!exists(`/proc/${pid}`));
    assert.equal(freezeState(name).freeze, "1");
    await reap(pid);
    await criuOk(restoreArgs(images));
  }));
