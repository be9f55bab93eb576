/**
 * `criu dump`, as a flat list of steps:
 *   1. run the pre-dump action script; plugins hear PAUSE_DEVICES; bad --cgroup-props are refused
 *   2. freeze the tree (seize every thread of every task; with --freeze-cgroup inside a cgroup
 *      freeze); plugins hear CHECKPOINT_DEVICES for each live task
 *   3. check the tree can be restored (namespaces, sessions, groups); each namespace kind dumps
 *      its namespace (a network namespace of its own is saved, then the network-lock action
 *      script runs); the tree's cgroups are collected
 *   4. dump each task: CPU, signals, memory, files — pages are written while it is frozen; then
 *      plugins hear DUMP_DEVICES_LATE
 *   5. write the tree-wide images (core and the other task images, pstree, what each kind of
 *      file keeps for the whole tree, seccomp, files, cgroups)
 *   6. run the post-dump action script; then stats and inventory last
 *   7. kill the tree, or resume it (--leave-running: the network is unlocked), or leave it
 *      stopped (--leave-stopped)
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
import { endFilesDump, type FilesSession, FileTable, finishFilesDump } from "../objects/files.ts";
import { writeSeccomp } from "../objects/seccomp.ts";
import { type DumpedVma, PAGE_SIZE, PE, VMA, writePages } from "../objects/memory.ts";
import { backingOf, type ObjectDumpContext } from "../objects/mappings.ts";
import { DumpError } from "../errors.ts";
import { lsmProfileProblem } from "../lsm.ts";
import { CLOCK_BOOTTIME, clockNs, compareResource, KCMP } from "../../ffi/process.ts";
import { ImageDir } from "../images/dir.ts";
import { unusableDirectory } from "../dirs.ts";
import type { Log } from "../log.ts";
import type { Hooks } from "../actions/hooks.ts";
import { checkNamespaces, dumpNamespaces, NamespaceIds, type NsDumped } from "../objects/namespaces.ts";
import { nestedPidsOf, pidForChildrenId, threadPidForChildrenId } from "../objects/pidns.ts";
import { threadTimeForChildrenId, timeForChildrenId } from "../objects/timens.ts";
import { NETWORK_LOCK_METHOD, type RunOptions } from "../options/options.ts";
import { Plugins } from "../plugins/plugins.ts";
import { CgroupsDump } from "../objects/cgroups_dump.ts";
import { freezeCgroup, type FrozenCgroup } from "./freeze_cgroup.ts";
import { credsInUserNamespaces } from "../objects/userns.ts";
import { frozenCgroupsOf, ThawedCgroups } from "../objects/cgroup_freezer.ts";
import { STAGE } from "../plugins/api.ts";
import { treeIdsAtDump } from "../objects/tree_ids.ts";

/** What a dump needs; src/options/core.ts makes it from the options of the command line or RPC. */
export interface DumpOptions {
  /** The root of the tree. */
  pid: number;
  imagesDir: string;
  /** Every option, read-only: handed unchanged to each task and object kind. */
  options: RunOptions;
  log: Log;
  hooks: Hooks;
  /** The plugins loaded for this dump (the caller calls their exit); none when absent. */
  plugins?: Plugins;
}

/**
 * What stats-dump records, as CRIU counts it. Private memory and shared anonymous memory are
 * counted apart (pages / shpages); a dump without a parent skips no pages, and one without lazy
 * pages or irmap resolution (no inotify watches to name) has 0 there, which is the real value.
 */
export interface DumpStats {
  freezingUs: number;
  frozenUs: number;
  memdumpUs: number;
  memwriteUs: number;
  /** Time spent finding paths for watched inodes (CRIU's irmap); criu-ts has none to find. */
  irmapResolveUs: number;
  /** Pages of the private mappings looked at, and those written. */
  pagesScanned: number;
  pagesSkippedParent: number;
  pagesWritten: number;
  pagesLazy: number;
  /**
   * CRIU moves pages through page pipes, one per task and per shared object, each made of
   * buffers. Ours are the transfers that play that part: one per task's pages and one per shared
   * object; and, for the buffers, the runs of contiguous pages each transfer carries.
   */
  pagePipes: number;
  pagePipeBufs: number;
  /** Pages of shared anonymous memory (once per object) looked at, and those written. */
  shpagesScanned: number;
  shpagesSkippedParent: number;
  shpagesWritten: number;
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
      pidForChildrenNsId: ns.pidForChildren,
      timeForChildrenNsId: ns.timeForChildren,
    }),
  );
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
  const lsmProblem = lsmProfileProblem(opts.options.lsmProfile);
  if (lsmProblem !== undefined) throw new DumpError(lsmProblem);
  const dir = new ImageDir(opts.imagesDir);
  // Like CRIU, which runs in its work dir (-W), stats-dump goes there: runtimes look for it there.
  const workDir = opts.options.workDir;
  const statsDir = workDir === undefined ? dir : new ImageDir(workDir);
  opts.hooks.run("pre-dump");
  const t0 = performance.now();
  const plugins = opts.plugins ?? Plugins.none(STAGE.DUMP, log);
  plugins.notify("PAUSE_DEVICES", opts.pid);
  // CRIU leaves cgroups alone for --unprivileged; bad --cgroup-props are refused before freezing.
  const cgroups = opts.options.unprivileged ? undefined : new CgroupsDump(opts.options, log);
  log.debug(`Freezing the tree of ${opts.pid}`);
  const { tree, cgroup } = freezeTreeAsAsked(opts);
  const thawed = thawFrozenCgroups(tree, opts, cgroup);
  cgroups?.savesFrozen(thawed.paths);
  const frozenAt = performance.now();
  const frozenUptimeUs = clockNs(CLOCK_BOOTTIME) / 1000n;
  log.info(`Frozen ${tree.tasks.length} task(s) in ${(frozenAt - t0).toFixed(1)} ms`);
  const stats: DumpStats = {
    freezingUs: Math.round((frozenAt - t0) * 1000),
    frozenUs: 0,
    memdumpUs: 0,
    memwriteUs: 0,
    irmapResolveUs: 0,
    pagesScanned: 0,
    pagesSkippedParent: 0,
    pagesWritten: 0,
    pagesLazy: 0,
    pagePipes: 0,
    pagePipeBufs: 0,
    shpagesScanned: 0,
    shpagesSkippedParent: 0,
    shpagesWritten: 0,
  };
  let namespaces: NsDumped | undefined;
  const table = new FileTable();
  // Names this checkpoint's network lock (inventory's dump_criu_run_id), as CRIU's run id does.
  const runId = crypto.randomUUID();
  const nsIds = new NamespaceIds();
  const files: FilesSession = {
    table,
    dir,
    opts: opts.options,
    hooks: opts.hooks,
    plugins,
    log,
    frozenUptimeUs,
    runId,
    // CRIU's ns_id of each socket: the id its network namespace has in the ids images.
    nsIdOfLink: (link) => nsIds.idOfLink(link),
    treeIds: treeIdsAtDump(tree.root.pid),
  };
  try {
    for (const t of tree.tasks) if (t.state !== "zombie") plugins.notify("CHECKPOINT_DEVICES", t.pid);
    checkNamespaces(tree, nsIds);
    checkSessions(tree, opts.options.shellJob);
    checkGroups(tree, opts.options.shellJob);
    namespaces = dumpNamespaces(tree, nsIds, { dir, hooks: opts.hooks, log, options: opts.options, plugins });
    cgroups?.collect(tree);
    const credsInside = credsInUserNamespaces(tree.root.pid);
    const hostTids = new Map(tree.tasks.flatMap((t) => t.ns.threads.map((tid, i) => [tid, t.threads[i]!])));
    const objectIds = new SharedObjectIds();
    let pagesId = 0;
    const objects: ObjectDumpContext = { dir, done: new Set(), nextPagesId: () => ++pagesId };
    const ctx = {
      table,
      files,
      options: opts.options,
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
        stats.pagesScanned += t.vmas.filter(isPrivate).reduce((n, v) => n + pagesOf(v), 0);
        stats.pagePipes += 1;
        stats.pagePipeBufs += t.vmas.reduce((n, v) => n + v.runs.length, 0);
        log.debug(`Task ${t.pid}: ${s.pages} pages (${s.remotePages} written by the task itself)`);
        for (const v of t.vmas) {
          const shared = backingOf(v.entry)?.dumpObject?.(objects, t.pid, v);
          if (!shared) continue;
          stats.shpagesScanned += shared.scanned;
          stats.shpagesWritten += shared.written;
          stats.pagePipes += 1;
          stats.pagePipeBufs += shared.runs;
        }
      },
      writeCore(imageTid: number, core: core_entry) {
        // As CRIU: each thread's cgroup set in its thread core, the leader's also in the task core.
        const set = cgroups?.setOf(hostTids.get(imageTid) ?? 0) ?? 0;
        if (set && core.threadCore) core.threadCore.cgSet = set;
        if (set && core.tc) core.tc.cgSet = set;
        // Credentials as the tasks' user namespace sees them, as CRIU saves them.
        if (core.threadCore?.creds) credsInside(hostTids.get(imageTid) ?? 0)?.(core.threadCore.creds);
        // A thread other than the leader may make its children in a PID namespace of its own (pidns.ts).
        const childrenNs = core.tc ? undefined : threadPidForChildrenId(nsIds, hostTids.get(imageTid) ?? 0);
        if (childrenNs !== undefined && core.threadCore) core.threadCore.pidForChildrenNsId = childrenNs;
        // And in a time namespace of its own (timens.ts).
        const childrenTime = core.tc
          ? undefined
          : threadTimeForChildrenId(nsIds, hostTids.get(imageTid) ?? 0);
        if (childrenTime !== undefined && core.threadCore) core.threadCore.timeForChildrenNsId = childrenTime;
        dir.write(KINDS.CORE, imageTid, [core]);
      },
    };
    const m0 = performance.now();
    const dumped = tree.tasks.map((task) => {
      const ids = taskIds(objectIds.idsOf(task), {
        ...nsIds.idsOf(task.pid),
        pidForChildren: pidForChildrenId(nsIds, task),
        timeForChildren: timeForChildrenId(nsIds, task),
      });
      log.info(`Dumping task ${task.pid} (${task.threads.length} thread(s), ${task.state})`);
      return task.state === "zombie" ? dumpZombie(ctx, task, ids) : dumpTask(ctx, task, ids);
    });
    plugins.notify("DUMP_DEVICES_LATE", opts.pid);
    stats.memdumpUs = Math.round((performance.now() - m0) * 1000) - stats.memwriteUs;
    dumped.forEach((t, i) => writeTaskImages(dir, t, tree.tasks[i]!));
    log.debug(`Task images written`);
    dir.write(
      KINDS.PSTREE,
      undefined,
      tree.tasks.map((t) =>
        create(pstree_entrySchema, {
          pid: t.ns.pid,
          ppid: t.ns.ppid,
          pgid: t.ns.pgid,
          sid: t.ns.sid,
          threads: t.ns.threads,
          nested: nestedPidsOf(tree, nsIds, t),
        })
      ),
    );
    finishFilesDump(files);
    writeSeccomp(dir, table);
    dir.write(KINDS.FILES, undefined, table.entries);
    cgroups?.write(dir);
    opts.hooks.run("post-dump");
    stats.frozenUs = Math.round((performance.now() - frozenAt) * 1000);
    writeStats(statsDir, stats);
    dir.write(KINDS.INVENTORY, undefined, [
      create(inventory_entrySchema, {
        imgVersion: CRTOOLS_IMAGES_V1_1,
        fdinfoPerId: true,
        nsPerId: true,
        // CRIU's root_ids are the ids of criu itself: a restore tells from them which
        // namespaces the tree had of its own, and refuses a root that shares criu's fd table.
        rootIds: taskIds(objectIds.idsOf({ pid: Deno.pid, state: "alive" }), nsIds.idsOf(Deno.pid)),
        lsmtype: lsmtype.NO_LSM,
        // How dumped connections were locked: the restore unlocks them the same way.
        networkLockMethod: NETWORK_LOCK_METHOD[opts.options.networkLock],
        dumpUptime: frozenUptimeUs,
        dumpCriuRunId: runId,
        ...(cgroups ? { rootCgSet: cgroups.rootSet } : {}),
      }),
    ]);
  } catch (e) {
    undo();
    throw e;
  }
  return {
    stats,
    release() {
      namespaces?.release(opts.options.finalState === "running");
      log.debug(`Images complete; releasing the tree`);
      endFilesDump(files, opts.options.finalState === "running");
      thawed.freezeAgain();
      // As CRIU: a task killed at the end is not frozen again (a v1-frozen task cannot die).
      if (opts.options.finalState !== "dead") cgroup?.freezeAgain();
      finish(tree, opts);
    },
    cancel: undo,
  };

  function undo(): void {
    endFilesDump(files, true);
    namespaces?.undo();
    thawed.freezeAgain();
    cgroup?.freezeAgain();
    tree.resume();
    dir.removeWritten();
    if (statsDir !== dir) statsDir.removeWritten();
  }
}

/**
 * Seizes the tree; with --freeze-cgroup, inside a freeze of the whole cgroup (freeze_cgroup.ts),
 * which goes back to its state (thawed) as soon as ptrace holds every task, whether the seize
 * worked or not.
 */
function freezeTreeAsAsked(opts: DumpOptions): { tree: FrozenTree; cgroup?: FrozenCgroup } {
  const path = opts.options.freezeCgroup;
  if (path === undefined) return { tree: freezeTree(opts.pid, opts.log) };
  const cgroup = freezeCgroup(path, opts.log);
  let tree: FrozenTree | undefined;
  try {
    tree = freezeTree(opts.pid, opts.log);
    return { tree, cgroup };
  } finally {
    cgroup.restore(tree);
  }
}

/**
 * Cgroups (v2) that their user froze are thawed while ptrace holds the tree, frozen again before it
 * is let go (cgroup_freezer.ts); a failure to thaw lets the tree go as it was.
 */
function thawFrozenCgroups(tree: FrozenTree, opts: DumpOptions, cgroup?: FrozenCgroup): ThawedCgroups {
  if (opts.options.unprivileged) return ThawedCgroups.none(opts.log);
  const live = tree.tasks.filter((t) => t.state !== "zombie").map((t) => t.pid);
  try {
    return ThawedCgroups.thaw(frozenCgroupsOf(live, opts.options.cgroupYard), opts.log);
  } catch (e) {
    cgroup?.freezeAgain();
    tree.resume();
    throw new DumpError(`Cannot thaw the frozen cgroup of the tree: ${(e as Error).message}`);
  }
}

function finish(tree: FrozenTree, opts: DumpOptions): void {
  if (opts.options.finalState === "running") tree.resume();
  else if (opts.options.finalState === "stopped") tree.leaveStopped();
  else tree.kill();
}

/** A mapping whose pages are the task's own (CRIU's vma_area_is_private). */
function isPrivate(v: DumpedVma): boolean {
  return (v.entry.status & (VMA.ANON_PRIVATE | VMA.FILE_PRIVATE)) !== 0;
}

function pagesOf(v: DumpedVma): number {
  return Number((v.entry.end - v.entry.start) / BigInt(PAGE_SIZE));
}

/** Every field CRIU's write_stats() sets, the optional ones included: readers expect them all. */
function writeStats(dir: ImageDir, s: DumpStats): void {
  dir.write(KINDS.STATS, "dump", [
    create(stats_entrySchema, {
      dump: create(dump_stats_entrySchema, {
        freezingTime: s.freezingUs,
        frozenTime: s.frozenUs,
        memdumpTime: s.memdumpUs,
        memwriteTime: s.memwriteUs,
        irmapResolve: s.irmapResolveUs,
        pagesScanned: BigInt(s.pagesScanned),
        pagesSkippedParent: BigInt(s.pagesSkippedParent),
        pagesWritten: BigInt(s.pagesWritten),
        pagesLazy: BigInt(s.pagesLazy),
        pagePipes: BigInt(s.pagePipes),
        pagePipeBufs: BigInt(s.pagePipeBufs),
        shpagesScanned: BigInt(s.shpagesScanned),
        shpagesSkippedParent: BigInt(s.shpagesSkippedParent),
        shpagesWritten: BigInt(s.shpagesWritten),
      }),
    }),
  ]);
}
