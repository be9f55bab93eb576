/**
 * Terminals. Only shell-job terminals are supported, as CRIU does it: the task's terminal fds are
 * remembered with the terminal's session and foreground group, and on restore they refer to the
 * terminal criu-ts itself runs on (--shell-job), or, when an RPC client asks for orphan_pts_master,
 * to a new pty whose master side goes to the client (runc hands it to the container's console).
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, type file_entry, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import {
  type termios_entry,
  termios_entrySchema,
  tty_file_entrySchema,
  type tty_info_entry,
  tty_info_entrySchema,
  tty_pty_entrySchema,
  TtyType,
  winsize_entrySchema,
} from "../images/gen/tty_pb.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import { closeFd } from "../../ffi/fd.ts";
import {
  int32Bytes,
  INT_SIZE,
  KERNEL_TERMIOS_SIZE,
  parseKernelTermios,
  parseWinsize,
  readInt32,
  WINSIZE_SIZE,
} from "../../ffi/structs.ts";
import { openPty, type Pty, TTY_IOCTL } from "../../ffi/pty.ts";
import { KINDS } from "../images/kinds.ts";
import {
  type DumpFilesContext,
  emptyFown,
  type FdKind,
  type FilesSession,
  type FileTable,
  registerFdKind,
} from "./files.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import { addRegFile, mountIdToSave } from "./regfile.ts";
import { refuse } from "./refusal.ts";
import { ownerInside } from "./tree_ids.ts";
import {
  checkTreePtySessions,
  dumpQueuedPtyData,
  dumpTreePty,
  endTreePtys,
  finishTreePtys,
  isCttyEntry,
  isPtyMaster,
  isTreePty,
  openCtty,
  openTreePty,
  putBackQueuedPtyData,
  readQueuedPtyData,
  takeTreeTerminal,
  terminalSettings,
  treePtyOf,
} from "./pty.ts";
import { RestoreError } from "../errors.ts";
import { boundPtsIndex, dropBoundPtys, takeBoundPty } from "./devpts_bind.ts";
import type { Agent } from "../agent.ts";
import type { Hooks } from "../actions/hooks.ts";
import type { Log } from "../log.ts";

const { TIOCSCTTY, TIOCGPGRP, TIOCSPGRP, TIOCGSID, TCGETS, TIOCGWINSZ, TIOCGLCKTRMIOS } = TTY_IOCTL;
/** Words of termios_entry.c_cc, as CRIU writes them. */
const TERMIOS_NCC = 19;

function isTerminalPath(p: string): boolean {
  return /^\/dev\/(pts\/\d+|tty\d*|console|ttyS\d+)$/.test(p);
}

/**
 * The terminals of a dump or restore: tty-info.img's entries, and at restore where the job's
 * terminal comes from and the fd each task got for it.
 */
interface Terminals {
  infos: tty_info_entry[];
  restore?: RestoreTerminal;
  /** The terminal's fd in each restored task (parked), by the task's pid. */
  fdIn: Map<number, number>;
}

function terminals(table: FileTable): Terminals {
  return table.stateOf("terminal", () => ({ infos: [], fdIn: new Map() }));
}

/** CRIU's indexes of the terminals that are not ptys (tty.c): /dev/tty, and the first external one. */
export const CTTY_INDEX = 1006;
const ETTY_INDEX = 1012;

/**
 * The id of a new tty-info entry, as CRIU makes it (tty_gen_id): twice the terminal's index (a
 * pty's number, or CRIU's fixed index of another kind), plus one for a pty's master. CRIU's restore
 * pairs a pty's sides by these ids. One already taken (a pty of the same number in another devpts)
 * gets a free id above CRIU's.
 */
export function ttyInfoId(infos: readonly tty_info_entry[], index: number, master = false): number {
  let id = index * 2 + (master ? 1 : 0);
  if (!infos.some((i) => i.id === id)) return id;
  for (id = 4096; infos.some((i) => i.id === id); id++);
  return id;
}

/** tty-info.img's entries of a dump or restore. */
export function terminalInfos(table: FileTable): readonly tty_info_entry[] {
  return terminals(table).infos;
}

/** The fd of criu's own terminal (stdin, stdout or stderr) that a shell job gets, or -1. */
function criuTerminalFd(shellJob: boolean): number {
  if (!shellJob) return -1;
  for (const [fd, f] of [[0, Deno.stdin], [1, Deno.stdout], [2, Deno.stderr]] as const) {
    if (f.isTerminal()) return fd;
  }
  return -1;
}

function restoreTerminal(session: FilesSession): RestoreTerminal {
  const state = terminals(session.table);
  state.restore ??= new RestoreTerminal(
    criuTerminalFd(session.opts.shellJob),
    session.opts.orphanPtsMaster ?? false,
    session.hooks,
    session.log,
  );
  return state.restore;
}

/**
 * The files.img entry of a terminal fd (shell job's or a pty of the tree): its tty-info record, and
 * its path in a regular-file entry of its own, as CRIU writes it (it refuses a terminal without one
 * as deprecated), with the mode of the fd's node (`stat`) and the mount it was opened through (a
 * container's devpts: CRIU's restore opens the pty there). `kind` keeps the keys of the two users apart.
 */
export function addTtyFile(
  ctx: DumpFilesContext,
  fd: FdEntry,
  stat: Deno.FileInfo | null,
  infoId: number,
  flags: number,
  kind: "tty" | "pty",
): number {
  const regfId = addRegFile(
    ctx.table,
    fd.target,
    fd.flags,
    0n,
    `${kind}-path:${ctx.pid}:${fd.fd}`,
    stat,
    mountIdToSave(ctx.table, ctx.pid, fd.mntId),
  );
  return ctx.table.add(
    kind === "tty" ? `tty:${ctx.pid}:${fd.fd}` : `fd:${ctx.pid}:${fd.fd}`,
    (id) =>
      create(file_entrySchema, {
        type: fd_types.TTY,
        id,
        tty: create(tty_file_entrySchema, { id, ttyInfoId: infoId, flags, fown: emptyFown(), regfId }),
      }),
  );
}

export const ttyKind: FdKind = {
  name: "terminal",
  type: fd_types.TTY,
  detect(fd, stat) {
    return (isTerminalPath(fd.target) || isPtyMaster(fd)) && (stat === null || stat.isCharDevice === true);
  },
  dump(ctx, fd, stat) {
    // A pty whose master is in the tree is the tree's own, not a shell job's terminal (pty.ts).
    if (isTreePty(ctx, fd)) return dumpTreePty(ctx, fd, stat, terminals(ctx.table).infos);
    const rdev = stat?.rdev ?? 0;
    const dev = stat?.dev ?? 0;
    // --external tty[RDEV:DEV]: the caller hands the terminal back at restore (--inherit-fd).
    const external = ctx.session.opts.external.includes(ttyName(rdev, dev));
    // As in CRIU, orphan_pts_master (runc's console) lets a slave without its master be dumped too.
    if (!ctx.session.opts.shellJob && !ctx.session.opts.orphanPtsMaster && !external) {
      refuse(ctx.pid, `fd ${fd.fd} (terminal ${fd.target})`, "a terminal needs --shell-job");
    }
    const infos = terminals(ctx.table).infos;
    let info = infos.find((t) => t.rdev === rdev);
    if (!info) {
      const pts = /^\/dev\/pts\/(\d+)$/.exec(fd.target);
      // CRIU numbers external terminals one by one after its ETTY_INDEX.
      const externals = infos.filter((i) => i.type === TtyType.EXT_TTY).length;
      info = create(tty_info_entrySchema, {
        id: ttyInfoId(infos, pts && !external ? Number(pts[1]) : ETTY_INDEX + 1 + externals),
        type: pts && !external ? TtyType.PTY : TtyType.EXT_TTY,
        dev,
        locked: false,
        exclusive: false,
        packetMode: false,
        sid: 0,
        pgrp: 0,
        rdev,
        ...ownerInside(ctx.session.treeIds, stat?.uid ?? 0, stat?.gid ?? 0),
        // CRIU refuses a pty without its index, and an external terminal with one.
        ...(pts && !external ? { pty: create(tty_pty_entrySchema, { index: Number(pts[1]) }) } : {}),
        // CRIU counts an external terminal as a master, whose settings its restore requires.
        ...(external ? terminalSettings(ctx, fd.fd) : {}),
      });
      infos.push(info);
    }
    if (info.sid === 0) recordSession(ctx.agent, fd.fd, info);
    return addTtyFile(ctx, fd, stat, info.id, fd.flags, "tty");
  },
  // CRIU's name for --inherit-fd: tty[RDEV:DEV] in hex, the terminal's device and its filesystem's.
  inheritName(entry, table) {
    const info = terminals(table).infos.find((i) => i.id === entry.tty?.ttyInfoId);
    return info ? ttyName(info.rdev, info.dev) : undefined;
  },
  finishDump(session) {
    const { infos } = terminals(session.table);
    checkTreePtySessions(session, infos);
    if (infos.length) session.dir.write(KINDS.TTY_INFO, undefined, infos);
    dumpQueuedPtyData(session); // last: what it takes goes back if the tree goes on (endDump)
  },
  endDump(session, tasksGoOn) {
    // As CRIU: unless the tasks are killed, the bytes taken from their ptys go back.
    if (tasksGoOn || session.opts.finalState !== "dead") putBackQueuedPtyData(session);
  },
  loadImages(session) {
    terminals(session.table).infos.push(...session.dir.readOptional<tty_info_entry>(KINDS.TTY_INFO));
    readQueuedPtyData(session);
  },
  beforeTaskFds(ctx, entries) {
    const infos = terminals(ctx.table).infos;
    takeTreeTerminal(ctx, infos, entries);
    if (entries.every((e) => treePtyOf(ctx.table, infos, e) || isCttyEntry(infos, e))) return; // no shell job's
    // Opened before the task's fds are closed: it may come from one of them (the inherited terminal).
    const opened = restoreTerminal(ctx.session).openIn(ctx.agent, boundPty(ctx.table, infos, entries));
    if (opened >= 0) terminals(ctx.table).fdIn.set(ctx.nsPid, ctx.park(opened));
  },
  open(ctx, entry) {
    const pty = treePtyOf(ctx.table, terminals(ctx.table).infos, entry);
    if (pty) return openTreePty(ctx, entry, pty);
    if (isCttyEntry(terminals(ctx.table).infos, entry)) return openCtty(ctx, entry);
    const terminalFd = terminals(ctx.table).fdIn.get(ctx.nsPid);
    if (terminalFd === undefined) {
      throw new RestoreError(
        "The image has terminal fds (a shell job) but criu-ts is not on a terminal (RPC clients can ask for orphan_pts_master)",
      );
    }
    return Number(ctx.agent.call("dup(terminal)", NR.dup, terminalFd));
  },
  afterTaskFds(ctx, entries) {
    // A new pty stands for the job's terminal: it becomes the controlling terminal of the session
    // leader whose terminal it was (criu's own terminal already is the job's, or is not to be taken).
    const state = terminals(ctx.table);
    const terminalFd = state.fdIn.get(ctx.nsPid);
    if (terminalFd === undefined || !state.restore?.isNewPty || ctx.nsSid !== ctx.nsPid) return;
    const infos = entries.map((f) => state.infos.find((i) => i.id === f.tty?.ttyInfoId));
    const info = infos.find((i) => i?.sid === ctx.nsPid);
    if (info) takeTerminal(ctx.agent, terminalFd, info.pgrp ?? 0);
  },
  afterAllFds: finishTreePtys,
  endRestore(session) {
    terminals(session.table).restore?.close();
    dropBoundPtys();
    endTreePtys(session);
  },
};

registerFdKind(ttyKind);

/**
 * The pty the mount tree made for a bind of the job's terminal slave (devpts_bind.ts), with the
 * slave's path as the task saw it: the job's terminal must be that very pty.
 */
function boundPty(
  table: FileTable,
  infos: readonly tty_info_entry[],
  entries: readonly file_entry[],
): Pty | undefined {
  for (const entry of entries) {
    const info = infos.find((i) => i.id === entry.tty?.ttyInfoId);
    if (!info?.pty || info.type !== TtyType.PTY || !entry.tty?.regfId) continue;
    const path = table.get(entry.tty.regfId).reg?.name ?? "";
    if (boundPtsIndex(path.slice(path.lastIndexOf("/"))) !== info.pty.index) continue;
    const master = takeBoundPty(info.pty.index);
    if (master !== undefined) return { master, slavePath: path };
  }
  return undefined;
}

/** What --external and --inherit-fd call a terminal: tty[RDEV:DEV], both in hex (CRIU's u32s). */
export function ttyName(rdev: number, dev: number): string {
  return `tty[${(rdev >>> 0).toString(16)}:${(dev >>> 0).toString(16)}]`;
}

/**
 * The terminal's session and foreground group, as the task sees them (its PID namespace), with
 * its termios, locked termios and window size, asked in the task through its fd. The kernel
 * answers only a task whose controlling terminal it is; others leave them unset. CRIU takes a pty
 * without termios for a hung-up one, which it cannot give back to a shell job.
 */
function recordSession(agent: Agent, fd: number, info: tty_info_entry): void {
  agent.reset();
  const sid = agent.alloc(INT_SIZE, new Uint8Array(INT_SIZE));
  const pgrp = agent.alloc(INT_SIZE, new Uint8Array(INT_SIZE));
  const termios = agent.alloc(KERNEL_TERMIOS_SIZE, new Uint8Array(KERNEL_TERMIOS_SIZE));
  const locked = agent.alloc(KERNEL_TERMIOS_SIZE, new Uint8Array(KERNEL_TERMIOS_SIZE));
  const winsize = agent.alloc(WINSIZE_SIZE, new Uint8Array(WINSIZE_SIZE));
  const results = agent.batch([
    { name: "ioctl(TIOCGSID)", nr: NR.ioctl, args: [fd, TIOCGSID, sid] },
    { name: "ioctl(TIOCGPGRP)", nr: NR.ioctl, args: [fd, TIOCGPGRP, pgrp] },
    { name: "ioctl(TCGETS)", nr: NR.ioctl, args: [fd, TCGETS, termios] },
    { name: "ioctl(TIOCGLCKTRMIOS)", nr: NR.ioctl, args: [fd, TIOCGLCKTRMIOS, locked] },
    { name: "ioctl(TIOCGWINSZ)", nr: NR.ioctl, args: [fd, TIOCGWINSZ, winsize] },
  ], true);
  const int32 = (addr: bigint) => readInt32(agent.read(addr, INT_SIZE));
  if (results[0] !== 0n) return;
  info.sid = int32(sid);
  if (results[1] === 0n) info.pgrp = int32(pgrp);
  if (results.slice(2).every((r) => r === 0n)) {
    info.termios = termiosEntry(agent.read(termios, KERNEL_TERMIOS_SIZE));
    info.termiosLocked = termiosEntry(agent.read(locked, KERNEL_TERMIOS_SIZE));
    const w = parseWinsize(agent.read(winsize, WINSIZE_SIZE));
    info.winsize = create(winsize_entrySchema, {
      wsRow: w.row,
      wsCol: w.col,
      wsXpixel: w.xpixel,
      wsYpixel: w.ypixel,
    });
  }
}

/**
 * A kernel termios as CRIU stores it: c_cc holds the control characters as glibc's 32-byte
 * array, four to a word (the words after the eighth are CRIU's scratch; zero here).
 */
function termiosEntry(raw: Uint8Array): termios_entry {
  const k = parseKernelTermios(raw);
  const cc = new Uint8Array(32);
  cc.set(k.cc);
  const words = new DataView(cc.buffer);
  return create(termios_entrySchema, {
    cIflag: k.iflag,
    cOflag: k.oflag,
    cCflag: k.cflag,
    cLflag: k.lflag,
    cLine: k.line,
    cIspeed: 0,
    cOspeed: 0,
    cCc: Array.from({ length: TERMIOS_NCC }, (_, i) => (i < 8 ? words.getUint32(4 * i, true) : 0)),
  });
}

/**
 * Where the terminal fds of a restored shell job come from: the terminal criu-ts runs on, which
 * every task inherits from the restore helper at `inheritedFd` (-1: none), or with
 * orphan_pts_master a new pty, made on first use, whose master goes to the RPC client with the
 * orphan-pts-master notification. Without an RPC client to take the master, the job falls back to
 * criu-ts's own terminal, as in CRIU.
 */
export class RestoreTerminal {
  #pty: Pty | undefined;
  #wantsPty: boolean;

  constructor(
    readonly inheritedFd: number,
    orphanPtsMaster: boolean,
    private readonly hooks: Hooks,
    private readonly log: Log,
  ) {
    this.#wantsPty = orphanPtsMaster;
  }

  /** True once the terminal is a new pty of ours. */
  get isNewPty(): boolean {
    return this.#pty !== undefined;
  }

  /** Opens the terminal in the task; returns the task's fd, or -1 when there is no terminal. */
  openIn(agent: Agent, bound?: Pty): number {
    const pty = this.#newPty(bound);
    if (pty) {
      agent.reset();
      const path = agent.string(pty.slavePath);
      return Number(agent.call(`open(${pty.slavePath})`, NR.open, path, O.RDWR | O.NOCTTY));
    }
    return this.inheritedFd >= 0 ? Number(agent.call("dup(terminal)", NR.dup, this.inheritedFd)) : -1;
  }

  /** Drops our end of the new pty (the client holds its own copy). */
  close(): void {
    if (this.#pty) closeFd(this.#pty.master);
  }

  /** `bound`: a pty made for a bind of the slave, used instead of a new one (ours to close). */
  #newPty(bound?: Pty): Pty | undefined {
    if (!this.#wantsPty || this.#pty) {
      if (bound) closeFd(bound.master);
      return this.#pty;
    }
    if (!this.hooks.sendFd) {
      this.log.warn("orphan_pts_master needs notify_scripts to hand the master over; using our own terminal");
      this.#wantsPty = false;
      if (bound) closeFd(bound.master);
      return undefined;
    }
    const pty = bound ?? openPty();
    try {
      this.hooks.sendFd("orphan-pts-master", pty.master);
    } catch (e) {
      closeFd(pty.master);
      throw e;
    }
    this.log.info(`The job's terminal is now ${pty.slavePath}; its master went to the RPC client`);
    this.#pty = pty;
    return pty;
  }
}

/**
 * Makes the terminal at `fd` the controlling terminal of the task (a session leader without one)
 * and gives the foreground to `pgrp` (as the task's PID namespace numbers it; 0: leave it).
 */
export function takeTerminal(agent: Agent, fd: number, pgrp: number): void {
  agent.call("ioctl(TIOCSCTTY)", NR.ioctl, fd, TIOCSCTTY, 0);
  if (pgrp === 0) return;
  agent.reset();
  const buf = agent.alloc(INT_SIZE, int32Bytes(pgrp));
  agent.call("ioctl(TIOCSPGRP)", NR.ioctl, fd, TIOCSPGRP, buf);
}
