/**
 * `criu dump`, as a flat list of steps:
 *   1. run the pre-dump action script
 *   2. freeze the tree (seize every thread of every task)
 *   3. check the tree can be restored (sessions, groups); save its network namespace when it
 *      has its own, then run the network-lock action script
 *   4. dump each task: CPU, signals, memory, files — pages are written while it is frozen
 *   5. write the tree-wide images (pstree, files, tty-info), then stats and inventory last
 *   6. run the post-dump action script
 *   7. kill the tree, or resume it (--leave-running), or leave it stopped (--leave-stopped)
 * Any failure before step 7 resumes the tree exactly as it was and removes what was written, so
 * the images dir never holds something that looks like a good checkpoint.
 */
import { create } from "@bufbuild/protobuf";
import { compact } from "../compact.ts";
import { pstree_entrySchema } from "../images/gen/pstree_pb.ts";
import { pagemap_entrySchema, pagemap_headSchema } from "../images/gen/pagemap_pb.ts";
import { inventory_entrySchema, lsmtype } from "../images/gen/inventory_pb.ts";
import {
  type core_entry,
  type task_kobj_ids_entry,
  task_kobj_ids_entrySchema,
} from "../images/gen/core_pb.ts";
import { dump_stats_entrySchema, stats_entrySchema } from "../images/gen/stats_pb.ts";
import { CRTOOLS_IMAGES_V1_1, KINDS } from "../images/kinds.ts";
import { freezeTree, type FrozenTask, type FrozenTree } from "./freeze.ts";
import { type DumpedTask, dumpTask, dumpZombie } from "./task.ts";
import {
  endFilesDump,
  type FilesSession,
  FileTable,
  finishFilesDump,
  type SocketOptions,
} from "../objects/files.ts";
import { type DumpedVma, mapFilesPath, PE, VMA, writePages } from "../objects/memory.ts";
import { closeFd, dataRanges, OPEN, openFd, preadFull } from "../../ffi/fd.ts";
import { DumpError, UnsupportedObjectError } from "../errors.ts";
import { CLOCK_BOOTTIME, clockNs, compareResource, KCMP } from "../../ffi/process.ts";
import { ImageDir } from "../images/dir.ts";
import { unusableDirectory } from "../dirs.ts";
import { createImageFile } from "../images/file.ts";
import type { Log } from "../log.ts";
import type { Hooks } from "../actions/hooks.ts";
import { dumpNetns, hasOwnNetns } from "../objects/netns.ts";

export interface DumpOptions {
  pid: number;
  imagesDir: string;
  leaveRunning: boolean;
  leaveStopped: boolean;
  shellJob: boolean;
  /** --tcp-established, --network-lock...; without them, CRIU's defaults. */
  sockets?: SocketOptions;
  log: Log;
  hooks: Hooks;
}

export interface DumpStats {
  freezingUs: number;
  frozenUs: number;
  memdumpUs: number;
  memwriteUs: number;
  pagesScanned: number;
  pagesWritten: number;
}

const NS_KINDS = ["pid", "net", "ipc", "uts", "mnt", "user", "cgroup", "time"] as const;

/** Small ids for namespaces, the way CRIU numbers them: one per distinct namespace inode. */
class NamespaceIds {
  #ids = new Map<string, number>();
  #links = new Map<number, Map<string, string>>();

  /** A task's namespace links (`mnt:[4026531841]`), read once per task. */
  linksOf(pid: number): Map<string, string> {
    let links = this.#links.get(pid);
    if (links) return links;
    links = new Map();
    for (const ns of NS_KINDS) {
      try {
        links.set(ns, Deno.readLinkSync(`/proc/${pid}/ns/${ns}`));
      } catch {
        // a kind this kernel does not have
      }
    }
    this.#links.set(pid, links);
    return links;
  }

  idsOf(pid: number): Record<string, number | undefined> {
    const out: Record<string, number | undefined> = {};
    for (const [ns, link] of this.linksOf(pid)) {
      if (!this.#ids.has(link)) this.#ids.set(link, this.#ids.size + 1);
      out[ns] = this.#ids.get(link);
    }
    return out;
  }
}

/** Namespaces criu-ts does not save yet, by their name in /proc/PID/ns and in words. */
const UNSAVED_NAMESPACES = {
  mnt: "mount",
  ipc: "IPC",
  uts: "UTS",
  user: "user",
  cgroup: "cgroup",
  time: "time",
} as const;

/**
 * A task in a namespace of one of these kinds other than criu's own would come back in criu's:
 * other files behind the same paths, another hostname, other ids. Refused before anything is
 * written, as the restore could not be right.
 */
function checkUnsavedNamespaces(tree: FrozenTree, nsIds: NamespaceIds): void {
  const ours = nsIds.linksOf(Deno.pid);
  for (const t of tree.tasks) {
    if (t.state === "zombie") continue;
    const theirs = nsIds.linksOf(t.pid);
    for (const [ns, words] of Object.entries(UNSAVED_NAMESPACES)) {
      if (theirs.get(ns) === ours.get(ns)) continue;
      throw new UnsupportedObjectError(
        t.pid,
        `the ${words} namespace ${theirs.get(ns)}`,
        `it is not criu's, and ${words} namespaces are not saved yet`,
      );
    }
  }
}

/**
 * Ids of the kernel objects a task may share with others (mm, fd table, fs, signal handlers):
 * tasks that share one (CLONE_FILES, CLONE_FS, ...) get the same id, as kcmp says. Each kind keeps
 * one task per object, sorted in kcmp's order, so a task costs a binary search, not a kcmp
 * against every task before it.
 */
class SharedObjectIds {
  #next = 100;
  #types = [KCMP.VM, KCMP.FILES, KCMP.FS, KCMP.SIGHAND];
  #sorted = this.#types.map(() => [] as { pid: number; id: number }[]);

  idsOf(task: Pick<FrozenTask, "pid" | "state">): [number, number, number, number] {
    return this.#types.map((type, i) => {
      if (task.state === "zombie") return this.#next++; // it holds none of them any more
      const list = this.#sorted[i]!;
      let lo = 0;
      let hi = list.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        const r = compareResource(task.pid, list[mid]!.pid, type);
        if (r === 0) return list[mid]!.id;
        if (r === 1) hi = mid;
        else if (r === 2) lo = mid + 1;
        else throw new DumpError(`kcmp of process ${task.pid} failed (${r})`);
      }
      const id = this.#next++;
      list.splice(lo, 0, { pid: task.pid, id });
      return id;
    }) as [number, number, number, number];
  }
}

function taskIds(
  shared: [number, number, number, number],
  ns: Record<string, number | undefined>,
): task_kobj_ids_entry {
  const [vmId, filesId, fsId, sighandId] = shared;
  return create(
    task_kobj_ids_entrySchema,
    compact({
      vmId,
      filesId,
      fsId,
      sighandId,
      pidNsId: ns.pid,
      netNsId: ns.net,
      ipcNsId: ns.ipc,
      utsNsId: ns.uts,
      mntNsId: ns.mnt,
      userNsId: ns.user,
      cgroupNsId: ns.cgroup,
      timeNsId: ns.time,
    }),
  );
}

/** Every task must live in the root's PID namespace (as in CRIU, nested ones are refused). */
function checkPidNamespaces(tree: FrozenTree): void {
  const nsOf = (pid: number) => Deno.readLinkSync(`/proc/${pid}/ns/pid`);
  const rootNs = nsOf(tree.root.pid);
  for (const t of tree.tasks.slice(1)) {
    if (t.state !== "zombie" && nsOf(t.pid) !== rootNs) {
      throw new DumpError(
        `Process ${t.pid} is in a PID namespace nested below the dump root's; dump that namespace's init on its own (nested PID namespaces are not supported)`,
      );
    }
  }
}

function checkSessions(tree: FrozenTree, shellJob: boolean): void {
  if (shellJob) return;
  const pids = new Set(tree.tasks.map((t) => t.ns.pid));
  for (const t of tree.tasks) {
    const who = t.ns.pid === t.pid
      ? `Process ${t.pid}`
      : `Process ${t.pid} (${t.ns.pid} in its PID namespace)`;
    if (!pids.has(t.ns.sid)) {
      throw new DumpError(
        `${who} belongs to a session whose leader is not being dumped; use --shell-job (-j) for a process started from a shell`,
      );
    }
    // A group whose leader is gone comes back through a helper task (groupHelpers); its
    // session must be in the tree for that.
  }
}

/**
 * A process group whose leader is not in the tree (it exited) comes back through a helper task
 * that the restore creates, as CRIU's does: a task with the leader's pid, in the group's session,
 * which makes the group, lets the members join, and ends. The session must be in the tree.
 */
function checkGroups(tree: FrozenTree, shellJob: boolean): void {
  const pids = new Set(tree.tasks.map((t) => t.ns.pid));
  const rootGroup = tree.root.ns.pgid;
  for (const { ns } of tree.tasks) {
    if (pids.has(ns.pgid) || (shellJob && ns.pgid === rootGroup)) continue;
    if (!pids.has(ns.sid)) {
      throw new DumpError(
        `Process ${ns.pid} is in process group ${ns.pgid}, whose leader is not being dumped; use --shell-job (-j)`,
      );
    }
  }
}

/** Images are named by the ids the tree's own PID namespace knows. */
function writeTaskImages(dir: ImageDir, t: DumpedTask, task: FrozenTask): void {
  const pid = task.ns.pid;
  // A zombie holds no objects: CRIU writes no ids for it, and its restore compares those it finds.
  if (task.state !== "zombie") dir.write(KINDS.IDS, pid, [t.ids]);
  if (t.mm) dir.write(KINDS.MM, pid, [t.mm]);
  if (t.fs) dir.write(KINDS.FS, pid, [t.fs]);
  if (t.mm) dir.write(KINDS.FDINFO, t.ids.filesId, t.fdinfos);
}

function pagemapFor(t: DumpedTask, pagesId: number) {
  const entries = [];
  for (const v of t.vmas) {
    for (const [vaddr, n] of v.runs) {
      entries.push(
        create(pagemap_entrySchema, { vaddr, compatNrPages: n, nrPages: BigInt(n), flags: PE.PRESENT }),
      );
    }
  }
  return [create(pagemap_headSchema, { pagesId }), ...entries];
}

/**
 * A finished checkpoint whose tree is still frozen: release() ends the dump as the options say
 * (kill, resume, leave stopped); cancel() resumes the tree as it was and removes the images, as a
 * failed dump does.
 */
export interface HeldDump {
  stats: DumpStats;
  release(): void;
  cancel(): void;
}

/** Dumps the tree and ends the dump as the options say. */
export function dump(opts: DumpOptions): DumpStats {
  const held = dumpHeld(opts);
  held.release();
  return held.stats;
}

/** Dumps the tree and keeps it frozen, for a caller that decides between release and cancel. */
export function dumpHeld(opts: DumpOptions): HeldDump {
  const { log } = opts;
  const unusable = unusableDirectory("images directory", opts.imagesDir);
  if (unusable !== undefined) throw new DumpError(unusable);
  const dir = new ImageDir(opts.imagesDir);
  opts.hooks.run("pre-dump");
  const t0 = performance.now();
  log.debug(`Freezing the tree of ${opts.pid}`);
  const tree = freezeTree(opts.pid, log);
  const frozenAt = performance.now();
  const frozenUptimeUs = clockNs(CLOCK_BOOTTIME) / 1000n;
  log.info(`Frozen ${tree.tasks.length} task(s) in ${(frozenAt - t0).toFixed(1)} ms`);
  const stats: DumpStats = {
    freezingUs: Math.round((frozenAt - t0) * 1000),
    frozenUs: 0,
    memdumpUs: 0,
    memwriteUs: 0,
    pagesScanned: 0,
    pagesWritten: 0,
  };
  // Only a tree in a network namespace of its own gets its network locked (as CRIU does).
  const ownNetns = hasOwnNetns(opts.pid);
  let locked = false;
  const table = new FileTable();
  const files: FilesSession = {
    table,
    dir,
    opts: { shellJob: opts.shellJob, ...(opts.sockets ? { sockets: opts.sockets } : {}) },
    hooks: opts.hooks,
    log,
  };
  try {
    if (tree.root.ns.pid !== tree.root.pid && tree.root.ns.pid !== 1) {
      throw new DumpError(
        `Process ${tree.root.pid} lives in a PID namespace of which it is not the init (it is ${tree.root.ns.pid} there); dump the namespace's init instead`,
      );
    }
    checkPidNamespaces(tree);
    checkSessions(tree, opts.shellJob);
    checkGroups(tree, opts.shellJob);
    const nsIds = new NamespaceIds();
    checkUnsavedNamespaces(tree, nsIds);
    if (ownNetns) {
      const alive = tree.tasks.filter((t) => t.state !== "zombie").map((t) => t.pid);
      dumpNetns(dir, opts.pid, alive, nsIds.idsOf(opts.pid).net!);
      locked = true; // a failing lock script may have locked half-way: unlock on failure too
      opts.hooks.run("network-lock", opts.pid);
    }
    const objectIds = new SharedObjectIds();
    let pagesId = 0;
    const shmemDone = new Set<bigint>();
    const ctx = {
      table,
      files,
      log,
      writePages(agent: Parameters<typeof writePages>[0], t: DumpedTask) {
        pagesId += 1;
        const w0 = performance.now();
        const path = dir.pathFor(KINDS.PAGES, pagesId);
        dir.noteWritten(path);
        const s = writePages(agent, t.vmas, path);
        dir.write(KINDS.PAGEMAP, t.imagePid, pagemapFor(t, pagesId));
        stats.memwriteUs += Math.round((performance.now() - w0) * 1000);
        stats.pagesWritten += s.pages;
        stats.pagesScanned += t.vmas.reduce((n, v) => n + Number((v.entry.end - v.entry.start) / 4096n), 0);
        log.debug(`Task ${t.pid}: ${s.pages} pages (${s.remotePages} written by the task itself)`);
        for (const v of t.vmas) {
          if (!(v.entry.status & VMA.ANON_SHARED) || shmemDone.has(v.entry.shmid)) continue;
          shmemDone.add(v.entry.shmid);
          pagesId += 1;
          stats.pagesWritten += dumpSharedObject(dir, t.pid, v, pagesId);
        }
      },
      writeCore(imageTid: number, core: core_entry) {
        dir.write(KINDS.CORE, imageTid, [core]);
      },
    };
    const m0 = performance.now();
    const dumped = tree.tasks.map((task) => {
      const ids = taskIds(objectIds.idsOf(task), nsIds.idsOf(task.pid));
      log.info(`Dumping task ${task.pid} (${task.threads.length} thread(s), ${task.state})`);
      return task.state === "zombie" ? dumpZombie(ctx, task, ids) : dumpTask(ctx, task, ids);
    });
    stats.memdumpUs = Math.round((performance.now() - m0) * 1000) - stats.memwriteUs;
    dumped.forEach((t, i) => writeTaskImages(dir, t, tree.tasks[i]!));
    log.debug(`Task images written`);
    dir.write(
      KINDS.PSTREE,
      undefined,
      tree.tasks.map((t) => t.ns).map((ns) =>
        create(pstree_entrySchema, {
          pid: ns.pid,
          ppid: ns.ppid,
          pgid: ns.pgid,
          sid: ns.sid,
          threads: ns.threads,
        })
      ),
    );
    finishFilesDump(files);
    dir.write(KINDS.FILES, undefined, table.entries);
    opts.hooks.run("post-dump");
    stats.frozenUs = Math.round((performance.now() - frozenAt) * 1000);
    writeStats(dir, stats);
    dir.write(KINDS.INVENTORY, undefined, [
      create(inventory_entrySchema, {
        imgVersion: CRTOOLS_IMAGES_V1_1,
        fdinfoPerId: true,
        nsPerId: true,
        // CRIU's root_ids are the ids of criu itself: a restore tells from them which
        // namespaces the tree had of its own, and refuses a root that shares criu's fd table.
        rootIds: taskIds(objectIds.idsOf({ pid: Deno.pid, state: "alive" }), nsIds.idsOf(Deno.pid)),
        lsmtype: lsmtype.NO_LSM,
        dumpUptime: frozenUptimeUs,
      }),
    ]);
  } catch (e) {
    undo();
    throw e;
  }
  return {
    stats,
    release() {
      if (locked && opts.leaveRunning) unlockQuietly(opts);
      log.debug(`Images complete; releasing the tree`);
      endFilesDump(files, opts.leaveRunning);
      finish(tree, opts);
    },
    cancel: undo,
  };

  function undo(): void {
    endFilesDump(files, true);
    if (locked) unlockQuietly(opts);
    tree.resume();
    dir.removeWritten();
  }
}

function unlockQuietly(opts: DumpOptions): void {
  try {
    opts.hooks.run("network-unlock", opts.pid);
  } catch (e) {
    opts.log.error(`network-unlock: ${(e as Error).message}`);
  }
}

function finish(tree: FrozenTree, opts: DumpOptions): void {
  if (opts.leaveRunning) tree.resume();
  else if (opts.leaveStopped) tree.leaveStopped();
  else tree.kill();
}

/**
 * Shared anonymous memory goes once into pagemap-shmem-ID.img (addresses are offsets in the
 * object). The object is read through /proc/PID/map_files, which shows every page it holds
 * whichever view touched it; SEEK_DATA/SEEK_HOLE skip what was never written.
 */
function dumpSharedObject(dir: ImageDir, pid: number, v: DumpedVma, pagesId: number): number {
  const source = mapFilesPath(pid, v.entry);
  const fd = openFd(source, OPEN.RDONLY | OPEN.CLOEXEC);
  const path = dir.pathFor(KINDS.PAGES, pagesId);
  dir.noteWritten(path);
  const out = createImageFile(path);
  const entries = [];
  let pages = 0;
  try {
    const chunk = new Uint8Array(4 * 1024 * 1024);
    for (const [start, end] of dataRanges(fd, Deno.statSync(source).size)) {
      for (let at = start; at < end; at += chunk.length) {
        const part = chunk.subarray(0, Math.min(chunk.length, end - at));
        preadFull(fd, part, at, source);
        for (let off = 0; off < part.length;) off += out.writeSync(part.subarray(off));
      }
      const n = (end - start) / 4096;
      entries.push(
        create(pagemap_entrySchema, {
          vaddr: BigInt(start),
          compatNrPages: n,
          nrPages: BigInt(n),
          flags: PE.PRESENT,
        }),
      );
      pages += n;
    }
  } finally {
    out.close();
    closeFd(fd);
  }
  dir.write(KINDS.SHMEM_PAGEMAP, v.entry.shmid, [create(pagemap_headSchema, { pagesId }), ...entries]);
  return pages;
}

function writeStats(dir: ImageDir, s: DumpStats): void {
  dir.write(KINDS.STATS, "dump", [
    create(stats_entrySchema, {
      dump: create(dump_stats_entrySchema, {
        freezingTime: s.freezingUs,
        frozenTime: s.frozenUs,
        memdumpTime: s.memdumpUs,
        memwriteTime: s.memwriteUs,
        pagesScanned: BigInt(s.pagesScanned),
        pagesSkippedParent: 0n,
        pagesWritten: BigInt(s.pagesWritten),
        pagesLazy: 0n,
      }),
    }),
  ]);
}
