/**
 * `criu restore`. The stages, in order, with who moves them on and the action scripts and plugin
 * hooks around them (each namespace kind's part is a hook of its NsRestorePlan, namespaces.ts):
 *
 *   PREPARE     plugins hear RESTORE_INIT; the caller's inherited fds are checked; every image is
 *               read (each kind of file and namespace reads its own) and a damaged checkpoint is
 *               refused, seccomp filters included; the PIDs must be free.  → "pre-restore"
 *               Then the cgroups and each namespace kind plan their part.
 *   FORKING     the cgroup directories are made; the helper is started and makes the namespaces
 *               the root must be born in (plan.inCreator: a time namespace's clocks can only be set
 *               before a task enters it, the cgroup namespace is rooted where the helper stands).
 *               Each task is cloned with its PID from its parent (the root from the helper, so the
 *               root is our child, with the clone flags the kinds asked for) and placed in its
 *               cgroups at once; after the root's clone its user namespace gets its uid and gid
 *               maps (plan.rootCreated), and its mount tree is built inside it (plan.beforeMemory),
 *               before its memory. (Several tasks in a user namespace without a PID namespace of
 *               their own: the namespaces are made in a holder first, the root enters all but the
 *               user one, and every task joins that once the tree is forked: ns_holder.ts.) A task
 *               in a cgroup namespace other than its parent's makes or enters it then too. Each
 *               task then gets its memory, parents first (children forked later share what they
 *               shared copy-on-write). Holders make the user namespaces nested below the root's
 *               (plan.afterForking). The helper ends.  plugins: POST_FORKING
 *   NAMESPACES  "setup-namespaces" (only when namespaces were made) sees them empty; then each is
 *               filled from inside the root (plan.fill: network devices, addresses, routes and
 *               firewall, the host name, the IPC objects).
 *               → "post-setup-namespaces" (only when namespaces were made)
 *   GROUPS      every task joins its process group; zombies and group helpers end.
 *   RESTORE     each task is rebuilt from inside by remote syscalls, in the order of task.ts: fs,
 *               files, its nested user namespace (plan.beforeTaskState), task state, threads, then
 *               each thread's state, signals and credentials (credentials last), timers; then what the kinds of file do once every task has its
 *               fds, and only then each task's dumpable flag is set back (until then every task
 *               stays dumpable, so that the others may take fds from it after it changed its ids).
 *               Tasks stay stopped under ptrace.
 *               → "post-restore"; the pidfile is written; plan.afterRestore: → "network-unlock"
 *               (a restored network namespace only, then CRIU's own lock is dropped);
 *               → "pre-resume"
 *   RESUME      task by task: fds parked for peers are closed, a thread's own seccomp filters
 *               are installed last in it (a filter may forbid any call after it; a leader's went
 *               in before its credentials, at RESTORE), the scratch page is
 *               unmapped and registers are loaded; then every thread is detached, so the tree runs.
 *               plugins: RESUME_DEVICES_LATE; stats-restore is written.    → "post-resume"
 *
 * A failure in any stage before RESUME kills every task created so far and removes the cgroup
 * directories made: no half-restored process is ever left behind, stopped or running.
 */
import { RestoreError } from "../errors.ts";
import { lsmProfileProblem } from "../lsm.ts";
import { ERRNO, isSyscallError, osReason } from "../../ffi/errors.ts";
import { KERNEL_SIGSET_SIZE, kernelSigset, timespec, TIMESPEC_SIZE } from "../../ffi/structs.ts";
import { closeFd, OPEN, openFd } from "../../ffi/fd.ts";
import type { Log } from "../log.ts";
import type { Hooks } from "../actions/hooks.ts";
import { dumpedUptimeUs, loadCheckpoint, type RestoreTaskImages } from "./images.ts";
import { prepareInheritedFds } from "../objects/inherited_fds.ts";
import { planSeccomp, restoreSeccomp } from "../objects/seccomp.ts";
import { prepareNamespaces, type RestoreNamespaces } from "../objects/namespaces.ts";
import { pidChain, PidNesting } from "../objects/pidns.ts";
import { PuppetMaster, TRACE_OPTIONS } from "./puppet.ts";
import {
  closeParked,
  detachTask,
  dropScratch,
  loadRegisters,
  type PendingThread,
  restoredStopSignal,
  restoreDumpable,
  restoreGroup,
  restoreMemory,
  restoreTask,
  type TaskRestoreContext,
} from "./task.ts";
import { afterAllFds, endFilesRestore, SharedFiles } from "../objects/files.ts";
import "../objects/mod.ts";
import * as pt from "../../ffi/ptrace.ts";
import { CLONE, NR, SIG } from "../../ffi/syscalls.ts";
import { WALL } from "../../ffi/ptrace.ts";
import { CLOCK_BOOTTIME, clockNs, processExists } from "../../ffi/process.ts";
import { KINDS } from "../images/kinds.ts";
import { waitUntilStopped } from "../dump/freeze.ts";
import { create } from "@bufbuild/protobuf";
import { restore_stats_entrySchema, stats_entrySchema } from "../images/gen/stats_pb.ts";
import { pstree_entrySchema } from "../images/gen/pstree_pb.ts";
import type { Agent } from "../agent.ts";
import { ImageDir } from "../images/dir.ts";
import type { RunOptions } from "../options/options.ts";
import { Plugins } from "../plugins/plugins.ts";
import { STAGE } from "../plugins/api.ts";
import { CgroupsRestore } from "../objects/cgroups_restore.ts";
import { makeInside, NamespaceHolder } from "./ns_holder.ts";
import { TreePids } from "./free_pid.ts";
import { TaskCgroupNamespaces } from "../objects/cgroupns.ts";

/**
 * What a restore needs; src/options/core.ts makes it from the options of the command line or RPC.
 * Of the options, a restore reads: restoreDetached (-d), restoreSibling (-S, needs -d), shellJob
 * (-j), emptyNetNs (--empty-ns net: a new network namespace left empty for the scripts to fill),
 * orphanPtsMaster (RPC: a shell job's terminal becomes a new pty whose master goes to the client)
 * and pidfile.
 */
export interface RestoreOptions {
  imagesDir: string;
  /** Every option, read-only: handed unchanged to each task and object kind. */
  options: RunOptions;
  log: Log;
  hooks: Hooks;
  /** The plugins loaded for this restore (the caller calls their exit); none when absent. */
  plugins?: Plugins;
}

export interface RestoreResult {
  pid: number;
  /** Without --restore-detached: the root's exit status once it ended. */
  exitCode?: number;
  forkingUs: number;
  restoreUs: number;
  /** Pages compared with a parent's, left shared with it, and filled from the images. */
  pages: { compared: number; skipped: number; restored: number };
}

function checkPidsFree(tasks: readonly RestoreTaskImages[]): void {
  for (const t of tasks) {
    for (const tid of [t.entry.pid, ...t.entry.threads]) {
      if (processExists(tid)) {
        let comm = "";
        try {
          comm = ` (${Deno.readTextFileSync(`/proc/${tid}/comm`).trim()})`;
        } catch {
          // gone meanwhile
        }
        throw new RestoreError(
          `PID ${tid} is already in use by process ${tid}${comm}; it must be free to restore (pstree.img lists it)`,
          ERRNO.EEXIST, // as CRIU answers
        );
      }
    }
  }
}

function checkParents(tasks: readonly RestoreTaskImages[]): void {
  const pids = new Set(tasks.map((t) => t.entry.pid));
  tasks.slice(1).forEach((t) => {
    if (!pids.has(t.entry.ppid)) {
      throw new RestoreError(`Process ${t.entry.pid} has parent ${t.entry.ppid}, which is not in the images`);
    }
  });
}

/** Creates every task, parents before children; returns each task's agent. */
/**
 * With --shell-job, as CRIU does: unless the root led its own session, the tasks of the root's
 * session join criu's session (the restored job then sits on criu's terminal); unless the root
 * led its own process group, the tasks of the root's group join criu's group (the terminal's
 * foreground group when criu runs in the foreground).
 */
export function joinsCriuJob(tasks: readonly RestoreTaskImages[], t: RestoreTaskImages, shellJob: boolean) {
  const root = tasks[0]!.entry;
  return {
    session: shellJob && root.sid !== root.pid && t.entry.sid === root.sid,
    group: shellJob && root.sid !== root.pid && root.pgid !== root.pid && t.entry.pgid === root.pgid,
  };
}

/**
 * A task for each process group whose leader is not in the images (it had exited), as CRIU's
 * restore makes one: it takes the leader's pid in the group's session, makes the group, lets the
 * members join, and ends. Its parent is the session leader, or else a member. With --shell-job the
 * root's group may be criu's own, which needs none.
 */
function groupHelpers(tasks: readonly RestoreTaskImages[], shellJob: boolean): RestoreTaskImages[] {
  const byPid = new Map(tasks.map((t) => [t.entry.pid, t]));
  const helpers = new Map<number, RestoreTaskImages>();
  for (const t of tasks) {
    const { pgid, sid } = t.entry;
    if (byPid.has(pgid) || helpers.has(pgid) || joinsCriuJob(tasks, t, shellJob).group) continue;
    const leader = byPid.get(sid);
    const parent = leader && !leader.zombie ? leader : tasks.find((m) => m.entry.pgid === pgid && !m.zombie);
    if (!parent || parent.entry.sid !== sid) {
      throw new RestoreError(
        `Process group ${pgid} has no leader in pstree.img and no live member to recreate it from`,
      );
    }
    const entry = create(pstree_entrySchema, {
      pid: pgid,
      ppid: parent.entry.pid,
      pgid,
      sid,
      threads: [pgid],
    });
    helpers.set(pgid, { entry, hostPid: 0, cores: [], pages: [], fdinfos: [], zombie: false, helper: true });
  }
  return [...helpers.values()];
}

/** CLONE_FILES / CLONE_FS when the task shared its fd table or fs with its parent. */
function sharedWithParent(tasks: readonly RestoreTaskImages[], t: RestoreTaskImages): bigint {
  const parent = tasks.find((p) => p.entry.pid === t.entry.ppid && p !== t);
  if (!parent?.ids || !t.ids) return 0n;
  let flags = 0n;
  if (parent.ids.filesId === t.ids.filesId) flags |= BigInt(CLONE.FILES);
  if (parent.ids.fsId === t.ids.fsId) flags |= BigInt(CLONE.FS);
  return flags;
}

/**
 * Zombies end with their exit status; helpers end once their group has its members, and their
 * parents reap them. Their parents then take the SIGCHLD these ends raised, so that the signals
 * queued later are exactly the dumped ones.
 */
function endShortLivedTasks(
  master: PuppetMaster,
  tasks: readonly RestoreTaskImages[],
  agents: Map<number, Agent>,
): void {
  const parents = new Set<number>();
  for (const t of tasks.filter((x) => x.zombie || x.helper)) {
    agents.get(t.entry.pid)!.thread.leave();
    master.makeZombie(t.hostPid, t.helper ? 0 : t.cores[0]!.core.tc!.exitCode, t.cores[0]?.core.tc?.comm);
    const parent = agents.get(t.entry.ppid)!;
    if (t.helper) parent.call("wait4(helper)", NR.wait4, t.entry.pid, 0, WALL, 0);
    parents.add(t.entry.ppid);
  }
  for (const pid of parents) {
    const agent = agents.get(pid)!;
    agent.reset();
    const set = agent.alloc(KERNEL_SIGSET_SIZE, kernelSigset(1n << BigInt(SIG.CHLD - 1)));
    const zero = agent.alloc(TIMESPEC_SIZE, timespec(0n));
    // EAGAIN when none was queued
    agent.attempt("rt_sigtimedwait(SIGCHLD)", NR.rt_sigtimedwait, set, 0, zero, KERNEL_SIGSET_SIZE);
  }
}

/**
 * Creates every task, parents before children, and gives each its memory right away: children
 * are forked from their parent once its memory is back, so what they shared copy-on-write before
 * the dump they share again (see inherit.ts).
 */
function forkTree(
  ctx: TaskRestoreContext,
  tasks: readonly RestoreTaskImages[],
  shellJob: boolean,
  ns: RestoreNamespaces,
  placed: (t: RestoreTaskImages) => void,
  ready: (t: RestoreTaskImages, agent: Agent) => void,
): Map<number, Agent> {
  const master = ctx.master;
  const agents = new Map<number, Agent>();
  // Nested PID namespaces want an order and, per task, a flag or its parent's unshare (pidns.ts).
  const pidNesting = new PidNesting(tasks);
  for (const t of pidNesting.order()) {
    const parent = agents.get(t.entry.ppid) ?? null;
    if (t !== tasks[0] && !parent) {
      throw new RestoreError(`Parent ${t.entry.ppid} of ${t.entry.pid} was not created`);
    }
    // A task cloned outside the user namespace that owned the namespaces it made (the tree's, joined
    // once forked; a nested one, entered later) gets them made there and enters them (ns_holder.ts).
    const own = ns.cloneFlags(t);
    const apart = own && parent ? ns.ownsApart(t, master) : undefined;
    t.hostPid = master.createTask(
      pidChain(t.entry),
      t === tasks[0] ? null : parent,
      (apart ? 0n : own) | sharedWithParent(tasks, t) | pidNesting.beforeClone(t, parent),
    );
    if (apart) {
      const newborn = master.agentFor(t.hostPid);
      try {
        apart(newborn, parent!.pid, own);
      } finally {
        newborn.thread.leave();
      }
    }
    ns.created(t);
    // Into its cgroups before its memory comes back, so that the memory is charged there.
    placed(t);
    const agent = master.agentFor(t.hostPid);
    if (t.helper) agent.call("setpgid(helper)", NR.setpgid, 0, 0);
    // A session must exist before the children that inherit it are forked.
    if (t.entry.sid === t.entry.pid && !joinsCriuJob(tasks, t, shellJob).session) {
      agent.call("setsid", NR.setsid);
    }
    agents.set(t.entry.pid, agent);
    ready(t, agent);
    // Its namespaces (entered, or set up as it made them) before its memory and files.
    ns.beforeMemory(t, agent);
    if (!t.zombie && !t.helper) {
      const parent = t === tasks[0] ? undefined : tasks.find((p) => p.entry.pid === t.entry.ppid);
      fromImagesOf(t, "memory", () => restoreMemory(ctx, agent, t, parent));
    }
  }
  pidNesting.afterForking(agents);
  return agents;
}

export function restore(opts: RestoreOptions): RestoreResult {
  const { log } = opts;
  const { shellJob, restoreDetached: detached, restoreSibling: sibling, pidfile } = opts.options;
  // PREPARE
  const lsmProblem = lsmProfileProblem(opts.options.lsmProfile);
  if (lsmProblem !== undefined) throw new RestoreError(lsmProblem);
  log.debug("Reading the images");
  prepareInheritedFds(opts.options, log); // the caller's fds first, as CRIU checks them when parsing
  const plugins = opts.plugins ?? Plugins.none(STAGE.RESTORE, log);
  plugins.notify("RESTORE_INIT");
  const cp = loadCheckpoint(opts.imagesDir, { opts: opts.options, hooks: opts.hooks, plugins, log });
  const files = cp.session;
  const seccomp = planSeccomp(cp.dir, cp.tasks); // checked now: nothing exists yet
  cp.tasks.push(...groupHelpers(cp.tasks, shellJob));
  const tasks = cp.tasks;
  log.debug(`Read the images of ${tasks.length} task(s)`);
  checkParents(tasks);
  if (tasks[0]!.entry.pid !== 1) checkPidsFree(tasks); // a new PID namespace has every pid free
  // Nothing criu or a script starts takes a pid of the tree (free_pid.ts); again after the script.
  const treePids = new TreePids(tasks);
  treePids.moveCursorPast();
  opts.hooks.run("pre-restore");
  treePids.moveCursorPast();
  const occupied = tasks.flatMap((t) => t.mm?.vmas ?? []);
  const t0 = performance.now();
  if (sibling && !detached) {
    throw new RestoreError("--restore-sibling only makes sense with --restore-detached");
  }
  const cgroups = CgroupsRestore.prepare(cp.dir, cp.inventory.rootCgSet, tasks, opts.options, log);
  const ns = prepareNamespaces({
    dir: cp.dir,
    tasks,
    empty: new Set(opts.options.emptyNetNs ? ["net"] : []),
    options: opts.options,
    hooks: opts.hooks,
    log,
    cgroups,
    plugins,
  }, cp.inventory.rootIds);
  const namespaces = ns.cloneFlags(tasks[0]!);
  // Every puppet holds the images dir at this number until its files are restored: a
  // container's tasks, pivoted into its mounts before their memory, cannot reach it by its path.
  const imagesDirFd = openFd(opts.imagesDir, OPEN.DIRECTORY | OPEN.CLOEXEC);
  let master: PuppetMaster;
  // The helper and the namespace holders take pids none of the tree's tasks and threads needs.
  try {
    master = sibling
      ? PuppetMaster.startSibling(tasks[0]!.entry.pid, namespaces, occupied, log, [imagesDirFd], treePids)
      : PuppetMaster.start(occupied, log, [imagesDirFd], treePids);
  } catch (e) {
    closeFd(imagesDirFd);
    throw e;
  }
  let forkedAt = 0;
  let root = 0;
  const pending = new Map<number, PendingThread[]>();
  const shared = new SharedFiles();
  const cowStats = { compared: 0, skipped: 0, restored: 0 };
  try {
    // Tasks in a cgroup namespace other than their parent's (cgroupns.ts); with a holder, made once
    // the tasks are in the tree's user namespace.
    const taskCgroupNs = new TaskCgroupNamespaces(tasks, cgroups, ns.holder);
    // FORKING (and memory, parents first)
    const ctx = {
      checkpoint: cp,
      master,
      log,
      files,
      options: opts.options,
      shared,
      shmem: new Map(),
      cowStats,
      imagesDirFd,
      beforeTaskState: (t: RestoreTaskImages, agent: Agent) => {
        ns.beforeTaskState(t, agent);
        taskCgroupNs.inOwnUserNamespace(t, agent);
      },
      seccomp,
    };
    cgroups.makeDirs();
    // Namespaces the root is born in are made inside the tree's user namespace when there is one
    // (ns_holder.ts): by the holder, or by the root once its clone made it; else, as those the
    // root joins that exist already, by the helper it is cloned from.
    const userNsMade = ns.holder || (!sibling && (namespaces & BigInt(CLONE.NEWUSER)) !== 0n);
    const madeInside = ns.rootPlans.filter((p) => userNsMade && p.inCreator && !p.inCreatorJoinsExisting);
    for (const plan of ns.rootPlans) {
      if (plan.inCreator && !madeInside.includes(plan)) {
        master.inCreator(plan.inCreator, plan.inCreatorTakesItself === true);
      }
    }
    // A user namespace the tasks join once forked (their pids are criu's PID namespace's).
    const holder = ns.holder ? NamespaceHolder.start(master, namespaces, log) : undefined;
    if (holder) ns.madeInHolder(holder.pid);
    holder?.makeIn(master, madeInside);
    const madeByRoot = holder ? [] : madeInside;
    const agents = forkTree(ctx, tasks, shellJob, ns, (t) => cgroups.place(t, tasks), (t, agent) => {
      if (t === tasks[0]) holder?.enterOthers(agent);
      if (t === tasks[0] && madeByRoot.length && makeInside(agent, madeByRoot) & BigInt(CLONE.NEWCGROUP)) {
        cgroups.placeAgain(t); // it made its cgroup namespace at the cgroups above its own
      }
      taskCgroupNs.enter(t, agent);
    });
    holder?.joinUser([...agents.values()]);
    taskCgroupNs.inUserNamespace();
    ns.afterForking(agents, master);
    root = tasks[0]!.hostPid;
    master.releaseHelper();
    plugins.notify("POST_FORKING");
    forkedAt = performance.now();
    // NAMESPACES
    // setup-namespaces/post-setup-namespaces run only when the restore makes namespaces; as in
    // CRIU, the first sees them empty (it may make devices the images leave to it), the second
    // filled.
    if (ns.made) opts.hooks.run("setup-namespaces", root);
    ns.fill((t) => agents.get(t.entry.pid)!);
    if (ns.made) opts.hooks.run("post-setup-namespaces", root);
    // GROUPS: helpers made their groups when forked; every task joins its own now.
    for (const t of tasks) {
      if (!t.helper && !joinsCriuJob(tasks, t, shellJob).group) {
        // In a nested PID namespace, a group it cannot see is set by its parent (pidns.ts).
        const parent = t.entry.nested.length ? tasks.find((p) => p.entry.pid === t.entry.ppid) : undefined;
        restoreGroup(agents.get(t.entry.pid)!, t, parent && [agents.get(parent.entry.pid)!, parent]);
      }
    }
    endShortLivedTasks(master, tasks, agents);
    // RESTORE
    for (const t of tasks) {
      if (t.zombie || t.helper) continue;
      pending.set(t.entry.pid, fromImagesOf(t, "task", () => restoreTask(ctx, t, agents.get(t.entry.pid)!)));
    }
    afterAllFds(files, shared);
    for (const t of tasks) {
      if (t.zombie || t.helper) continue;
      const threads = pending.get(t.entry.pid)!.map((p) => ({ tid: p.agent.tid, core: p.core }));
      cgroups.placeThreads(t, threads);
      restoreDumpable(agents.get(t.entry.pid)!, t);
    }
    opts.hooks.run("post-restore", root);
    if (pidfile) writePidfile(pidfile, root);
    ns.afterRestore();
    opts.hooks.run("pre-resume", root);
    log.debug("Loading registers");
    // RESUME: from here on nothing can fail half-way in a way we could undo.
    for (const t of tasks.filter((x) => !x.zombie && !x.helper)) {
      const threads = pending.get(t.entry.pid)!;
      closeParked(threads[0]!.agent, shared);
      // A thread's own seccomp last: a filter may forbid any call before (seccomp.ts).
      fromImagesOf(t, "seccomp", () => restoreSeccomp(threads, seccomp, TRACE_OPTIONS));
      dropScratch(threads[0]!.agent, master.scratch);
      fromImagesOf(
        t,
        "registers",
        () => loadRegisters(threads, t.cores[0]!.core.tc, awayNs(dumpedUptimeUs(cp.inventory))),
      );
    }
  } catch (e) {
    master.abort();
    cgroups.undo();
    throw e;
  } finally {
    endFilesRestore(files);
    closeFd(imagesDirFd);
  }
  // Nothing runs in the tasks any more: cgroups saved frozen take them as they are let go.
  cgroups.freezeAgain();
  const stopped: number[] = [];
  for (const t of tasks.filter((x) => !x.zombie && !x.helper)) {
    const threads = pending.get(t.entry.pid)!;
    const stopSigno = restoredStopSignal(t.cores[0]!.core.tc);
    detachTask(threads, stopSigno);
    if (stopSigno !== undefined) stopped.push(t.hostPid);
  }
  waitUntilStopped(stopped, log);
  // The tree runs: a device a plugin paused must come back now; a failure can only be told.
  for (const t of tasks.filter((x) => !x.zombie && !x.helper)) {
    try {
      plugins.notify("RESUME_DEVICES_LATE", t.hostPid);
    } catch (e) {
      log.error((e as Error).message);
    }
  }
  const done = performance.now();
  const result: RestoreResult = {
    pid: root,
    forkingUs: Math.round((forkedAt - t0) * 1000),
    restoreUs: Math.round((done - forkedAt) * 1000),
    pages: cowStats,
  };
  // Like CRIU, which runs in its work dir (-W), stats-restore goes there.
  const workDir = opts.options.workDir;
  writeRestoreStats(workDir === undefined ? cp.dir : new ImageDir(workDir), result);
  try {
    opts.hooks.run("post-resume", root);
  } catch (e) {
    log.error(`post-resume script failed: ${(e as Error).message}`);
  }
  log.info(`Restored ${tasks.length} task(s); root ${root}`);
  if (!detached) result.exitCode = waitForRoot(root);
  return result;
}

/**
 * Runs one step of rebuilding task `t`. The values the step hands the kernel come from the task's
 * images, which PREPARE checked as far as it can: a syscall the kernel still refuses names them,
 * so that a damaged checkpoint is recognisable as one.
 */
function fromImagesOf<T>(
  t: RestoreTaskImages,
  part: "memory" | "task" | "registers" | "seccomp",
  step: () => T,
): T {
  const pid = t.entry.pid;
  switch (part) {
    case "memory":
      return fromImage(`mm-${pid}.img and pagemap-${pid}.img`, step, `the memory of process ${pid}`);
    case "task":
      return fromImage(
        `core-${pid}.img, fs-${pid}.img and fdinfo-${t.ids?.filesId}.img`,
        step,
        `process ${pid}`,
      );
    case "registers":
      return fromImage(
        `core-${pid}.img and its threads' core images`,
        step,
        `the registers of process ${pid}`,
      );
    case "seccomp":
      return fromImage("seccomp.img", step, `the seccomp filters of process ${pid}`);
  }
}

/** Runs a step of the restore that gives the kernel what `image` holds; a refusal names it. */
function fromImage<T>(image: string, step: () => T, what = "the restore"): T {
  try {
    return step();
  } catch (e) {
    if (!isSyscallError(e)) throw e;
    throw new RestoreError(`Restoring ${what} from ${image} failed: ${e.message}`, e.errno, { cause: e });
  }
}

/** As CRIU: after post-restore, before the tree runs; a pidfile we cannot write fails the restore. */
function writePidfile(path: string, root: number): void {
  try {
    Deno.writeTextFileSync(path, `${root}`);
  } catch (e) {
    throw new RestoreError(`Cannot write the pidfile ${path}: ${osReason(e)}`);
  }
}

/** Every field CRIU's write_stats() sets, pages_restored included: readers expect them all. */
function writeRestoreStats(dir: ImageDir, r: RestoreResult): void {
  const cow = r.pages;
  try {
    dir.write(KINDS.STATS, "restore", [
      create(stats_entrySchema, {
        restore: create(restore_stats_entrySchema, {
          pagesCompared: BigInt(cow.compared),
          pagesSkippedCow: BigInt(cow.skipped),
          forkingTime: r.forkingUs,
          restoreTime: r.restoreUs,
          pagesRestored: BigInt(cow.restored),
        }),
      }),
    ]);
  } catch (e) {
    // Stats are informative; a read-only images dir must not fail a restore that worked.
    void e;
  }
}

/**
 * How long the tasks were away, from the uptime the dump recorded. A later boot (uptime smaller
 * than at dump) gives 0: nothing is known then.
 */
function awayNs(dumpUptimeUs: bigint | undefined): bigint {
  if (dumpUptimeUs === undefined) return 0n;
  const nowUs = clockNs(CLOCK_BOOTTIME) / 1000n;
  return nowUs > dumpUptimeUs ? (nowUs - dumpUptimeUs) * 1000n : 0n;
}

/** Waits for the restored root (our child) to end; returns its exit status as a shell would. */
function waitForRoot(pid: number): number {
  for (;;) {
    const st = pt.wait(pid);
    if (!st) continue;
    if (st.kind === "exited") return st.code;
    if (st.kind === "signaled") return 128 + st.signal;
  }
}
