/**
 * Images in CRIU's own conventions, both ways: what our dump writes is what CRIU 4.x writes where
 * CRIU's restore depends on it, and our restore takes images as CRIU 4.x writes them. The images
 * CRIU writes are made here by rewriting ours where the two differ, so the test runs without CRIU;
 * with CRIU_UPSTREAM pointing at a CRIU 4.x binary, the last tests also cross-check with it.
 */
import assert from "node:assert/strict";
import { clearField, create } from "@bufbuild/protobuf";
import { ImageDir } from "../src/images/dir.ts";
import { KINDS } from "../src/images/kinds.ts";
import {
  type core_entry,
  core_entrySchema,
  task_core_entrySchema,
  thread_core_entrySchema,
} from "../src/images/gen/core_pb.ts";
import { vma_entrySchema } from "../src/images/gen/vma_pb.ts";
import type { inventory_entry } from "../src/images/gen/inventory_pb.ts";
import type { mm_entry } from "../src/images/gen/mm_pb.ts";
import type { pagemap_entry, pagemap_head } from "../src/images/gen/pagemap_pb.ts";
import { type pstree_entry, pstree_entrySchema } from "../src/images/gen/pstree_pb.ts";
import type { task_kobj_ids_entry } from "../src/images/gen/core_pb.ts";
import { fd_types, type file_entry, file_entrySchema } from "../src/images/gen/fdinfo_pb.ts";
import {
  memfd_file_entrySchema,
  type memfd_inode_entry,
  memfd_inode_entrySchema,
} from "../src/images/gen/memfd_pb.ts";
import { fown_entrySchema } from "../src/images/gen/fown_pb.ts";
import { PAGE_SIZE, PE, VMA } from "../src/objects/memory.ts";
import { MAP } from "../ffi/syscalls.ts";
import { criuOk } from "./lib/harness.ts";
import { crossRoundTrip, ourDump, ourRestore, registerCross } from "./lib/upstream.ts";
import { withWorkload } from "./lib/matrix.ts";

/** task_state of a zombie in CRIU's images (TASK_DEAD). */
const TASK_DEAD = 2;

/** Starts `name`, dumps it with --leave-running, lets `check` read the images, expects PASS. */
function inspectDump(name: string, args: string[], check: (dir: ImageDir, root: number) => void) {
  return withWorkload({ name, args }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    check(new ImageDir(images), w.pid);
  });
}

/** Our dump, rewritten by `rewrite` into CRIU's way of writing it, then our restore. */
function restoreRewritten(name: string, args: string[], rewrite: (dir: ImageDir) => void) {
  return crossRoundTrip({ name, args }, ourDump(), (dir) => {
    rewrite(new ImageDir(dir));
    return ourRestore()(dir);
  });
}

function pstree(dir: ImageDir): pstree_entry[] {
  return dir.read<pstree_entry>(KINDS.PSTREE);
}

Deno.test("a tree's images are as CRIU writes them: no helper entries, zombies dead without ids, criu's own root_ids", () =>
  inspectDump("tree", [], (dir) => {
    const tasks = pstree(dir);
    const cores = new Map(tasks.map((t) => [t.pid, dir.read<core_entry>(KINDS.CORE, t.pid)[0]!]));
    // The group whose leader was killed gets its helper from the restore, not from the images.
    for (const t of tasks) {
      assert.ok(cores.get(t.pid)!.tc!.taskState <= 3, `task ${t.pid} has a CRIU task_state`);
    }
    const zombies = tasks.filter((t) => cores.get(t.pid)!.tc!.taskState === TASK_DEAD);
    assert.equal(zombies.length, 1, "the tree has one zombie");
    assert.ok(!dir.has(KINDS.IDS, zombies[0]!.pid), "a zombie has no ids image");
    const [inventory] = dir.read<inventory_entry>(KINDS.INVENTORY);
    const live = tasks.filter((t) => !zombies.includes(t));
    const ids = live.map((t) => dir.read<task_kobj_ids_entry>(KINDS.IDS, t.pid)[0]!);
    // CRIU's restore refuses a root whose fd table is criu's own.
    for (const i of ids) assert.notEqual(i.filesId, inventory!.rootIds!.filesId);
    assert.equal(ids[0]!.pidNsId, inventory!.rootIds!.pidNsId, "criu and the tree share the PID namespace");
  }));

Deno.test("memory images are as CRIU writes them: one vvar area, the vsyscall area, the vDSO's pages, a short auxv", () =>
  inspectDump("counter", [], (dir, pid) => {
    const [mm] = dir.read<mm_entry>(KINDS.MM, pid);
    const vvar = mm!.vmas.filter((v) => v.status & VMA.VVAR);
    const vdso = mm!.vmas.filter((v) => v.status & VMA.VDSO);
    const vsyscall = mm!.vmas.filter((v) => v.status & VMA.VSYSCALL);
    assert.equal(vvar.length, 1, "[vvar] and [vvar_vclock] are one area");
    assert.equal(vdso.length, 1);
    assert.equal(vsyscall.length, 1);
    assert.equal(vsyscall[0]!.status, VMA.VSYSCALL | VMA.ANON_PRIVATE);
    const [, ...runs] = dir.read<pagemap_head | pagemap_entry>(KINDS.PAGEMAP, pid) as pagemap_entry[];
    const vdsoPages = runs.filter((r) => r.vaddr >= vdso[0]!.start && r.vaddr < vdso[0]!.end)
      .reduce((n, r) => n + Number(r.nrPages), 0);
    assert.equal(vdsoPages, Number(vdso[0]!.end - vdso[0]!.start) / PAGE_SIZE, "the whole vDSO is stored");
    assert.ok(mm!.mmSavedAuxv.length <= 44, `auxv has ${mm!.mmSavedAuxv.length} words`);
  }));

Deno.test("an interrupted syscall is stored restarted, as CRIU stores it", () =>
  inspectDump("waiter", [], (dir, pid) => {
    const regs = dir.read<core_entry>(KINDS.CORE, pid)[0]!.threadInfo!.gpregs!;
    assert.equal(regs.origAx, 61n, "the parent is in wait4");
    assert.equal(regs.ax, regs.origAx, "ax holds the call again, not -ERESTARTSYS");
  }));

Deno.test("POSIX timers are stored in ascending id order, as CRIU stores them", () =>
  inspectDump("signals", [], (dir, pid) => {
    const posix = dir.read<core_entry>(KINDS.CORE, pid)[0]!.tc!.timers!.posix;
    assert.ok(posix.length >= 2);
    assert.deepEqual(posix.map((t) => t.itId), posix.map((t) => t.itId).sort((a, b) => a - b));
  }));

Deno.test("restore takes CRIU's way of writing signals: the leader's mask in the task part only, pages also marked lazy, timers in any order", () =>
  restoreRewritten("signals", [], (dir) => {
    const [root] = pstree(dir);
    const [core] = dir.read<core_entry>(KINDS.CORE, root!.pid);
    core!.tc!.blkSigset = core!.threadCore!.blkSigset;
    clearField(core!.threadCore!, thread_core_entrySchema.field.blkSigset);
    core!.tc!.timers!.posix.reverse();
    dir.write(KINDS.CORE, root!.pid, [core!]);
    const [head, ...runs] = dir.read<pagemap_head | pagemap_entry>(KINDS.PAGEMAP, root!.pid);
    for (const r of runs as pagemap_entry[]) r.flags = PE.LAZY | PE.PRESENT;
    dir.write(KINDS.PAGEMAP, root!.pid, [head!, ...runs]);
  }));

Deno.test("restore takes CRIU's way of writing a tree: zombies without threads, shared anonymous memory as a memfd", () =>
  restoreRewritten("tree", [], (dir) => {
    const tasks = pstree(dir);
    for (const t of tasks) {
      if (dir.read<core_entry>(KINDS.CORE, t.pid)[0]!.tc!.taskState === TASK_DEAD) t.threads = [0];
    }
    dir.write(KINDS.PSTREE, undefined, tasks.map((t) => create(pstree_entrySchema, t)));
    sharedAnonAsMemfd(dir, tasks);
  }));

/**
 * CRIU 4.x on this kernel records MAP_SHARED anonymous memory as a memfd named "/dev/zero": a
 * MEMFD file, its inode in memfd.img with the shmid of the contents.
 */
function sharedAnonAsMemfd(dir: ImageDir, tasks: readonly pstree_entry[]): void {
  const files = dir.read<file_entry>(KINDS.FILES);
  const fileOf = new Map<bigint, number>();
  const inodes: memfd_inode_entry[] = [];
  for (const t of tasks) {
    if (!dir.has(KINDS.MM, t.pid)) continue;
    const [mm] = dir.read<mm_entry>(KINDS.MM, t.pid);
    for (const v of mm!.vmas.filter((x) => x.status & VMA.ANON_SHARED)) {
      let id = fileOf.get(v.shmid);
      if (id === undefined) {
        id = files.length + 1;
        fileOf.set(v.shmid, id);
        const inodeId: number = inodes.length + 1;
        const fown = create(fown_entrySchema, { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 });
        files.push(create(file_entrySchema, {
          type: fd_types.MEMFD,
          id,
          memfd: create(memfd_file_entrySchema, { id, flags: 2, pos: 0n, fown, inodeId }),
        }));
        inodes.push(create(memfd_inode_entrySchema, {
          name: "/dev/zero",
          uid: 0,
          gid: 0,
          size: v.end - v.start,
          shmid: Number(v.shmid),
          seals: 1, // F_SEAL_SEAL
          inodeId: BigInt(inodeId),
          mode: 0o100777,
        }));
      }
      v.status = (v.status & ~VMA.ANON_SHARED) | VMA.FILE_SHARED | VMA.MEMFD;
      v.flags &= ~MAP.ANONYMOUS;
      v.shmid = BigInt(id);
    }
    dir.write(KINDS.MM, t.pid, [mm!]);
  }
  assert.ok(inodes.length > 0, "the tree shares anonymous memory");
  dir.write(KINDS.FILES, undefined, files);
  dir.write(KINDS.MEMFD_INODE, undefined, inodes);
}

// criu-ts wrote some things its own way before it followed CRIU; a restore still takes them.
const OLD_ZOMBIE = 6;
const OLD_HELPER = 0x80;
const ERESTARTSYS = 512n;

Deno.test("restore takes a tree as criu-ts wrote it before: zombie state 6, a helper entry for a group whose leader is gone", () =>
  restoreRewritten("tree", [], (dir) => {
    const tasks = pstree(dir);
    for (const t of tasks) {
      const [core] = dir.read<core_entry>(KINDS.CORE, t.pid);
      if (core!.tc!.taskState !== TASK_DEAD) continue;
      core!.tc!.taskState = OLD_ZOMBIE;
      dir.write(KINDS.CORE, t.pid, [core!]);
    }
    const pids = new Set(tasks.map((t) => t.pid));
    const orphan = tasks.find((t) => !pids.has(t.pgid))!;
    const helper = create(pstree_entrySchema, {
      pid: orphan.pgid,
      ppid: orphan.sid,
      pgid: orphan.pgid,
      sid: orphan.sid,
      threads: [orphan.pgid],
    });
    dir.write(KINDS.PSTREE, undefined, [...tasks, helper]);
    const [root] = dir.read<core_entry>(KINDS.CORE, tasks[0]!.pid);
    const tc = create(task_core_entrySchema, {
      taskState: OLD_HELPER,
      exitCode: 0,
      personality: 0,
      flags: 0,
      blkSigset: 0n,
      comm: "",
    });
    dir.write(KINDS.CORE, orphan.pgid, [create(core_entrySchema, { mtype: root!.mtype, tc })]);
  }));

Deno.test("restore takes registers and areas as criu-ts wrote them before: -ERESTARTSYS as the kernel left it, [vvar] and [vvar_vclock] apart", () =>
  restoreRewritten("waiter", [], (dir) => {
    const [root] = pstree(dir);
    const [core] = dir.read<core_entry>(KINDS.CORE, root!.pid);
    const regs = core!.threadInfo!.gpregs!;
    assert.equal(regs.ax, regs.origAx, "stored restarted");
    regs.ax = BigInt.asUintN(64, -ERESTARTSYS);
    regs.ip += 2n;
    dir.write(KINDS.CORE, root!.pid, [core!]);
    const [mm] = dir.read<mm_entry>(KINDS.MM, root!.pid);
    const vvar = mm!.vmas.find((v) => v.status & VMA.VVAR)!;
    const live = Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) => l.includes("[vvar"));
    if (live.length === 2) {
      const [from, to] = live[0]!.split(" ")[0]!.split("-").map((x) => BigInt(`0x${x}`));
      const split = create(vma_entrySchema, { ...vvar, start: vvar.start + (to! - from!) });
      vvar.end = split.start;
      mm!.vmas.splice(mm!.vmas.indexOf(vvar) + 1, 0, split);
    }
    dir.write(KINDS.MM, root!.pid, [mm!]);
  }));

// Cross-checks with CRIU itself, when CRIU_UPSTREAM names a CRIU 4.x binary (tests/lib/upstream.ts;
// sockets, files and namespaces are in upstream_cross_test.ts).
registerCross(
  [["counter"], ["signals"], ["threads", "64"], ["tree"], ["waiter"], ["shared_files"], ["mmap_zoo", "alias"]]
    .map(([name, ...args]) => ({ name: name!, args })),
);
