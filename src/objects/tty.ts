/**
 * Terminals. Only shell-job terminals are supported, as CRIU does it: the task's terminal fds are
 * remembered with the terminal's session and foreground group, and on restore they refer to the
 * terminal criu-ts itself runs on (--shell-job), or, when an RPC client asks for orphan_pts_master,
 * to a new pty whose master side goes to the client (runc hands it to the container's console).
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
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
import { openPty, type Pty } from "../../ffi/pty.ts";
import { type FdKind, registerFdKind } from "./files.ts";
import { addRegFile, emptyFown } from "./regfile.ts";
import { RestoreError, UnsupportedObjectError } from "../errors.ts";
import type { Agent } from "../agent.ts";
import type { Hooks } from "../actions/hooks.ts";
import type { Log } from "../log.ts";

const TIOCSCTTY = 0x540e;
const TIOCGPGRP = 0x540f;
const TIOCSPGRP = 0x5410;
const TIOCGSID = 0x5429;
const TCGETS = 0x5401;
const TIOCGWINSZ = 0x5413;
const TIOCGLCKTRMIOS = 0x5456;
/** The kernel's struct termios: four flag words, c_line, then 19 control characters. */
const KERNEL_TERMIOS_SIZE = 36;
/** Words of termios_entry.c_cc, as CRIU writes them. */
const TERMIOS_NCC = 19;

function isTerminalPath(p: string): boolean {
  return /^\/dev\/(pts\/\d+|tty\d*|console|ttyS\d+)$/.test(p);
}

export const ttyKind: FdKind = {
  name: "terminal",
  type: fd_types.TTY,
  detect(fd, stat) {
    return isTerminalPath(fd.target) && (stat === null || stat.isCharDevice === true);
  },
  dump(ctx, fd, stat) {
    if (!ctx.options.shellJob) {
      throw new UnsupportedObjectError(
        ctx.pid,
        `fd ${fd.fd} (terminal ${fd.target})`,
        "a terminal needs --shell-job",
      );
    }
    const rdev = stat?.rdev ?? 0;
    let info = ctx.table.ttyInfos.find((t) => t.rdev === rdev);
    if (!info) {
      const pts = /^\/dev\/pts\/(\d+)$/.exec(fd.target);
      info = create(tty_info_entrySchema, {
        id: ctx.table.ttyInfos.length + 1,
        type: pts ? TtyType.PTY : TtyType.EXT_TTY,
        locked: false,
        exclusive: false,
        packetMode: false,
        sid: 0,
        pgrp: 0,
        rdev,
        // CRIU refuses a pty without its index.
        ...(pts ? { pty: create(tty_pty_entrySchema, { index: Number(pts[1]) }) } : {}),
      });
      ctx.table.ttyInfos.push(info);
    }
    if (info.sid === 0) recordSession(ctx.agent, fd.fd, info);
    const infoId = info.id;
    // The terminal's path goes in a regular-file entry of its own, as CRIU writes it (it refuses
    // a terminal without one as deprecated).
    const regfId = addRegFile(ctx.table, fd.target, fd.flags, 0n, `tty-path:${ctx.pid}:${fd.fd}`);
    return ctx.table.add(`tty:${ctx.pid}:${fd.fd}`, (id) =>
      create(file_entrySchema, {
        type: fd_types.TTY,
        id,
        tty: create(tty_file_entrySchema, {
          id,
          ttyInfoId: infoId,
          flags: fd.flags,
          fown: emptyFown(),
          regfId,
        }),
      }));
  },
  open(ctx) {
    if (ctx.terminalFd < 0) {
      throw new RestoreError(
        "The image has terminal fds (a shell job) but criu-ts is not on a terminal (RPC clients can ask for orphan_pts_master)",
      );
    }
    return Number(ctx.agent.call("dup(terminal)", NR.dup, ctx.terminalFd));
  },
};

registerFdKind(ttyKind);

/**
 * The terminal's session and foreground group, as the task sees them (its PID namespace), with
 * its termios, locked termios and window size, asked in the task through its fd. The kernel
 * answers only a task whose controlling terminal it is; others leave them unset. CRIU takes a pty
 * without termios for a hung-up one, which it cannot give back to a shell job.
 */
function recordSession(agent: Agent, fd: number, info: tty_info_entry): void {
  agent.reset();
  const sid = agent.alloc(4, new Uint8Array(4));
  const pgrp = agent.alloc(4, new Uint8Array(4));
  const termios = agent.alloc(KERNEL_TERMIOS_SIZE, new Uint8Array(KERNEL_TERMIOS_SIZE));
  const locked = agent.alloc(KERNEL_TERMIOS_SIZE, new Uint8Array(KERNEL_TERMIOS_SIZE));
  const winsize = agent.alloc(8, new Uint8Array(8));
  const results = agent.batch([
    { name: "ioctl(TIOCGSID)", nr: NR.ioctl, args: [fd, TIOCGSID, sid] },
    { name: "ioctl(TIOCGPGRP)", nr: NR.ioctl, args: [fd, TIOCGPGRP, pgrp] },
    { name: "ioctl(TCGETS)", nr: NR.ioctl, args: [fd, TCGETS, termios] },
    { name: "ioctl(TIOCGLCKTRMIOS)", nr: NR.ioctl, args: [fd, TIOCGLCKTRMIOS, locked] },
    { name: "ioctl(TIOCGWINSZ)", nr: NR.ioctl, args: [fd, TIOCGWINSZ, winsize] },
  ], true);
  const int32 = (addr: bigint) => new DataView(agent.read(addr, 4).buffer).getInt32(0, true);
  if (results[0] !== 0n) return;
  info.sid = int32(sid);
  if (results[1] === 0n) info.pgrp = int32(pgrp);
  if (results.slice(2).every((r) => r === 0n)) {
    info.termios = termiosEntry(agent.read(termios, KERNEL_TERMIOS_SIZE));
    info.termiosLocked = termiosEntry(agent.read(locked, KERNEL_TERMIOS_SIZE));
    const w = new DataView(agent.read(winsize, 8).buffer);
    info.winsize = create(winsize_entrySchema, {
      wsRow: w.getUint16(0, true),
      wsCol: w.getUint16(2, true),
      wsXpixel: w.getUint16(4, true),
      wsYpixel: w.getUint16(6, true),
    });
  }
}

/**
 * A kernel termios as CRIU stores it: c_cc holds the control characters as glibc's 32-byte
 * array, four to a word (the words after the eighth are CRIU's scratch; zero here).
 */
function termiosEntry(k: Uint8Array): termios_entry {
  const v = new DataView(k.buffer, k.byteOffset, k.byteLength);
  const cc = new Uint8Array(32);
  cc.set(k.subarray(17, KERNEL_TERMIOS_SIZE));
  const words = new DataView(cc.buffer);
  return create(termios_entrySchema, {
    cIflag: v.getUint32(0, true),
    cOflag: v.getUint32(4, true),
    cCflag: v.getUint32(8, true),
    cLflag: v.getUint32(12, true),
    cLine: k[16]!,
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
  openIn(agent: Agent): number {
    const pty = this.#newPty();
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

  #newPty(): Pty | undefined {
    if (!this.#wantsPty || this.#pty) return this.#pty;
    if (!this.hooks.sendFd) {
      this.log.warn("orphan_pts_master needs notify_scripts to hand the master over; using our own terminal");
      this.#wantsPty = false;
      return undefined;
    }
    const pty = openPty();
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
  const buf = agent.alloc(4, new Uint8Array(new Int32Array([pgrp]).buffer));
  agent.call("ioctl(TIOCSPGRP)", NR.ioctl, fd, TIOCSPGRP, buf);
}
