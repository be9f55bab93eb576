/**
 * Dumping one frozen task: its threads' CPU and signal state, its memory, files and the rest of
 * what core-*.img, mm-*.img, ids-*.img, fs-*.img and fdinfo-*.img hold.
 */
import { create } from "@bufbuild/protobuf";
import { compact } from "../compact.ts";
import {
  type core_entry,
  core_entry_march,
  core_entrySchema,
  seccomp_mode,
  task_core_entrySchema,
  type task_kobj_ids_entry,
  task_rlimits_entrySchema,
  type thread_core_entry,
  thread_core_entrySchema,
} from "../images/gen/core_pb.ts";
import { type mm_entry, mm_entrySchema } from "../images/gen/mm_pb.ts";
import { type fs_entry, fs_entrySchema } from "../images/gen/fs_pb.ts";
import { rlimit_entrySchema } from "../images/gen/rlimit_pb.ts";
import { applySeccomp, collectSeccomp, seccompModeOf } from "../objects/seccomp.ts";
import { rseq_entrySchema } from "../images/gen/rseq_pb.ts";
import type { fdinfo_entry } from "../images/gen/fdinfo_pb.ts";
import * as pt from "../../ffi/ptrace.ts";
import { readMemory } from "../../ffi/memory.ts";
import { findSyscallInstruction, RemoteThread } from "../../ffi/remote.ts";
import {
  listFds,
  type MapsEntry,
  readAuxv,
  readLimits,
  readSmaps,
  readStat,
  readStatus,
} from "../../ffi/proc.ts";
import {
  canGetMembarrierRegistrations,
  getRobustList,
  RLIMIT_COUNT,
  schedulingOf,
} from "../../ffi/process.ts";
import { MEMBARRIER, NR, O, PR, SCHED } from "../../ffi/syscalls.ts";
import { Agent } from "../agent.ts";
import { refuse } from "../objects/refusal.ts";
import { classify, type DumpedVma, guardEntries, scanPages, VMA } from "../objects/memory.ts";
import { backingOf } from "../objects/mappings.ts";
import { credsQuery, readLoginuid } from "../objects/creds.ts";
import type { TreeIds } from "../objects/tree_ids.ts";
import { dumpPendingSignals, sigactionsQuery, sigaltstackQuery } from "../objects/signals.ts";
import { dumpTimers, itimersQuery } from "../objects/timers.ts";
import { applyRestart, threadInfoFromCpu } from "../objects/cpu.ts";
import { dumpFds, type DumpFilesContext, type FilesSession, type FileTable } from "../objects/files.ts";
import { addRemovedDirectory, addRemovedExe } from "../objects/remap.ts";
import { addMappedFile, addTaskDirectory } from "../objects/regfile.ts";
import type { FrozenTask } from "./freeze.ts";
import type { Log } from "../log.ts";
import type { RunOptions } from "../options/options.ts";
import "../objects/mod.ts";
import { readInt32, readU64 } from "../../ffi/structs.ts";

/** task_core_entry.task_state, as CRIU writes it: a zombie is recorded as dead (TASK_DEAD). */
export const TASK_STATE = { alive: 1, dead: 2, stopped: 3 } as const;
/** States that criu-ts images made before it followed CRIU here still hold: read, never written. */
export const OLD_TASK_STATE = { zombie: 6, helper: 0x80 } as const;

export interface DumpedTask {
  pid: number;
  /** The pid in the tree's own PID namespace, which names its images. */
  imagePid: number;
  mm?: mm_entry;
  vmas: DumpedVma[];
  ids: task_kobj_ids_entry;
  fs?: fs_entry;
  fdinfos: fdinfo_entry[];
}

export interface TaskDumpContext {
  table: FileTable;
  /** What every kind of file is told, from the first task to the last. */
  files: FilesSession;
  /** The dump's options, read-only, as the object kinds get them. */
  options: RunOptions;
  log: Log;
  /** Writes the task's pages while it is still frozen and the agent is inside it. */
  writePages(agent: Agent, task: DumpedTask): void;
  /**
   * Takes a thread's core entry as soon as it is made (cores are written as the dump goes, not
   * held until the end). `imageTid` is the tid the tree's own PID namespace knows.
   */
  writeCore(imageTid: number, core: core_entry): void;
}

/**
 * /proc stat and status of a frozen task's threads, read once each: nothing in them changes while
 * the task is frozen, and each read costs the kernel tens of microseconds.
 */
class ProcFiles {
  #stat = new Map<number, ReturnType<typeof readStat>>();
  #status = new Map<number, Map<string, string>>();

  stat(tid: number) {
    let s = this.#stat.get(tid);
    if (!s) this.#stat.set(tid, s = readStat(tid));
    return s;
  }

  status(tid: number): Map<string, string> {
    let s = this.#status.get(tid);
    if (!s) this.#status.set(tid, s = readStatus(tid));
    return s;
  }
}

function readProcNumber(path: string): number {
  return Number(Deno.readTextFileSync(path).trim());
}

function dumpRseq(tid: number) {
  const c = pt.rseqConfiguration(tid);
  if (c.abiPointer === 0n) return undefined;
  return create(rseq_entrySchema, {
    rseqAbiPointer: c.abiPointer,
    rseqAbiSize: c.abiSize,
    signature: c.signature,
  });
}

const SIGTRAP_BIT = 1n << 4n;

/**
 * A queued SIGTRAP (one the task blocks) would be taken for the end of our own code, or merged
 * with our trap and lost: refused, as CRIU does, before any code of ours runs in the task.
 */
function checkPendingTrap(proc: ProcFiles, pid: number, tid: number): void {
  const st = proc.status(tid);
  for (const [key, where] of [["SigPnd", `for thread ${tid}`], ["ShdPnd", "process-wide"]] as const) {
    if (BigInt("0x" + (st.get(key) ?? "0")) & SIGTRAP_BIT) {
      refuse(
        pid,
        `a SIGTRAP queued ${where}`,
        "criu's own code in the task ends in traps, which a queued SIGTRAP would be confused with",
      );
    }
  }
}

/** SCHED_DEADLINE has parameters sched_setscheduler cannot set, and images no room for them. */
function checkScheduling(pid: number, tid: number, policy: number): void {
  if ((policy & 0xff) === SCHED.DEADLINE) {
    refuse(
      pid,
      `the SCHED_DEADLINE policy of thread ${tid}`,
      "it cannot be restored",
    );
  }
}

/** Room for a thread name with its NUL (TASK_COMM_LEN). */
const TASK_COMM_LEN = 16;
/** The text of a NUL-terminated buffer. */
function cString(b: Uint8Array): string {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
}

type ThreadState = { threadInfo: ReturnType<typeof threadInfoFromCpu>; threadCore: thread_core_entry };

/**
 * Per-thread state. What needs a remote syscall in that very thread is asked in one batch, which
 * the thread runs while the caller goes on; the function returned collects it. What ptrace tells
 * is read first: the thread must be stopped for that.
 */
function startThread(agent: Agent, proc: ProcFiles, tid: number): () => ThreadState {
  // As the task left them, not as our remote calls did; an interrupted syscall is stored restarted.
  const regs = agent.thread.savedRegs.clone();
  applyRestart(regs);
  const xstate = pt.getXstate(tid);
  const sched = schedulingOf(tid);
  checkScheduling(agent.pid, tid, sched.policy);
  const robust = getRobustList(tid);
  const signalsP = dumpPendingSignals(tid, false);
  const rseqEntry = dumpRseq(tid);
  const status = proc.status(tid);
  agent.reset();
  const answers = agent.startAsk([
    agent.fetchQuery("prctl(PR_GET_TID_ADDRESS)", 8, (b) => [NR.prctl, PR.GET_TID_ADDRESS, b, 0, 0, 0]),
    agent.fetchQuery("prctl(PR_GET_PDEATHSIG)", 4, (b) => [NR.prctl, PR.GET_PDEATHSIG, b, 0, 0, 0]),
    agent.fetchQuery("prctl(PR_GET_NAME)", TASK_COMM_LEN, (b) => [NR.prctl, PR.GET_NAME, b, 0, 0, 0]),
    sigaltstackQuery(agent),
    credsQuery(agent, status),
  ]);
  return () => {
    const [tidAddress, pdeath, comm, sas, creds] = answers();
    return {
      threadInfo: threadInfoFromCpu(regs, xstate, readU64(tidAddress)),
      threadCore: create(thread_core_entrySchema, {
        futexRla: robust.head,
        futexRlaLen: robust.len,
        schedNice: sched.nice,
        schedPolicy: sched.policy,
        schedPrio: sched.prio,
        blkSigset: agent.thread.savedMask, // the live mask is ours while the agent is inside
        sas,
        pdeathSig: readInt32(pdeath),
        signalsP,
        creds,
        seccompMode: seccomp_mode.disabled,
        comm: cString(comm),
        rseqEntry,
      }),
    };
  };
}

/** Scratch for each thread's batch while the threads run theirs at once (Agent.forThreads). */
const THREAD_SCRATCH = 1024;

/**
 * The threads other than the leader, several at once (Agent.forThreads): each thread's batch
 * runs while the next is prepared. Every thread entered is left as found, whatever fails.
 */
function dumpThreads(
  ctx: TaskDumpContext,
  agent: Agent,
  proc: ProcFiles,
  tids: readonly number[],
  imageTid: (tid: number) => number,
): void {
  const entered: RemoteThread[] = [];
  try {
    entered.push(...agent.enterThreads(tids));
    agent.forThreads(entered, THREAD_SCRATCH, (a) => startThread(a, proc, a.tid), (t, i) =>
      ctx.writeCore(
        imageTid(tids[i]!),
        create(core_entrySchema, {
          mtype: core_entry_march.X86_64,
          threadInfo: t.threadInfo,
          threadCore: t.threadCore,
        }),
      ));
  } finally {
    agent.leaveThreads(entered);
  }
}

/** What only the task can tell about itself and its memory, asked in one batch. */
function askTask(agent: Agent) {
  agent.reset();
  // The registrations are asked only of a kernel that can tell them: a failed call ends the batch.
  const membarrier = canGetMembarrierRegistrations()
    ? agent.resultQuery("membarrier(GET_REGISTRATIONS)", NR.membarrier, MEMBARRIER.GET_REGISTRATIONS, 0, 0)
    : { calls: [], answer: () => 0n };
  const [childSub, itimers, sigactions, brk, dumpable, thp, registrations] = agent.ask([
    agent.fetchQuery(
      "prctl(PR_GET_CHILD_SUBREAPER)",
      4,
      (b) => [NR.prctl, PR.GET_CHILD_SUBREAPER, b, 0, 0, 0],
    ),
    itimersQuery(agent),
    sigactionsQuery(agent),
    agent.resultQuery("brk", NR.brk, 0),
    agent.resultQuery("prctl(PR_GET_DUMPABLE)", NR.prctl, PR.GET_DUMPABLE, 0, 0, 0, 0),
    agent.resultQuery("prctl(PR_GET_THP_DISABLE)", NR.prctl, PR.GET_THP_DISABLE, 0, 0, 0, 0),
    membarrier,
  ]);
  return {
    childSubreaper: readInt32(childSub) !== 0,
    itimers,
    sigactions,
    brk: BigInt.asUintN(64, brk),
    dumpable: Number(dumpable),
    thpDisabled: thp !== 0n,
    membarrierRegistrations: Number(registrations),
  };
}

type TaskAnswers = ReturnType<typeof askTask>;

function dumpTaskCore(
  agent: Agent,
  proc: ProcFiles,
  task: FrozenTask,
  answers: TaskAnswers,
  treeIds: TreeIds | undefined,
) {
  const pid = task.pid;
  return create(
    task_core_entrySchema,
    compact({
      taskState: task.state === "stopped" ? TASK_STATE.stopped : TASK_STATE.alive,
      exitCode: 0,
      personality: parseInt(Deno.readTextFileSync(`/proc/${pid}/personality`).trim(), 16),
      flags: Number(proc.stat(pid).field(9)),
      blkSigset: agent.thread.savedMask,
      comm: proc.stat(pid).comm,
      timers: dumpTimers(
        agent,
        pid,
        answers.itimers,
        (tid) => task.ns.threads[task.threads.indexOf(tid)] ?? tid,
      ),
      rlimits: create(task_rlimits_entrySchema, {
        rlimits: readLimits(pid).slice(0, RLIMIT_COUNT).map((l) => create(rlimit_entrySchema, l)),
      }),
      signalsS: dumpPendingSignals(pid, true),
      // As the tree sees it (4294967295, unset, stays so: no map covers it).
      loginuid: treeIds ? treeIds.uidInside(readLoginuid(pid)) : readLoginuid(pid),
      oomScoreAdj: readProcNumber(`/proc/${pid}/oom_score_adj`),
      sigactions: answers.sigactions,
      childSubreaper: answers.childSubreaper,
      stopSigno: task.state === "stopped" ? task.stopSigno : undefined,
      membarrierRegistrationMask: answers.membarrierRegistrations || undefined,
    }),
  );
}

/**
 * Words of the saved auxiliary vector an image holds at most: CRIU reads no more on x86_64 and
 * refuses a longer one on restore. The kernel's vector ends with AT_NULL, which falls off first.
 */
const AT_VECTOR_SIZE = 44;

function dumpMm(
  proc: ProcFiles,
  pid: number,
  table: FileTable,
  vmas: DumpedVma[],
  answers: TaskAnswers,
  files: FilesSession,
): mm_entry {
  const stat = proc.stat(pid);
  const f = (n: number) => stat.field(n);
  const exe = Deno.readLinkSync(`/proc/${pid}/exe`);
  // A removed executable is carried as CRIU does: a ghost or a link remap (remap.ts).
  const exeFileId = exe.endsWith(" (deleted)")
    ? addRemovedExe(files, pid, exe)
    : addMappedFile(table, pid, `/proc/${pid}/exe`, exe, O.RDONLY);
  const mm = create(mm_entrySchema, {
    mmStartCode: f(26),
    mmEndCode: f(27),
    mmStartData: f(45),
    mmEndData: f(46),
    mmStartStack: f(28),
    mmStartBrk: f(47),
    mmBrk: answers.brk,
    mmArgStart: f(48),
    mmArgEnd: f(49),
    mmEnvStart: f(50),
    mmEnvEnd: f(51),
    exeFileId,
    mmSavedAuxv: readAuxv(pid).slice(0, AT_VECTOR_SIZE),
    vmas: vmas.map((v) => v.entry),
    dumpable: answers.dumpable,
    thpDisabled: answers.thpDisabled,
  });
  for (const v of vmas) backingOf(v.entry)?.dumpMm?.(mm, v);
  return mm;
}

function collectVmas(
  pid: number,
  maps: readonly MapsEntry[],
  table: FileTable,
  files?: FilesSession,
): DumpedVma[] {
  const out: DumpedVma[] = [];
  const pagemap = Deno.openSync(`/proc/${pid}/pagemap`);
  try {
    for (const m of maps) {
      const entry = classify({ pid, table, ...(files ? { files } : {}) }, m);
      // [vvar_vclock] follows [vvar]: CRIU records them as one VVAR area.
      const last = out.at(-1)?.entry;
      if (last && entry.status & VMA.VVAR && last.status & VMA.VVAR && last.end === entry.start) {
        last.end = entry.end;
        continue;
      }
      out.push({ entry, runs: scanPages(pagemap, entry) });
    }
  } finally {
    pagemap.close();
  }
  for (const entry of guardEntries(pid)) out.push({ entry, runs: [] });
  return out;
}

/**
 * The file of a task's cwd or root. One that was removed is a ghost directory, as CRIU carries it
 * (remap.ts): made again for the restore and removed once the task is in it.
 */
function fsDirectory(files: DumpFilesContext, which: "cwd" | "root"): number {
  const path = Deno.readLinkSync(`/proc/${files.pid}/${which}`);
  if (path.endsWith(" (deleted)")) return addRemovedDirectory(files, which, path);
  return addTaskDirectory(files.table, files.pid, which, path);
}

function dumpFs(proc: ProcFiles, files: DumpFilesContext): fs_entry {
  const umask = parseInt(proc.status(files.pid).get("Umask") ?? "22", 8);
  return create(fs_entrySchema, {
    cwdId: fsDirectory(files, "cwd"),
    rootId: fsDirectory(files, "root"),
    umask,
  });
}

/** Bytes of a mapping read at a time while looking for a `syscall` instruction. */
const SCAN_CHUNK = 64 * 1024;

/**
 * Where our remote syscalls run: a `syscall` instruction (0f 05) already in the task, which is left
 * unchanged. The vDSO has several. A task that unmapped its vDSO still has code that makes
 * syscalls (libc's): any two bytes 0f 05 in an executable mapping decode as one when jumped to.
 */
function syscallInstruction(pid: number, maps: readonly MapsEntry[]): bigint {
  const vdso = maps.find((m) => m.path === "[vdso]");
  if (vdso) return findSyscallInstruction(pid, vdso.start, vdso.end);
  for (const m of maps) {
    if (m.perms[0] !== "r" || m.perms[2] !== "x") continue; // execute-only cannot be read
    for (let at = m.start; at < m.end; at += BigInt(SCAN_CHUNK)) {
      // One byte more than a chunk, so that an instruction across two chunks is seen.
      const end = at + BigInt(SCAN_CHUNK + 1) < m.end ? at + BigInt(SCAN_CHUNK + 1) : m.end;
      let bytes: Uint8Array;
      try {
        bytes = readMemory(pid, at, Number(end - at));
      } catch {
        break; // a hole in a file mapping past the file's end: the next mapping
      }
      for (let i = 0; i + 1 < bytes.length; i++) {
        if (bytes[i] === 0x0f && bytes[i + 1] === 0x05) return at + BigInt(i);
      }
    }
  }
  refuse(
    pid,
    "its address space",
    "it has neither a [vdso] nor any executable code holding a syscall instruction to run criu's syscalls from",
  );
}

export function dumpTask(ctx: TaskDumpContext, task: FrozenTask, ids: task_kobj_ids_entry): DumpedTask {
  const pid = task.pid;
  const log = ctx.log;
  const proc = new ProcFiles();
  for (const tid of task.threads) checkPendingTrap(proc, pid, tid);
  // Seccomp (seccomp.ts): read while frozen; each thread's core says its mode and newest filter.
  const modes = task.threads.map((tid) => seccompModeOf(proc.status(tid)));
  const seccomp = collectSeccomp(ctx.table, pid, task.threads, modes);
  // Our own calls in a thread under seccomp must not be filtered (until we let it go).
  task.threads.forEach((tid, i) => modes[i] !== 0 && pt.setOptions(tid, pt.PTRACE_O.SUSPEND_SECCOMP));
  if (seccomp.size > 0) {
    const hostTid = new Map(task.threads.map((tid, i) => [task.ns.threads[i]!, tid]));
    const writeCore = ctx.writeCore;
    ctx = { ...ctx, writeCore: (t, core) => writeCore(t, applySeccomp(core, seccomp.get(hostTid.get(t)!))) };
  }
  // Mappings and fds are read before the agent adds its scratch area.
  const maps = readSmaps(pid);
  const vmas = collectVmas(pid, maps, ctx.table, ctx.files);
  log.debug(`Task ${pid}: ${vmas.length} areas, ${vmas.reduce((n, v) => n + v.runs.length, 0)} page runs`);
  const fds = listFds(pid);
  // The guarded runner (a killed criu never costs the task) lives in the vDSO's padding; a task
  // without a vDSO gets the plain one, from a syscall instruction of its own code.
  const vdso = maps.find((m) => m.path === "[vdso]");
  const agent = vdso
    ? Agent.enterGuarded(pid, vdso.start, vdso.end, task.threads.length, maps)
    : Agent.enter(pid, pid, syscallInstruction(pid, maps));
  try {
    const out: DumpedTask = { pid, imagePid: task.ns.pid, vmas, ids, fdinfos: [] };
    const imageTid = new Map(task.threads.map((tid, i) => [tid, task.ns.threads[i]!]));
    const leader = startThread(agent, proc, pid)();
    const answers = askTask(agent);
    ctx.writeCore(
      task.ns.pid,
      create(core_entrySchema, {
        mtype: core_entry_march.X86_64,
        threadInfo: leader.threadInfo,
        tc: dumpTaskCore(agent, proc, task, answers, ctx.files.treeIds),
        threadCore: leader.threadCore,
      }),
    );
    dumpThreads(ctx, agent, proc, task.threads.filter((t) => t !== pid), (tid) => imageTid.get(tid)!);
    log.debug(`Task ${pid}: threads done`);
    out.mm = dumpMm(proc, pid, ctx.table, vmas, answers, ctx.files);
    const files = { pid, agent, table: ctx.table, session: ctx.files, log: ctx.log };
    out.fs = dumpFs(proc, files);
    out.fdinfos = dumpFds(files, fds);
    log.debug(`Task ${pid}: mm, fs and ${fds.length} fds done`);
    ctx.writePages(agent, out);
    return out;
  } finally {
    agent.leave();
  }
}

/** A zombie has only its pstree entry and a core saying it is dead and how it ended. */
export function dumpZombie(ctx: TaskDumpContext, task: FrozenTask, ids: task_kobj_ids_entry): DumpedTask {
  ctx.writeCore(
    task.ns.pid,
    create(core_entrySchema, {
      mtype: core_entry_march.X86_64,
      tc: create(task_core_entrySchema, {
        taskState: TASK_STATE.dead,
        exitCode: task.exitCode,
        personality: 0,
        flags: 0,
        blkSigset: 0n,
        comm: readStat(task.pid).comm,
      }),
    }),
  );
  return {
    pid: task.pid,
    imagePid: task.ns.pid,
    vmas: [],
    ids,
    fdinfos: [],
  };
}
