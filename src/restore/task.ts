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
import { closeFd, OPEN, openFd, preadFull, pwriteFull } from "../../ffi/fd.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { RemoteThread } from "../../ffi/remote.ts";
import { F, NR, O, PR, RSEQ_FLAG_UNREGISTER, SIG } from "../../ffi/syscalls.ts";
import type { Agent, BatchCall } from "../agent.ts";
import {
  fillPages,
  finishAreas,
  mapAreas,
  mapFilesPath,
  moveSpecialAreas,
  PAGE_SIZE,
  VMA,
  withoutSpecialPages,
} from "../objects/memory.ts";
import { KINDS } from "../images/kinds.ts";
import type { pagemap_entry, pagemap_head } from "../images/gen/pagemap_pb.ts";
import { restoreFds, type SharedFiles } from "../objects/files.ts";
import { pendingSignalCalls, sigactionCalls, sigaltstackCall } from "../objects/signals.ts";
import { restoreTimers } from "../objects/timers.ts";
import {
  alreadyHas,
  credsCalls,
  restoreBoundingSet,
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
import type { Checkpoint, RestoreTaskImages } from "./images.ts";
import type { PuppetMaster } from "./puppet.ts";
import { findFreeArea, PUPPET_SCRATCH_SIZE } from "./puppet.ts";
import type { Log } from "../log.ts";
import { dropUnlisted, inheritedAreas, patchInherited, splitRuns } from "./inherit.ts";
import { type RestoreTerminal, takeTerminal } from "../objects/tty.ts";
import { fd_types } from "../images/gen/fdinfo_pb.ts";

export interface TaskRestoreContext {
  checkpoint: Checkpoint;
  master: PuppetMaster;
  log: Log;
  /** Where a shell job's terminal fds come from. */
  terminal: RestoreTerminal;
  /** Files open in the tasks restored so far. */
  shared: SharedFiles;
  /** Pages compared with the parent's and left shared (stats-restore). */
  cowStats: { compared: number; skipped: number };
  /**
   * The securebits every puppet has until its own credentials are set: each is a copy of the
   * helper (or of the sibling root), so they are asked once.
   */
  puppetSecbits?: number;
  /** Shared anonymous objects restored so far, by shmid. */
  shmem: Map<bigint, { path: string; vma: vma_entry; filled: boolean }>;
  shellJob: boolean;
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

function openForMapping(ctx: TaskRestoreContext, agent: Agent, e: vma_entry): bigint {
  if (e.status & VMA.ANON_SHARED) return openSharedObject(ctx, agent, e);
  if (!(e.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED))) return -1n;
  const file = ctx.checkpoint.files.get(Number(e.shmid));
  const name = file.reg?.name;
  if (!name) {
    throw new RestoreError(
      `Mapping at 0x${e.start.toString(16)} refers to file ${file.id}, which is not a regular file`,
    );
  }
  const writable = (e.status & VMA.FILE_SHARED) !== 0 && (e.prot & 2) !== 0;
  return openPath(agent, name, writable, `to map it at 0x${e.start.toString(16)}`);
}

function openPath(agent: Agent, path: string, writable: boolean, why: string): bigint {
  agent.reset();
  const fd = agent.raw(NR.open, agent.string(path), (writable ? O.RDWR : O.RDONLY) | O.CLOEXEC, 0);
  if (fd < 0n) throw new RestoreError(`Cannot open ${path} ${why}: errno ${-fd}`);
  return fd;
}

/**
 * Shared anonymous memory is one object for every task that maps it: the first task creates it
 * (plain MAP_SHARED|MAP_ANONYMOUS) and fills it; the others map that same object through
 * /proc/PID/map_files of the first.
 */
function openSharedObject(ctx: TaskRestoreContext, agent: Agent, e: vma_entry): bigint {
  const first = ctx.shmem.get(e.shmid);
  if (!first) {
    ctx.shmem.set(e.shmid, { path: mapFilesPath(agent.pid, e), vma: e, filled: false });
    return -1n;
  }
  return openPath(agent, first.path, (e.prot & 2) !== 0, `(shared memory ${e.shmid})`);
}

/**
 * Fills the shared objects this task created from pagemap-shmem-ID.img, writing straight into
 * the object through /proc/PID/map_files (offsets in the image are offsets in the object).
 */
function fillSharedObjects(ctx: TaskRestoreContext, pid: number): void {
  for (const [shmid, obj] of ctx.shmem) {
    if (obj.filled || !obj.path.startsWith(`/proc/${pid}/`)) continue;
    obj.filled = true;
    const dir = ctx.checkpoint.dir;
    if (!dir.has(KINDS.SHMEM_PAGEMAP, shmid)) continue;
    if (obj.vma.pgoff !== 0n) {
      throw new RestoreError(
        `Shared memory ${shmid} is first mapped from offset ${obj.vma.pgoff}: not supported yet`,
      );
    }
    const [head, ...entries] = dir.read<pagemap_head | pagemap_entry>(KINDS.SHMEM_PAGEMAP, shmid);
    if (!head || !("pagesId" in head)) throw new RestoreError(`pagemap-shmem-${shmid}.img has no header`);
    copyIntoObject(obj.path, dir.pathFor(KINDS.PAGES, head.pagesId), entries as pagemap_entry[]);
  }
}

function copyIntoObject(objectPath: string, pagesPath: string, entries: readonly pagemap_entry[]): void {
  const dst = openFd(objectPath, OPEN.RDWR | OPEN.CLOEXEC);
  const src = openFd(pagesPath, OPEN.RDONLY | OPEN.CLOEXEC);
  const chunk = new Uint8Array(4 * 1024 * 1024);
  try {
    let from = 0;
    for (const e of entries) {
      const len = Number(e.nrPages ?? BigInt(e.compatNrPages)) * 4096;
      for (let done = 0; done < len; done += chunk.length) {
        const part = chunk.subarray(0, Math.min(chunk.length, len - done));
        preadFull(src, part, from + done, pagesPath);
        pwriteFull(dst, part, Number(e.vaddr) + done, objectPath);
      }
      from += len;
    }
  } finally {
    closeFd(src);
    closeFd(dst);
  }
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
  const specials = clearAddressSpace(agent, ctx.master.scratch, inherited);
  const parking = findFreeArea(
    specials.reduce((n, s) => n + (s.end - s.start), 0n),
    [...mm.vmas, ...specials, {
      start: ctx.master.scratch,
      end: ctx.master.scratch + BigInt(PUPPET_SCRATCH_SIZE),
    }],
  );
  moveSpecialAreas(agent, specials, mm.vmas, parking);
  const fresh = mm.vmas.filter((e) => !inherited.has(e));
  mapAreas(agent, fresh, (e) => openForMapping(ctx, agent, e));
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
  dropUnlisted(agent, inherited, runs, parent?.pages ?? []);
  if (inherited.size) {
    ctx.log.debug(
      `Task ${t.entry.pid}: kept ${inherited.size} areas from its parent; ${cow.written} of ${cow.compared} pages differed`,
    );
  }
  fillSharedObjects(ctx, agent.pid);
  finishAreas(agent, fresh);
  setMmFields(ctx, agent, t);
}

function setMmFields(ctx: TaskRestoreContext, agent: Agent, t: RestoreTaskImages): void {
  const mm = t.mm!;
  const exe = ctx.checkpoint.files.get(mm.exeFileId).reg?.name;
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
  const dirOf = (id: number) => ctx.checkpoint.files.get(id).reg?.name ?? "/";
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
  const ttys = t.fdinfos.map((f) => ctx.checkpoint.files.get(f.id)).filter((f) => f.type === fd_types.TTY);
  const opened = ttys.length > 0 ? ctx.terminal.openIn(agent) : -1;
  const terminalFd = opened >= 0 ? park(opened) : -1;
  agent.later("close_range", NR.close_range, 0, parkBase - 1, 0);
  restoreFds(
    {
      agent,
      nsPid: t.entry.pid,
      table: ctx.checkpoint.files,
      terminalFd,
      shared: ctx.shared,
      park,
      parkBase,
      log: ctx.log,
    },
    t.fdinfos,
  );
  // A new pty stands for the job's terminal: it becomes the controlling terminal of the session
  // leader whose terminal it was (criu-ts's own terminal already is the job's, or is not to be taken).
  if (terminalFd >= 0 && ctx.terminal.isNewPty && t.entry.sid === t.entry.pid) {
    const infos = ttys.map((f) => ctx.checkpoint.files.ttyInfos.find((i) => i.id === f.tty?.ttyInfoId));
    const info = infos.find((i) => i?.sid === t.entry.pid);
    if (info) takeTerminal(agent, terminalFd, info.pgrp ?? 0);
  }
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
  restoreTimers(agent, tc.timers);
  if (tc.childSubreaper) {
    agent.later("prctl(PR_SET_CHILD_SUBREAPER)", NR.prctl, PR.SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  }
  if (tc.oomScoreAdj !== undefined) writeProc(pid, "oom_score_adj", String(tc.oomScoreAdj));
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

const SCHED_RESET_ON_FORK = 0x40000000;

/** Scheduling policy, real-time priority and nice value of the calling thread. */
function schedulingCalls(agent: Agent, policy: number, prio: number, nice: number): BatchCall[] {
  const calls: BatchCall[] = [];
  if (policy !== 0) {
    const param = agent.alloc(4, new Uint8Array(new Int32Array([prio]).buffer));
    calls.push({
      name: "sched_setscheduler",
      nr: NR.sched_setscheduler,
      args: [0, policy & ~SCHED_RESET_ON_FORK, param],
    });
  }
  if (nice !== 0) {
    calls.push({ name: "setpriority", nr: NR.setpriority, args: [0, /* PRIO_PROCESS */ 0, nice] });
  }
  return calls;
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
    }
    if (tcore?.pdeathSig) {
      calls.push({
        name: "prctl(PR_SET_PDEATHSIG)",
        nr: NR.prctl,
        args: [PR.SET_PDEATHSIG, tcore.pdeathSig, 0, 0, 0],
      });
    }
    const dumpable = t.mm?.dumpable;
    if (leader && dumpable !== undefined) {
      calls.push({
        name: "prctl(PR_SET_DUMPABLE)",
        nr: NR.prctl,
        args: [PR.SET_DUMPABLE, dumpable, 0, 0, 0],
      });
    }
    return calls;
  };
  agent.batch(batchOf(agent, 0));
  const entered = hostTids.map((tid) => RemoteThread.enter(tid, agent.thread.syscallIp));
  agent.forThreads(entered, THREAD_SCRATCH, (a, i) => a.startBatch(batchOf(a, i + 1)))
    .forEach((a, i) => threads.push({ agent: a, core: others[i]!.core }));
  // Other tasks take fds from this one from now on: nothing may be left queued.
  agent.settle();
  if (others.length) log.debug(`Task ${t.entry.pid}: threads restored`);
  return threads;
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

export function detachTask(threads: readonly PendingThread[], stopped: boolean): void {
  const leader = threads[0]!.agent.pid;
  if (stopped) pt.kill(leader, SIG.STOP);
  for (const th of threads) pt.detach(th.agent.tid);
}
