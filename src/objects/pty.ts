/**
 * Ptys whose master is inside the dumped tree (a terminal emulator, `script`, an ssh server...),
 * as opposed to a shell job's terminal, whose master is outside (tty.ts, which hands these over).
 * Each side gets a `tty_info_entry` as CRIU writes them (type PTY, the pty's index, packet mode,
 * lock state, exclusive mode, termios, locked termios, window size), and each fd a
 * `tty_file_entry` with its path in a regular-file entry (/dev/ptmx for the master), with the
 * node's mode and, in a mount namespace of the tree's, the mount (a container's devpts), as CRIU.
 * The tty-info ids are CRIU's (twice the index, plus one for a master): its restore pairs sides so.
 *
 * At restore criu opens the master at the same index (/dev/pts/N keeps its name), through the
 * ptmx of the devpts the tasks see (a container's own), sets its state and hands it to the first
 * task that needs it, where it is parked; every master fd is a copy of it. Criu reaches the slave
 * through its master (TIOCGPTPEER), whatever its path in criu's view. Slave fds are opened again
 * by path in their task (O_NOCTTY). The lock and exclusive mode come last, once every task has its
 * slave fds.
 *
 * A pty that is a session's controlling terminal becomes it again before the session leader's fds
 * are opened (TIOCSCTTY through a slave opened for it, then its foreground group), so the leader's
 * /dev/tty fds (CTTY records) open on it; the leader must hold an fd of the slave, and no other
 * task may have it as its terminal yet (they would have to inherit it over fork).
 * Bytes queued in a pty of the tree, both ways, as CRIU keeps them (tty-data.img: what one side
 * had to read, by the id of that side's file): at the end of the dump criu takes them from a copy
 * of each side's open file (pidfd_getfd), and puts them back when the tree goes on; at restore they
 * are written into the other side before the lock and exclusive mode come back, so the same side
 * reads them again. Refused by name: more than CRIU's 16 KiB on one side, and input that is a
 * partial line of a canonical-mode slave (a read cannot take it).
 */
import { create, isFieldSet } from "@bufbuild/protobuf";
import { fd_types, type file_entry, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { reg_file_entrySchema } from "../images/gen/regfile_pb.ts";
import {
  type termios_entry,
  type tty_data_entry,
  tty_data_entrySchema,
  tty_file_entrySchema,
  type tty_info_entry,
  tty_info_entrySchema,
  tty_pty_entrySchema,
  TtyType,
  winsize_entrySchema,
} from "../images/gen/tty_pb.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import { closeFd, OPEN, writeFull } from "../../ffi/fd.ts";
import { copyFdOf } from "../../ffi/process.ts";
import { TTY_IOCTL } from "../../ffi/pty.ts";
import { KINDS } from "../images/kinds.ts";
import {
  INT_SIZE,
  KERNEL_TERMIOS_SIZE,
  kernelTermios,
  parseKernelTermios,
  parseWinsize,
  readInt32,
  winsize,
  WINSIZE_SIZE,
} from "../../ffi/structs.ts";
import {
  drainTty,
  openPtyAt,
  openPtyPeer,
  setExclusive,
  setPacketMode,
  setPtyLocked,
  setTerminalState,
} from "../../ffi/pty.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import {
  emptyFown,
  type FilesSession,
  type FileTable,
  grabFd,
  type RestoreFilesContext,
  type SharedFiles,
} from "./files.ts";
import type { DumpFilesContext } from "./files.ts";
import { addRegFile, mountIdToSave } from "./regfile.ts";
import { takeFromCriu } from "./files.ts";
import { addTtyFile, CTTY_INDEX, takeTerminal, terminalInfos, ttyInfoId } from "./tty.ts";
import { refuse } from "./refusal.ts";
import { chownAsSaved, ownerInside } from "./tree_ids.ts";
import { RestoreError } from "../errors.ts";

const PTMX = /^\/dev\/(pts\/)?ptmx$/;
/** The opener's controlling terminal, whichever it is. */
const DEV_TTY = "/dev/tty";
const SLAVE = /^\/dev\/pts\/(\d+)$/;
const {
  TCGETS,
  TIOCGWINSZ,
  TIOCGLCKTRMIOS,
  FIONREAD,
  TIOCGPTN,
  TIOCGSID,
  TIOCGPGRP,
  TIOCGPKT,
  TIOCGPTLCK,
  TIOCGEXCL,
} = TTY_IOCTL;
/** Words of termios_entry.c_cc, as CRIU writes them (see tty.ts). */
const TERMIOS_NCC = 19;
/** Fields of /proc/PID/stat, counted from 1 as proc(5) does. */
const SESSION_FIELD = 6;
const TTY_NR_FIELD = 7;

/** Is this fd a pty master (/dev/ptmx)? */
export function isPtyMaster(fd: FdEntry): boolean {
  return PTMX.test(fd.target);
}

/** The dump's view of the tree's ptys: the indexes whose master some task holds, and who has which as its terminal. */
interface TreePtys {
  masters: Set<number>;
  /** tty_nr (the terminal's device) → the tasks whose controlling terminal it is, and whether each leads its session. */
  controlling: Map<number, { pid: number; leader: boolean }[]>;
  /** Pty index → the tasks (their pids as the tree sees them) holding an fd of its slave. */
  slaveHolders: Map<number, Set<number>>;
}

function emptyTreePtys(): TreePtys {
  return { masters: new Set(), controlling: new Map(), slaveHolders: new Map() };
}

/** The pid of `pid` as the tasks of its PID namespace see it (the last of NSpid). */
function nsPidOf(pid: number): number {
  const m = /^NSpid:\s*(.*)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return Number(m?.[1]?.trim().split(/\s+/).at(-1) ?? pid);
}

/** The pty index of a /dev/pts device number (Unix98 pty slaves: majors 136-143). */
function ptsIndexOf(rdev: number): number {
  const major = (rdev >>> 8) & 0xfff;
  const minor = (rdev & 0xff) | ((rdev >>> 12) & 0xfff00);
  return major >= 136 && major <= 143 ? (major - 136) * 256 + minor : -1;
}

function tasksOf(root: number): number[] {
  const out: number[] = [];
  const walk = (pid: number) => {
    out.push(pid);
    let threads: string[] = [];
    try {
      threads = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name);
    } catch {
      return;
    }
    for (const tid of threads) {
      try {
        const kids = Deno.readTextFileSync(`/proc/${pid}/task/${tid}/children`).trim();
        for (const k of kids ? kids.split(/\s+/) : []) walk(Number(k));
      } catch {
        // a thread that ended meanwhile
      }
    }
  };
  walk(root);
  return out;
}

/** The device number of a task's controlling terminal (0: none), from /proc/PID/stat. */
function controllingTerminalOf(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[TTY_NR_FIELD - 3]);
}

function treePtys(ctx: DumpFilesContext): TreePtys {
  return ctx.table.stateOf("pty-tree", () => {
    const found = emptyTreePtys();
    for (const pid of tasksOf(ctx.session.opts.tree ?? ctx.pid)) {
      try {
        const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        const ttyNr = Number(fields[TTY_NR_FIELD - 3]);
        const leader = Number(fields[SESSION_FIELD - 3]) === pid;
        if (ttyNr !== 0) {
          found.controlling.set(ttyNr, [...(found.controlling.get(ttyNr) ?? []), { pid, leader }]);
        }
        for (const index of ptyMastersOf(pid)) found.masters.add(index);
      } catch {
        // a zombie has no fds
      }
    }
    return found;
  });
}

/** The indexes of the ptys whose master a task holds (fdinfo's tty-index of its ptmx fds). */
export function ptyMastersOf(pid: number): number[] {
  const indexes: number[] = [];
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    if (!PTMX.test(Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`))) continue;
    const index = /^tty-index:\s*(\d+)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/fdinfo/${e.name}`))?.[1];
    if (index !== undefined) indexes.push(Number(index));
  }
  return indexes;
}

/** Is this fd a pty that is the tree's own: a master, or a slave whose master a task of the tree holds? */
export function isTreePty(ctx: DumpFilesContext, fd: FdEntry): boolean {
  if (isPtyMaster(fd)) return true;
  if (fd.target === DEV_TTY) return treePtys(ctx).masters.has(ptsIndexOf(controllingTerminalOf(ctx.pid)));
  const m = SLAVE.exec(fd.target);
  return m !== null && treePtys(ctx).masters.has(Number(m[1]));
}

/** What the task's fd tells of its pty, asked in the task. */
function askPty(ctx: DumpFilesContext, fd: number, master: boolean) {
  const { agent } = ctx;
  agent.reset();
  const int = () => agent.alloc(INT_SIZE, new Uint8Array(INT_SIZE));
  const [index, packet, locked, excl, queued, sid, pgrp] = [int(), int(), int(), int(), int(), int(), int()];
  const termios = agent.alloc(KERNEL_TERMIOS_SIZE, new Uint8Array(KERNEL_TERMIOS_SIZE));
  const lockedTermios = agent.alloc(KERNEL_TERMIOS_SIZE, new Uint8Array(KERNEL_TERMIOS_SIZE));
  const size = agent.alloc(WINSIZE_SIZE, new Uint8Array(WINSIZE_SIZE));
  const calls = [
    { name: "ioctl(TCGETS)", nr: NR.ioctl, args: [fd, TCGETS, termios] },
    { name: "ioctl(TIOCGLCKTRMIOS)", nr: NR.ioctl, args: [fd, TIOCGLCKTRMIOS, lockedTermios] },
    { name: "ioctl(TIOCGWINSZ)", nr: NR.ioctl, args: [fd, TIOCGWINSZ, size] },
    { name: "ioctl(TIOCGEXCL)", nr: NR.ioctl, args: [fd, TIOCGEXCL, excl] },
    { name: "ioctl(FIONREAD)", nr: NR.ioctl, args: [fd, FIONREAD, queued] },
    ...(master
      ? [
        { name: "ioctl(TIOCGPTN)", nr: NR.ioctl, args: [fd, TIOCGPTN, index] },
        { name: "ioctl(TIOCGPKT)", nr: NR.ioctl, args: [fd, TIOCGPKT, packet] },
        { name: "ioctl(TIOCGPTLCK)", nr: NR.ioctl, args: [fd, TIOCGPTLCK, locked] },
      ]
      : []),
  ];
  agent.batch(calls);
  // Answered only in a task whose controlling terminal this is (ENOTTY elsewhere).
  const session = agent.batch([
    { name: "ioctl(TIOCGSID)", nr: NR.ioctl, args: [fd, TIOCGSID, sid] },
    { name: "ioctl(TIOCGPGRP)", nr: NR.ioctl, args: [fd, TIOCGPGRP, pgrp] },
  ], true);
  const int32 = (addr: bigint) => readInt32(agent.read(addr, INT_SIZE));
  return {
    sid: session[0] === 0n ? int32(sid) : 0,
    pgrp: session[0] === 0n && session[1] === 0n ? int32(pgrp) : 0,
    index: master ? int32(index) : -1,
    packet: master && int32(packet) !== 0,
    locked: master && int32(locked) !== 0,
    exclusive: int32(excl) !== 0,
    queued: int32(queued),
    termios: termiosEntry(agent.read(termios, KERNEL_TERMIOS_SIZE)),
    lockedTermios: termiosEntry(agent.read(lockedTermios, KERNEL_TERMIOS_SIZE)),
    winsize: parseWinsize(agent.read(size, WINSIZE_SIZE)),
  };
}

/**
 * The settings CRIU saves of a terminal it counts as a master (an external one, for one), which
 * its restore refuses without: termios, locked termios and window size, asked in the task.
 */
export function terminalSettings(ctx: DumpFilesContext, fd: number) {
  const s = askPty(ctx, fd, false);
  return {
    termios: s.termios,
    termiosLocked: s.lockedTermios,
    winsize: create(winsize_entrySchema, {
      wsRow: s.winsize.row,
      wsCol: s.winsize.col,
      wsXpixel: s.winsize.xpixel,
      wsYpixel: s.winsize.ypixel,
    }),
  };
}

/** A kernel termios as CRIU stores it: c_cc as glibc's 32-byte array, four to a word. */
function termiosEntry(raw: Uint8Array) {
  const k = parseKernelTermios(raw);
  const cc = new Uint8Array(32);
  cc.set(k.cc);
  const words = new DataView(cc.buffer);
  return {
    cIflag: k.iflag,
    cOflag: k.oflag,
    cCflag: k.cflag,
    cLflag: k.lflag,
    cLine: k.line,
    cIspeed: 0,
    cOspeed: 0,
    cCc: Array.from({ length: TERMIOS_NCC }, (_, i) => (i < 8 ? words.getUint32(4 * i, true) : 0)),
  };
}

function kernelTermiosOf(t: termios_entry): Uint8Array<ArrayBuffer> {
  const cc = new Uint8Array(32);
  const words = new DataView(cc.buffer);
  t.cCc.slice(0, 8).forEach((w, i) => words.setUint32(4 * i, w, true));
  return kernelTermios({
    iflag: t.cIflag,
    oflag: t.cOflag,
    cflag: t.cCflag,
    lflag: t.cLflag,
    line: t.cLine,
    cc,
  });
}

/** Dumps a pty fd of the tree into `infos` (tty-info.img's entries, shared with tty.ts); returns its file id. */
export function dumpTreePty(
  ctx: DumpFilesContext,
  fd: FdEntry,
  stat: Deno.FileInfo | null,
  infos: tty_info_entry[],
): number {
  if (fd.target === DEV_TTY) return dumpTreeCtty(ctx, fd, stat, infos);
  const master = isPtyMaster(fd);
  const what = `fd ${fd.fd} (pty ${fd.target})`;
  const s = askPty(ctx, fd.fd, master);
  const index = master ? s.index : Number(SLAVE.exec(fd.target)![1]);
  if (s.queued > QUEUED_MAX) {
    refuse(ctx.pid, what, `${s.queued} bytes are queued in it, more than the ${QUEUED_MAX} CRIU keeps`);
  }
  if (s.queued > 0 && !master && (s.termios.cLflag & ICANON) !== 0) {
    refuse(
      ctx.pid,
      what,
      `${s.queued} bytes of input are queued in canonical mode, which a read cannot take whole`,
    );
  }
  const rdev = stat?.rdev ?? 0;
  let info = infos.find((t) => t.pty?.index === index && t.rdev === rdev);
  if (!info) {
    info = create(tty_info_entrySchema, {
      id: ttyInfoId(infos, index, master),
      type: TtyType.PTY,
      locked: s.locked,
      exclusive: s.exclusive,
      packetMode: s.packet,
      sid: 0,
      pgrp: 0,
      rdev,
      // The devpts it is on, as CRIU records it.
      ...(stat ? { dev: stat.dev } : {}),
      termios: s.termios,
      termiosLocked: s.lockedTermios,
      winsize: create(winsize_entrySchema, {
        wsRow: s.winsize.row,
        wsCol: s.winsize.col,
        wsXpixel: s.winsize.xpixel,
        wsYpixel: s.winsize.ypixel,
      }),
      pty: create(tty_pty_entrySchema, { index }),
      // The side's owner as the tree sees it (a slave's is its user's: sshd, a container's root).
      ...ownerInside(ctx.session.treeIds, stat?.uid ?? 0, stat?.gid ?? 0),
    });
    infos.push(info);
  }
  // The session whose controlling terminal it is, as a task of that session sees it.
  if (!master && s.sid !== 0 && info.sid === 0) {
    info.sid = s.sid;
    info.pgrp = s.pgrp;
  }
  if (!master) {
    const holders = treePtys(ctx).slaveHolders;
    holders.set(index, (holders.get(index) ?? new Set()).add(nsPidOf(ctx.pid)));
  }
  const id = addTtyFile(ctx, fd, stat, info.id, fd.flags & ~O.CLOEXEC, "pty");
  const sides = queuedSides(ctx.table);
  const pair = sides.get(index) ?? {};
  pair[master ? "master" : "slave"] ??= { pid: ctx.pid, fd: fd.fd, infoId: info.id };
  sides.set(index, pair);
  return id;
}

/** CRIU's limit on the bytes kept per side of a pty. */
const QUEUED_MAX = 16384;
const ICANON = 0o2;

/** One fd of a pty side in the dumped tree, to read its queued bytes through. */
interface PtySide {
  pid: number;
  fd: number;
  /** Its side's tty_info_entry id: tty-data.img's tty_id, as CRIU names the side there. */
  infoId: number;
}

/** At dump, per pty index, the first fd seen of each side, and what was taken from each. */
function queuedSides(table: FileTable): Map<number, { master?: PtySide; slave?: PtySide }> {
  return table.stateOf("pty-queued", () => new Map());
}

function takenBytes(table: FileTable): { from: PtySide; to: PtySide; data: Uint8Array<ArrayBuffer> }[] {
  return table.stateOf("pty-taken", () => []);
}

/**
 * Once the tree is dumped (frozen): the bytes each side of every pty pair of the tree has to read,
 * into tty-data.img, as CRIU reads them, through copies of the tasks' open files.
 */
export function dumpQueuedPtyData(session: FilesSession): void {
  const taken = takenBytes(session.table);
  for (const { master, slave } of queuedSides(session.table).values()) {
    if (!master || !slave) continue; // CRIU takes queued bytes of pairs only
    for (const [from, to] of [[master, slave], [slave, master]] as const) {
      const fd = copyFdOf(from.pid, from.fd);
      try {
        const data = drainTty(fd, QUEUED_MAX);
        if (data.length > 0) taken.push({ from, to, data });
      } finally {
        closeFd(fd);
      }
    }
  }
  if (taken.length === 0) return;
  session.dir.write(
    KINDS.TTY_DATA,
    undefined,
    taken.map((t) => create(tty_data_entrySchema, { ttyId: t.from.infoId, data: t.data })),
  );
  session.log.info(`Took ${taken.reduce((n, t) => n + t.data.length, 0)} queued bytes from ptys`);
}

/** When the tree goes on after the dump (-R, a failed dump): the bytes taken go back, as CRIU does. */
export function putBackQueuedPtyData(session: FilesSession): void {
  const taken = takenBytes(session.table);
  for (const { to, data } of taken.splice(0)) {
    const fd = copyFdOf(to.pid, to.fd);
    try {
      writeFull(fd, data, `pty fd ${to.fd} of process ${to.pid}`);
    } finally {
      closeFd(fd);
    }
  }
}

/**
 * A /dev/tty fd of a task whose controlling terminal is a pty of the tree: a CTTY record, as CRIU
 * writes it, opened again as /dev/tty once the task has its terminal back.
 */
function dumpTreeCtty(
  ctx: DumpFilesContext,
  fd: FdEntry,
  stat: Deno.FileInfo | null,
  infos: tty_info_entry[],
): number {
  let info = infos.find((i) => i.type === TtyType.CTTY);
  if (!info) {
    info = create(tty_info_entrySchema, {
      id: ttyInfoId(infos, CTTY_INDEX),
      type: TtyType.CTTY,
      locked: false,
      exclusive: false,
      packetMode: false,
      sid: 0,
      pgrp: 0,
      rdev: stat?.rdev ?? 0,
    });
    infos.push(info);
  }
  const infoId = info.id;
  const regfId = addRegFile(
    ctx.table,
    DEV_TTY,
    fd.flags,
    0n,
    `pty-path:${ctx.pid}:${fd.fd}`,
    stat,
    mountIdToSave(ctx.table, ctx.pid, fd.mntId),
  );
  return ctx.table.add(`fd:${ctx.pid}:${fd.fd}`, (id) =>
    create(file_entrySchema, {
      type: fd_types.TTY,
      id,
      tty: create(tty_file_entrySchema, {
        id,
        ttyInfoId: infoId,
        flags: fd.flags & ~O.CLOEXEC,
        fown: emptyFown(),
        regfId,
      }),
    }));
}

/** Is this entry a /dev/tty fd (a CTTY record)? It opens as /dev/tty in its task. */
export function isCttyEntry(infos: readonly tty_info_entry[], entry: file_entry): boolean {
  return infos.find((i) => i.id === entry.tty?.ttyInfoId)?.type === TtyType.CTTY;
}

/** Opens /dev/tty in the task: its controlling terminal, which it has by now (takeTreeTerminal). */
export function openCtty(ctx: RestoreFilesContext, entry: file_entry): number {
  const { agent } = ctx;
  agent.reset();
  return Number(
    agent.call(
      `open(${DEV_TTY})`,
      NR.open,
      agent.string(DEV_TTY),
      entry.tty!.flags & ~(O.CREAT | O.EXCL | O.TRUNC | O.CLOEXEC),
      0,
    ),
  );
}

/**
 * Once the tree is dumped: a pty of the tree that is a task's controlling terminal comes back only
 * through a task of that session holding an fd of it (its session and foreground group are asked
 * there); one whose session holds none is refused.
 */
export function checkTreePtySessions(session: FilesSession, infos: readonly tty_info_entry[]): void {
  // Made by the first pty the dump saw; empty when there was none.
  const tree = session.table.stateOf<TreePtys>("pty-tree", emptyTreePtys);
  for (const [rdev, tasks] of tree.controlling) {
    const index = ptsIndexOf(rdev);
    if (!tree.masters.has(index)) continue; // not a pty of the tree
    // Only a session leader can take a terminal (TIOCSCTTY); the others got theirs over fork,
    // and are restored before their leader has it.
    const member = tasks.find((t) => !t.leader);
    if (member) {
      refuse(
        member.pid,
        `its controlling terminal /dev/pts/${index}`,
        "it does not lead its session, and only a session leader's terminal comes back yet",
      );
    }
    const pid = tasks[0]!.pid;
    const slave = infos.find((i) => i.type === TtyType.PTY && i.rdev === rdev);
    const leader = slave?.sid ?? 0;
    if (leader === 0 || !tree.slaveHolders.get(index)?.has(leader)) {
      refuse(
        pid,
        `its controlling terminal /dev/pts/${index}`,
        "its session leader holds no fd of it, to make it the session's terminal again",
      );
    }
  }
}

/** Restore: the tree's ptys by index, with criu's own master of each until the end. */
interface RestoredPtys {
  masters: Map<number, { fd: number; info: tty_info_entry }>;
  slaves: Map<number, tty_info_entry>;
  /** tty-data.img: the bytes a side (by its file id) had to read. */
  queued: Map<number, Uint8Array>;
}

function restoredPtys(table: FileTable): RestoredPtys {
  return table.stateOf("pty-restore", () => ({ masters: new Map(), slaves: new Map(), queued: new Map() }));
}

/** Writes each side's queued bytes into the other side, as CRIU does (a terminal may echo them). */
function putQueuedBytes(session: FilesSession, ptys: RestoredPtys): void {
  const infos = terminalInfos(session.table);
  for (const [fileId, data] of ptys.queued) {
    const pty = treePtyOf(session.table, infos, session.table.get(fileId));
    const master = pty && ptys.masters.get(pty.index);
    if (!pty || !master) continue; // the pty was not restored (no fd of it left): nothing reads them
    if (!pty.master) {
      writeFull(master.fd, new Uint8Array(data), `pty ${pty.index}`);
      continue;
    }
    const slave = openPtyPeer(master.fd, OPEN.WRONLY);
    try {
      writeFull(slave, new Uint8Array(data), `the slave of pty ${pty.index}`);
    } finally {
      closeFd(slave);
    }
  }
  ptys.queued.clear();
}

/** A pty fd of the tree, at restore: the pty's index, which side, and both sides' records. */
export interface TreePty {
  index: number;
  master: boolean;
  info: tty_info_entry;
  masterInfo: tty_info_entry;
}

/** What a tty entry is when it is a pty of the tree: its index and side; undefined for any other terminal. */
export function treePtyOf(
  table: FileTable,
  infos: readonly tty_info_entry[],
  entry: file_entry,
): TreePty | undefined {
  const info = infos.find((i) => i.id === entry.tty?.ttyInfoId);
  if (!info || info.type !== TtyType.PTY || !info.pty) return undefined;
  const index = info.pty.index;
  const masterInfo = infos.find((i) =>
    i.type === TtyType.PTY && i.pty?.index === index && PTMX.test(sidePath(table, i))
  );
  if (!masterInfo) return undefined; // a slave whose master is outside: a shell job's terminal
  return { index, master: info === masterInfo, info, masterInfo };
}

/** The path of a pty side (its tty-info record) as its tasks saw it: its first file's regular-file entry. */
function sidePath(table: FileTable, info: tty_info_entry): string {
  const f = table.entries.find((e) => e.tty?.ttyInfoId === info.id);
  return f?.tty?.regfId ? table.get(f.tty.regfId).reg?.name ?? "" : "";
}

/**
 * The ptmx criu opens to make `pty` again. In a tree with a mount tree of its own (a container,
 * with a devpts of its own): the master's, as the task sees it, through its root, so that the pty
 * is made in that devpts and its slave is the tasks' /dev/pts/N, as CRIU opens it in the mount the
 * master's entry names. Otherwise criu's /dev/ptmx.
 */
function ptmxFor(ctx: RestoreFilesContext, pty: TreePty): string {
  if (!ctx.table.stateOf("paths-in-own-mntns", () => ({ on: false })).on) return "/dev/ptmx";
  return `/proc/${ctx.agent.pid}/root${sidePath(ctx.table, pty.masterInfo)}`;
}

/** Opens a pty fd of the tree in the task; returns the fd. */
export function openTreePty(
  ctx: RestoreFilesContext,
  entry: file_entry,
  pty: TreePty,
): number {
  const { agent } = ctx;
  const flags = entry.tty!.flags;
  const key = ensurePty(ctx, pty);
  if (pty.master) {
    const fd = grabFd(ctx, ctx.shared.objects.get(key)![0]!);
    agent.later("fcntl(F_SETFL, pty master)", NR.fcntl, fd, 4, /* F_SETFL */ flags & O.NONBLOCK);
    return fd;
  }
  restoredPtys(ctx.table).slaves.set(pty.index, pty.info);
  agent.reset();
  const path = `/dev/pts/${pty.index}`;
  const fd = Number(
    agent.call(
      `open(${path})`,
      NR.open,
      agent.string(path),
      (flags & ~(O.CREAT | O.EXCL | O.TRUNC | O.CLOEXEC)) | O.NOCTTY,
      0,
    ),
  );
  // criu made the pair, so the slave is criu's: it gets its saved owner back, as CRIU gives it,
  // and its saved mode (CRIU's fchmod; a new slave has its devpts's mode= option).
  // (A master's is /dev/ptmx's, which stays as it is.)
  const info = pty.info;
  const node = `/proc/${agent.pid}/fd/${fd}`;
  if (isFieldSet(info, tty_info_entrySchema.field.uid) && isFieldSet(info, tty_info_entrySchema.field.gid)) {
    chownAsSaved(node, ctx.session.treeIds, info.uid, info.gid);
  }
  const reg = entry.tty?.regfId ? ctx.table.get(entry.tty.regfId).reg : undefined;
  if (reg && isFieldSet(reg, reg_file_entrySchema.field.mode)) Deno.chmodSync(node, reg.mode & 0o7777);
  return fd;
}

/** The pty made (by criu) and parked in a restored task; returns its key in the shared objects. */
function ensurePty(ctx: RestoreFilesContext, pty: TreePty): string {
  const key = `pty:${pty.index}`;
  if (!ctx.shared.objects.has(key)) {
    const made = createPty(ctx.table, pty.index, pty.masterInfo, ptmxFor(ctx, pty));
    const parked = ctx.park(takeFromCriu(ctx, made));
    ctx.shared.objects.set(key, [{ pid: ctx.nsPid, fd: parked }]);
  }
  return key;
}

/**
 * Before a session leader's fds: when its terminal is a pty of the tree, it takes it again
 * (through a slave it opens for the purpose), with its foreground group, so that its /dev/tty
 * fds and the slaves it opens find it so.
 */
export function takeTreeTerminal(
  ctx: RestoreFilesContext,
  infos: readonly tty_info_entry[],
  entries: readonly file_entry[],
): void {
  if (ctx.nsSid !== ctx.nsPid) return;
  const pty = entries.map((e) => treePtyOf(ctx.table, infos, e)).find((p) =>
    p && !p.master && p.info.sid === ctx.nsPid
  );
  if (!pty) return;
  ensurePty(ctx, pty);
  const { agent } = ctx;
  agent.reset();
  const path = `/dev/pts/${pty.index}`;
  const fd = agent.call(`open(${path})`, NR.open, agent.string(path), O.RDWR | O.NOCTTY, 0);
  try {
    takeTerminal(agent, Number(fd), pty.info.pgrp);
  } finally {
    agent.call("close", NR.close, fd);
  }
}

/**
 * Criu's own master of pty `index`, made on first use through `ptmx`: unlocked until every slave
 * is open, in packet mode if it was, with the pair's termios, locked termios and window size.
 */
function createPty(table: FileTable, index: number, info: tty_info_entry, ptmx: string): number {
  const ptys = restoredPtys(table);
  const known = ptys.masters.get(index);
  if (known) return known.fd;
  let fd: number;
  try {
    fd = openPtyAt(index, 3000, ptmx);
  } catch (e) {
    throw new RestoreError(`Cannot make pty ${index} again (${ptmx}): ${(e as Error).message}`, 0, {
      cause: e,
    });
  }
  ptys.masters.set(index, { fd, info });
  setPtyLocked(fd, false);
  if (info.packetMode) setPacketMode(fd, true);
  setTerminalState(fd, {
    ...(info.termios ? { termios: kernelTermiosOf(info.termios) } : {}),
    ...(info.termiosLocked ? { locked: kernelTermiosOf(info.termiosLocked) } : {}),
    ...(info.winsize
      ? {
        winsize: winsize({
          row: info.winsize.wsRow,
          col: info.winsize.wsCol,
          xpixel: info.winsize.wsXpixel,
          ypixel: info.winsize.wsYpixel,
        }),
      }
      : {}),
  });
  return fd;
}

/** PREPARE: tty-data.img, each entry naming a pty side of files.img. */
export function readQueuedPtyData(session: FilesSession): void {
  const queued = restoredPtys(session.table).queued;
  for (const e of session.dir.readOptional<tty_data_entry>(KINDS.TTY_DATA)) {
    // tty_id names a side's tty_info_entry (CRIU's id for it); any file of that side will do.
    const file = session.table.entries.find((f) => f.tty?.ttyInfoId === e.ttyId);
    if (!file) {
      throw new RestoreError(
        `Refusing the images: tty-data.img names terminal ${e.ttyId}, which no file of files.img opens`,
      );
    }
    queued.set(file.id, e.data);
  }
}

/**
 * Once every slave is open: the queued bytes, written into the side opposite the one that had them
 * to read (through criu's own master, or a slave criu opens), then the lock and exclusive mode.
 */
export function finishTreePtys(session: FilesSession, _shared: SharedFiles): void {
  const ptys = restoredPtys(session.table);
  putQueuedBytes(session, ptys);
  for (const [index, { fd, info }] of ptys.masters) {
    const slave = ptys.slaves.get(index);
    if (slave?.exclusive) {
      const ours = openPtyPeer(fd, OPEN.RDWR);
      try {
        setExclusive(ours);
      } finally {
        closeFd(ours);
      }
    }
    if (info.locked) setPtyLocked(fd, true);
  }
}

/** At the end, worked or not: criu's masters go (the tasks hold their own). */
export function endTreePtys(session: FilesSession): void {
  const ptys = restoredPtys(session.table);
  for (const { fd } of ptys.masters.values()) closeFd(fd);
  ptys.masters.clear();
}
