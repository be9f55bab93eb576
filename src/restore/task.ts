/**
 * Turning one puppet into the dumped task: its address space, files, signal and timer state,
 * threads and credentials. The task stays stopped; `resumeTask` gives it its registers last.
 */
import { type core_entry, thread_core_entrySchema } from "../images/gen/core_pb.ts";
import { isFieldSet } from "@bufbuild/protobuf";
import type { vma_entry } from "../images/gen/vma_pb.ts";
import * as pt from "../../ffi/ptrace.ts";
import { readMaps, readStatus } from "../../ffi/proc.ts";
import { getRlimit, processExists, setRlimit } from "../../ffi/process.ts";
import { prctlMmMap, type Regs } from "../../ffi/structs.ts";
import { ProcMem } from "../../ffi/memory.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { RemoteThread } from "../../ffi/remote.ts";
import { F, NR, O, PR, RSEQ_FLAG_UNREGISTER, SIG } from "../../ffi/syscalls.ts";
import type { Agent, BatchCall } from "../agent.ts";
import {
  fillPages,
  finishAreas,
  finishBackings,
  installGuards,
  mapAreas,
  moveSpecialAreas,
  PAGE_SIZE,
  VMA,
  withoutSpecialPages,
} from "../objects/memory.ts";
import type { MappingRestoreContext, RestoredObject } from "../objects/mappings.ts";
import { type FilesSession, restoreFds, type SharedFiles } from "../objects/files.ts";
import { pendingSignalCalls, sigactionCalls, sigaltstackCall } from "../objects/signals.ts";
import { restoreTimers } from "../objects/timers.ts";
import {
  alreadyHas,
  credsCalls,
  restoreBoundingSet,
  restoreLoginuid,
  sameCreds,
  sameIds,
  securebits,
} from "../objects/creds.ts";
import {
  applyRestart,
  regsFromThreadInfo,
  restartedSleepTimespec,
  xstateFromThreadInfo,
} from "../objects/cpu.ts";
import { RestoreError } from "../errors.ts";
import { TASK_STATE } from "../dump/task.ts";
import type { Checkpoint, RestoreTaskImages } from "./images.ts";
import type { PuppetMaster } from "./puppet.ts";
import { findFreeArea, PUPPET_SCRATCH_SIZE } from "./puppet.ts";
import type { Log } from "../log.ts";
import { dropUnlisted, inheritedAreas, patchInherited, splitRuns } from "./inherit.ts";
import type { RunOptions } from "../options/options.ts";
import { pathToOpen } from "../objects/remap.ts";

export interface TaskRestoreContext {
  checkpoint: Checkpoint;
  master: PuppetMaster;
  log: Log;
  /** What every kind of file is told, from PREPARE to the end. */
  files: FilesSession;
  /** Files open in the tasks restored so far. */
  shared: SharedFiles;
  /** Pages compared with the parent's and left shared, and pages filled from the images (stats-restore). */
  cowStats: { compared: number; skipped: number; restored: number };
  /**
   * The securebits every puppet has until its own credentials are set: each is a copy of the
   * helper (or of the sibling root), so they are asked once.
   */
  puppetSecbits?: number;
  /** Objects behind mappings (shared memory) restored so far, by their backing's key. */
  shmem: Map<string, RestoredObject>;
  /** The restore's options, read-only, as the object kinds get them. */
  options: RunOptions;
}

/** A thread ready to be resumed: its agent (still inside) and the core it must end up with. */
export interface PendingThread {
  agent: Agent;
  core: core_entry;
}

function unregisterRseq(agent: Agent): void {
  const c = pt.rseqConfiguration(agent.tid);
  if (c.abiPointer === 0n) return;
  agent.call("rseq(unregister)", NR.rseq, c.abiPointer, c.abiSize, RSEQ_FLAG_UNREGISTER, c.signature);
}

/**
 * Unmaps everything the puppet inherited but the scratch page and the kernel's special areas,
 * a whole gap at a time (a puppet made from a copy of ourselves has hundreds of mappings).
 */
function clearAddressSpace(
  agent: Agent,
  scratch: bigint,
  inherited: Set<vma_entry>,
): ReturnType<typeof readMaps> {
  const live = readMaps(agent.pid).sort((a, b) => (a.start < b.start ? -1 : 1));
  const isSpecial = (m: { path: string }) => m.path === "[vdso]" || m.path.startsWith("[vvar");
  const kept = (m: { start: bigint; end: bigint; path: string }) =>
    m.start === scratch || isSpecial(m) || m.path === "[vsyscall]" ||
    [...inherited].some((e) => e.start === m.start && e.end === m.end);
  // One munmap per stretch of mappings to drop, holes included: a copy of ourselves has hundreds.
  let from: bigint | null = null;
  let to = 0n;
  const flush = () => {
    if (from !== null) agent.call("munmap", NR.munmap, from, to - from);
    from = null;
  };
  for (const m of live) {
    if (kept(m)) {
      flush();
      continue;
    }
    from ??= m.start;
    to = m.end;
  }
  flush();
  return live.filter(isSpecial);
}

/**
 * A task that had unmapped its vDSO (or its vvar pages) gets none back: the puppet's are unmapped.
 * Answers the special areas left to move into place.
 */
function dropSpecialsNotDumped(
  agent: Agent,
  live: ReturnType<typeof readMaps>,
  dumped: readonly vma_entry[],
): ReturnType<typeof readMaps> {
  const hasVdso = dumped.some((e) => e.status & VMA.VDSO);
  const hasVvar = dumped.some((e) => e.status & VMA.VVAR);
  return live.filter((m) => {
    const wanted = m.path === "[vdso]" ? hasVdso : hasVvar;
    if (!wanted) agent.call(`munmap(${m.path})`, NR.munmap, m.start, m.end - m.start);
    return wanted;
  });
}

/** What the mapping backings need to restore this task's areas. */
function mappingContext(ctx: TaskRestoreContext, agent: Agent): MappingRestoreContext {
  return {
    agent,
    dir: ctx.checkpoint.dir,
    files: ctx.checkpoint.files,
    objects: ctx.shmem,
    allVmas: allVmasOf(ctx.checkpoint),
    log: ctx.log,
  };
}

const allVmasCache = new WeakMap<Checkpoint, vma_entry[]>();

function allVmasOf(cp: Checkpoint): vma_entry[] {
  let all = allVmasCache.get(cp);
  if (!all) allVmasCache.set(cp, all = cp.tasks.flatMap((t) => t.mm?.vmas ?? []));
  return all;
}

/**
 * Rebuilds the task's address space. A child forked from its restored parent keeps the areas it
 * shares with it (see inherit.ts); everything else is unmapped and mapped again from the images.
 */
export function restoreMemory(
  ctx: TaskRestoreContext,
  agent: Agent,
  t: RestoreTaskImages,
  parent?: RestoreTaskImages,
): void {
  const mm = t.mm!;
  unregisterRseq(agent);
  const files = ctx.checkpoint.files;
  const inherited = parent?.mm
    ? inheritedAreas(mm.vmas, parent.mm.vmas, readMaps(agent.pid), files)
    : new Set<vma_entry>();
  const specials = dropSpecialsNotDumped(
    agent,
    clearAddressSpace(agent, ctx.master.scratch, inherited),
    mm.vmas,
  );
  const parking = findFreeArea(
    specials.reduce((n, s) => n + (s.end - s.start), 0n),
    [...mm.vmas, ...specials, {
      start: ctx.master.scratch,
      end: ctx.master.scratch + BigInt(PUPPET_SCRATCH_SIZE),
    }],
  );
  moveSpecialAreas(agent, specials, mm.vmas, parking);
  const fresh = mm.vmas.filter((e) => !inherited.has(e));
  const mappings = mappingContext(ctx, agent);
  mapAreas(mappings, fresh);
  let offset = 0;
  const runs = withoutSpecialPages(
    t.pages.map((r) => {
      const run = { ...r, offset };
      offset += r.pages * PAGE_SIZE;
      return run;
    }),
    mm.vmas,
  );
  const { own, inheritedRuns } = splitRuns(runs, inherited);
  fillPages(agent, t.pagesPath!, own);
  const cow = patchInherited(agent.pid, t.pagesPath!, inheritedRuns);
  ctx.cowStats.compared += cow.compared;
  ctx.cowStats.skipped += cow.compared - cow.written;
  ctx.cowStats.restored += own.reduce((n, r) => n + r.pages, 0) + cow.written;
  dropUnlisted(agent, inherited, runs, parent?.pages ?? []);
  if (inherited.size) {
    ctx.log.debug(
      `Task ${t.entry.pid}: kept ${inherited.size} areas from its parent; ${cow.written} of ${cow.compared} pages differed`,
    );
  }
  finishBackings(mappings, fresh);
  finishAreas(agent, fresh);
  if (t.guards?.length) installGuards(agent, t.guards);
  setMmFields(ctx, agent, t);
}

function setMmFields(ctx: TaskRestoreContext, agent: Agent, t: RestoreTaskImages): void {
  const mm = t.mm!;
  const exe = ctx.checkpoint.files.get(mm.exeFileId).reg
    ? pathToOpen(ctx.checkpoint.files, mm.exeFileId)
    : undefined;
  if (!exe) {
    throw new RestoreError(`The executable of ${t.entry.pid} (file ${mm.exeFileId}) is not a regular file`);
  }
  agent.reset();
  // The kernel refuses to switch exe while the old one is mapped; when the puppet already runs
  // the very same file (restoring `sleep` itself), there is nothing to switch.
  const sameExe = Deno.readLinkSync(`/proc/${agent.pid}/exe`) === exe;
  const exeFd = sameExe ? -1n : agent.raw(NR.open, agent.string(exe), O.RDONLY | O.CLOEXEC, 0);
  if (exeFd < 0n && !sameExe) throw new RestoreError(`Cannot open the executable ${exe}: errno ${-exeFd}`);
  try {
    const auxv = new BigUint64Array(mm.mmSavedAuxv);
    const auxvAddr = agent.alloc(auxv.byteLength, new Uint8Array(auxv.buffer));
    const map = prctlMmMap({
      startCode: mm.mmStartCode,
      endCode: mm.mmEndCode,
      startData: mm.mmStartData,
      endData: mm.mmEndData,
      startBrk: mm.mmStartBrk,
      brk: mm.mmBrk,
      startStack: mm.mmStartStack,
      argStart: mm.mmArgStart,
      argEnd: mm.mmArgEnd,
      envStart: mm.mmEnvStart,
      envEnd: mm.mmEnvEnd,
      auxv: auxvAddr,
      auxvSize: auxv.byteLength,
      exeFd: Number(exeFd),
    });
    const mapAddr = agent.alloc(map.byteLength, map);
    agent.call("prctl(PR_SET_MM_MAP)", NR.prctl, PR.SET_MM, PR.SET_MM_MAP, mapAddr, map.byteLength, 0);
  } finally {
    if (exeFd >= 0n) agent.later("close(exe)", NR.close, exeFd);
  }
  if (mm.thpDisabled) agent.call("prctl(PR_SET_THP_DISABLE)", NR.prctl, PR.SET_THP_DISABLE, 1, 0, 0, 0);
}

function restoreFs(ctx: TaskRestoreContext, agent: Agent, t: RestoreTaskImages): void {
  if (!t.fs) return;
  const dirOf = (id: number) => pathToOpen(ctx.checkpoint.files, id); // a removed one: its ghost
  const root = dirOf(t.fs.rootId);
  const cwd = dirOf(t.fs.cwdId);
  agent.reset();
  const calls: BatchCall[] = [];
  if (root !== "/") calls.push({ name: `chroot(${root})`, nr: NR.chroot, args: [agent.string(root)] });
  calls.push({ name: `chdir(${cwd})`, nr: NR.chdir, args: [agent.string(cwd)] });
  if (t.fs.umask !== undefined) calls.push({ name: "umask", nr: NR.umask, args: [t.fs.umask] });
  try {
    agent.batch(calls);
  } catch (e) {
    const errno = isSyscallError(e) ? e.errno : 0;
    throw new RestoreError(
      `Cannot enter the root or working directory of ${t.entry.pid}: ${(e as Error).message}`,
      errno,
      { cause: e },
    );
  }
}

const RLIMIT_NOFILE = 7;

function restoreFiles(ctx: TaskRestoreContext, agent: Agent, t: RestoreTaskImages): void {
  const pid = agent.pid;
  // Room for every fd number the task had, and for parking fds above them.
  const hard = getRlimit(pid, RLIMIT_NOFILE).max;
  setRlimit(pid, RLIMIT_NOFILE, hard, hard);
  const parkBase = Math.max(64, ...t.fdinfos.map((f) => f.fd + 1));
  const park = (fd: number): number => {
    const moved = Number(agent.call("fcntl(F_DUPFD_CLOEXEC)", NR.fcntl, fd, F.DUPFD_CLOEXEC, parkBase));
    agent.later("close", NR.close, fd);
    ctx.shared.noteParked(pid, moved);
    return moved;
  };
  restoreFds(
    {
      agent,
      nsPid: t.entry.pid,
      nsSid: t.entry.sid,
      table: ctx.checkpoint.files,
      session: ctx.files,
      shared: ctx.shared,
      park,
      parkBase,
      options: ctx.options,
      log: ctx.log,
    },
    t.fdinfos,
  );
}

/** Closes what restoreFiles parked in a task; runs once every task has its files. */
export function closeParked(agent: Agent, shared: SharedFiles): void {
  const fds = shared.parked.get(agent.pid) ?? [];
  agent.batch(fds.map((fd) => ({ name: `close(${fd})`, nr: NR.close, args: [fd] })), true);
}

function restoreTaskState(agent: Agent, t: RestoreTaskImages): void {
  const tc = t.cores[0]!.core.tc!;
  const pid = agent.pid;
  agent.later("personality", NR.personality, tc.personality);
  // Limits are set from outside: what the files left queued (dup3 to high fds) must be done.
  agent.settle();
  tc.rlimits?.rlimits.forEach((r, res) => restoreRlimit(pid, res, r.cur, r.max));
  restoreLoginuid(agent, t.entry.pid, tc.loginuid);
  restoreMembarrier(agent, tc.membarrierRegistrationMask ?? 0);
  if (tc.childSubreaper) {
    agent.later("prctl(PR_SET_CHILD_SUBREAPER)", NR.prctl, PR.SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  }
  if (tc.oomScoreAdj !== undefined) writeProc(pid, "oom_score_adj", String(tc.oomScoreAdj));
}

/**
 * membarrier registrations belong to the address space: one call per registered command
 * (MEMBARRIER_CMD_REGISTER_*), each a bit of the dumped mask, as CRIU restores them.
 */
function restoreMembarrier(agent: Agent, mask: number): void {
  for (let bit = 0; bit < 32; bit++) {
    const cmd = (1 << bit) >>> 0;
    if (mask & cmd) agent.later(`membarrier(register ${cmd})`, NR.membarrier, cmd, 0, 0);
  }
}

/**
 * Sets one limit from outside. Raising a hard limit needs CAP_SYS_RESOURCE, which we may lack:
 * then the limit stays at the hard limit the task has, and the log says so.
 */
function restoreRlimit(pid: number, res: number, cur: bigint, max: bigint): void {
  try {
    setRlimit(pid, res, cur, max);
  } catch (e) {
    if (!isSyscallError(e, "EPERM")) throw e;
    const have = getRlimit(pid, res).max;
    setRlimit(pid, res, cur < have ? cur : have, have);
  }
}

function writeProc(pid: number, file: string, value: string): void {
  try {
    Deno.writeTextFileSync(`/proc/${pid}/${file}`, value);
  } catch {
    // best effort: the value is advisory
  }
}

/**
 * The process group, as dumped (the session was made when the task was forked). Tasks are
 * restored parents first, so a group's leader normally exists before its members join it. With
 * --shell-job a group outside the tree stays ours (the puppet inherited it).
 */
export function restoreGroup(agent: Agent, t: RestoreTaskImages): void {
  const { pid, pgid } = t.entry;
  if (pgid === 0) return; // a group outside the tree's PID namespace: inherited
  if (pgid === currentGroup(agent.pid)) return;
  const r = agent.raw(NR.setpgid, 0, pgid);
  if (r < 0n && (pgid === pid || processExists(pgid))) {
    throw new RestoreError(`Cannot put ${pid} into process group ${pgid} (pstree.img): errno ${-r}`);
  }
}

/** A task's process group as its own PID namespace sees it (/proc/PID/status, no trap needed). */
function currentGroup(pid: number): number {
  const ids = (readStatus(pid).get("NSpgid") ?? "").split(/\s+/).filter((s) => s);
  return Number(ids.at(-1) ?? -1);
}

/** The policy flag that gives a thread's children the default policy back. */
const SCHED_RESET_ON_FORK = 0x40000000;
/** Policies sched_setscheduler sets: OTHER, FIFO, RR, BATCH, IDLE (not DEADLINE). */
const SETTABLE_POLICIES = [0, 1, 2, 3, 5];

/**
 * Scheduling policy (with its reset-on-fork flag), real-time priority and nice value of the
 * calling thread: always set, even to the defaults, since a puppet has what criu had (`nice criu
 * restore`) or the thread it was cloned from.
 */
function schedulingCalls(agent: Agent, policy: number, prio: number, nice: number): BatchCall[] {
  const base = policy & ~SCHED_RESET_ON_FORK;
  const realtime = base === 1 || base === 2;
  if (
    !SETTABLE_POLICIES.includes(base) || (realtime ? prio < 1 || prio > 99 : prio !== 0) || nice < -20 ||
    nice > 19
  ) {
    throw new RestoreError(
      `Inconsistent scheduling in the image: policy ${policy}, priority ${prio}, nice ${nice}`,
    );
  }
  const param = agent.alloc(4, new Uint8Array(new Int32Array([prio]).buffer));
  return [
    { name: `sched_setscheduler(${policy}, ${prio})`, nr: NR.sched_setscheduler, args: [0, policy, param] },
    { name: `setpriority(${nice})`, nr: NR.setpriority, args: [/* PRIO_PROCESS */ 0, 0, nice] },
  ];
}

/** Per-thread state set from inside the thread itself. */
function threadStateCalls(agent: Agent, core: core_entry): BatchCall[] {
  const tcore = core.threadCore;
  const ti = core.threadInfo!;
  const calls: BatchCall[] = [{ name: "set_tid_address", nr: NR.set_tid_address, args: [ti.clearTidAddr] }];
  if (tcore) {
    if (tcore.futexRla) {
      calls.push({
        name: "set_robust_list",
        nr: NR.set_robust_list,
        args: [tcore.futexRla, tcore.futexRlaLen],
      });
    }
    calls.push(...sigaltstackCall(agent, tcore.sas));
    if (tcore.comm) {
      const name = agent.string(tcore.comm.slice(0, 15));
      calls.push({ name: "prctl(PR_SET_NAME)", nr: NR.prctl, args: [PR.SET_NAME, name, 0, 0, 0] });
    }
    calls.push(...schedulingCalls(agent, tcore.schedPolicy ?? 0, tcore.schedPrio ?? 0, tcore.schedNice ?? 0));
    const rs = tcore.rseqEntry;
    if (rs && rs.rseqAbiPointer !== 0n) {
      calls.push({ name: "rseq", nr: NR.rseq, args: [rs.rseqAbiPointer, rs.rseqAbiSize, 0, rs.signature] });
    }
  }
  return calls;
}

/**
 * Rebuilds the task and creates its threads; returns them (leader first), still stopped inside
 * the agents, for `resumeThreads`.
 */
export function restoreTask(ctx: TaskRestoreContext, t: RestoreTaskImages, agent: Agent): PendingThread[] {
  const log = ctx.log;
  log.info(`Restoring task ${t.entry.pid}`);
  // A table or fs shared with the parent (CLONE_FILES, CLONE_FS) was restored by the parent.
  const parent = ctx.checkpoint.tasks.find((p) => p.entry.pid === t.entry.ppid && p !== t);
  if (!parent?.ids || parent.ids.fsId !== t.ids?.fsId) restoreFs(ctx, agent, t);
  if (!parent?.ids || parent.ids.filesId !== t.ids?.filesId) restoreFiles(ctx, agent, t);
  restoreTaskState(agent, t);
  const threads: PendingThread[] = [{ agent, core: t.cores[0]!.core }];
  // The bounding set goes first, in the leader, so that its threads inherit it.
  const leaderCreds = t.cores[0]!.core.threadCore?.creds;
  let leaderHasCreds = false;
  if (leaderCreds) {
    restoreBoundingSet(agent, leaderCreds);
    ctx.puppetSecbits ??= securebits(agent);
    leaderHasCreds = alreadyHas(agent, leaderCreds, ctx.puppetSecbits);
  }
  const others = t.cores.slice(1);
  const hostTids = ctx.master.createThreads(agent, others.map((c) => c.tid));
  if (others.length) log.debug(`Task ${t.entry.pid}: created ${others.length} thread(s)`);
  // Each thread then sets the rest of its state in one batch: its own state, its queued signals,
  // credentials last (after them the puppet may no longer be allowed the rest), and the
  // parent-death signal after them, since a change of ids clears it.
  const tc = t.cores[0]!.core.tc!;
  const batchOf = (a: Agent, i: number): BatchCall[] => {
    const leader = i === 0;
    const core = t.cores[i]!.core;
    const tcore = core.threadCore;
    a.reset();
    const calls = threadStateCalls(a, core);
    if (leader) {
      calls.push(...sigactionCalls(a, tc.sigactions));
      calls.push(...pendingSignalCalls(a, t.entry.pid, t.entry.pid, tc.signalsS, true));
    }
    calls.push(...pendingSignalCalls(a, t.entry.pid, t.cores[i]!.tid, tcore?.signalsP, false));
    const creds = tcore?.creds;
    // A thread holds what the leader had when it was cloned.
    if (creds && !(leaderHasCreds && sameCreds(creds, leaderCreds!))) {
      if (!leader && !sameIds(creds.capBnd, leaderCreds?.capBnd ?? [])) restoreBoundingSet(a, creds);
      calls.push(...credsCalls(a, creds));
      // A change of ids makes the task non-dumpable, and the tasks restored after it (its
      // children in a user namespace) could no longer take fds from it: it stays dumpable until
      // every task is restored (restoreDumpable).
      calls.push({ name: "prctl(PR_SET_DUMPABLE)", nr: NR.prctl, args: [PR.SET_DUMPABLE, 1, 0, 0, 0] });
    }
    if (tcore?.pdeathSig) {
      calls.push({
        name: "prctl(PR_SET_PDEATHSIG)",
        nr: NR.prctl,
        args: [PR.SET_PDEATHSIG, tcore.pdeathSig, 0, 0, 0],
      });
    }
    return calls;
  };
  agent.batch(batchOf(agent, 0));
  const entered = hostTids.map((tid) => RemoteThread.enter(tid, agent.thread.syscallIp));
  agent.forThreads(entered, THREAD_SCRATCH, (a, i) => a.startBatch(batchOf(a, i + 1)))
    .forEach((a, i) => threads.push({ agent: a, core: others[i]!.core }));
  // Timers last: one may notify a thread (SIGEV_THREAD_ID), which must exist by now.
  restoreTimers(agent, tc.timers);
  // Other tasks take fds from this one from now on: nothing may be left queued.
  agent.settle();
  if (others.length) log.debug(`Task ${t.entry.pid}: threads restored`);
  return threads;
}

/**
 * Gives task `t` back its dumped dumpable flag. Called once every task has its fds: until then a
 * task stays dumpable, so that others (in a user namespace, without CAP_SYS_PTRACE over criu's
 * namespace) may still take fds from it after it changed its ids.
 */
export function restoreDumpable(agent: Agent, t: RestoreTaskImages): void {
  const dumpable = t.mm?.dumpable;
  if (dumpable === undefined) return;
  agent.call("prctl(PR_SET_DUMPABLE)", NR.prctl, PR.SET_DUMPABLE, dumpable, 0, 0, 0);
}

/** Scratch for each thread's batch while the threads run theirs at once (Agent.forThreads). */
const THREAD_SCRATCH = 4096;

/**
 * Makes an interrupted syscall start again on resume. Images hold it restarted already, as CRIU
 * stores it (see applyRestart), or, when made by criu-ts before it followed CRIU here, with the
 * kernel's -ERESTART* code, which gets the same treatment now. A sleep made again is shortened by
 * the time the task was away, as the kernel's own restart would have counted it.
 */
export function fixRestart(regs: Regs, sleep: SleepFixup): void {
  if (regs.getSigned("orig_ax") < 0n) return;
  applyRestart(regs);
  const timespec = restartedSleepTimespec(regs);
  if (timespec !== 0n) sleep(timespec);
  regs.set("orig_ax", -1);
}

/** Shortens a sleep's remaining time (a timespec in the task) by the time the task was away. */
export type SleepFixup = (remaining: bigint) => void;

/** A SleepFixup that takes `awayNs` off the timespec at the given address of task `pid`. */
export function sleepFixup(pid: number, awayNs: bigint): SleepFixup {
  return (addr) => {
    const mem = new ProcMem(pid);
    try {
      const v = new DataView(mem.read(addr, 16).buffer);
      const left = v.getBigInt64(0, true) * 1_000_000_000n + v.getBigInt64(8, true) - awayNs;
      const ns = left > 0n ? left : 0n;
      v.setBigInt64(0, ns / 1_000_000_000n, true);
      v.setBigInt64(8, ns % 1_000_000_000n, true);
      mem.write(addr, new Uint8Array(v.buffer));
    } finally {
      mem.close();
    }
  };
}

/**
 * A thread's own blocked mask when the image has one: CRIU writes the leader's in the task part
 * only (and an unset proto2 field still reads as 0, so presence is what tells).
 */
function threadMask(core: core_entry): bigint | undefined {
  const tcore = core.threadCore;
  return tcore && isFieldSet(tcore, thread_core_entrySchema.field.blkSigset) ? tcore.blkSigset : undefined;
}

/** Gives each thread its dumped registers and mask. The agents are closed; tasks stay stopped. */
export function loadRegisters(threads: readonly PendingThread[], tc: core_entry["tc"], awayNs: bigint): void {
  for (const { agent, core } of threads) {
    const ti = core.threadInfo!;
    const regs = regsFromThreadInfo(ti);
    fixRestart(regs, sleepFixup(agent.pid, awayNs));
    const xstate = xstateFromThreadInfo(ti, pt.getXstate(agent.tid));
    pt.setXstate(agent.tid, xstate);
    pt.setRegs(agent.tid, regs);
    pt.setSigmask(agent.tid, threadMask(core) ?? tc?.blkSigset ?? 0n);
  }
}

/** Unmaps the scratch page from inside the task: its last remote syscall. */
export function dropScratch(agent: Agent, scratch: bigint): void {
  agent.unmapRunner(scratch, PUPPET_SCRATCH_SIZE);
}

/**
 * Lets the task's threads go. A task dumped stopped is sent the signal that had stopped it first,
 * so it stops again before it runs, and its parent is told of the stop (as after SIGSTOP or ^Z).
 */
export function detachTask(threads: readonly PendingThread[], stopSigno: number | undefined): void {
  const leader = threads[0]!.agent.pid;
  if (stopSigno !== undefined) pt.kill(leader, stopSigno);
  for (const th of threads) pt.detach(th.agent.tid);
}

/** The signal to stop a task with again, for a task dumped stopped; images without one say SIGSTOP. */
export function restoredStopSignal(tc: core_entry["tc"]): number | undefined {
  if (tc?.taskState !== TASK_STATE.stopped) return undefined;
  const signo = tc.stopSigno ?? 0;
  return STOP_SIGNALS.includes(signo) ? signo : SIG.STOP;
}

/** The signals a stopped task may have been stopped by. */
const STOP_SIGNALS: readonly number[] = [SIG.STOP, SIG.TSTP, SIG.TTIN, SIG.TTOU];
