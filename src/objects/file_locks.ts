/**
 * File locks (--file-locks, filelocks.img): flock locks, POSIX record locks, OFD locks and leases.
 *
 * Who owns a lock comes from the "lock:" lines of /proc/PID/fdinfo/FD, which the kernel prints
 * only for the locks taken through that fd's open file description and owned by it (flock, OFD,
 * leases) or by the task's fd table (POSIX). So a POSIX lock belongs to the task whose fd shows
 * it, with the byte range it shows; a flock/OFD lock or a lease belongs to the open file
 * description, recorded once for the first task and fd that show it, as CRIU prefers the creator.
 *
 * Restore, as CRIU does and only with --file-locks: once a task has its fds, its locks are taken
 * again in the task itself (remote flock/fcntl), so that a POSIX lock is owned by the restored
 * task and flock/OFD locks and leases by the open file description the task shares.
 * Without --file-locks a dump refuses any lock (CRIU's wording); nothing is changed at dump.
 */
import { create } from "@bufbuild/protobuf";
import { type file_lock_entry, file_lock_entrySchema } from "../images/gen/file-lock_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import { flockStruct, LOCK, LOCK_NR } from "../../ffi/files.ts";
import { NR } from "../../ffi/syscalls.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import type { DumpFilesContext, FilesSession, FileTable, RestoreFilesContext } from "./files.ts";
import { refuse } from "./refusal.ts";
import { RestoreError } from "../errors.ts";

/** CRIU's lock kinds (file_lock_entry.flag). */
const FL = { POSIX: 1, FLOCK: 2, OFD: 4, LEASE: 8 } as const;
const KIND_OF: Record<string, number> = { POSIX: FL.POSIX, FLOCK: FL.FLOCK, OFDLCK: FL.OFD, LEASE: FL.LEASE };
const TYPE_OF: Record<string, number> = { READ: LOCK.F_RDLCK, WRITE: LOCK.F_WRLCK, UNLCK: LOCK.F_UNLCK };

interface LockState {
  entries: file_lock_entry[];
  /** Locks recorded already: a POSIX one per task and range, the others per open file. */
  seen: Set<string>;
}

function lockState(table: FileTable): LockState {
  return table.stateOf("file-locks", () => ({ entries: [], seen: new Set<string>() }));
}

/** One "lock:" line of fdinfo: kind, type, range ("EOF" ends at the end of the file). */
interface LockLine {
  kind: number;
  kindName: string;
  type: number;
  start: bigint;
  end: bigint | null;
}

/** "lock:\t1: POSIX  ADVISORY  WRITE 1234 08:02:131 0 EOF" (waiters, "->", are not locks held). */
function parseLockLine(text: string): LockLine | null {
  const t = text.trim().split(/\s+/);
  if (t[1] === "->") return null;
  const kind = KIND_OF[t[1] ?? ""];
  const type = TYPE_OF[t[3] ?? ""];
  if (kind === undefined || type === undefined || t.length < 8) {
    throw new Error(`Unexpected lock line in fdinfo: ${text.trim()}`);
  }
  return { kind, kindName: t[1]!, type, start: BigInt(t[6]!), end: t[7] === "EOF" ? null : BigInt(t[7]!) };
}

function lockLines(pid: number, fd: number): LockLine[] {
  const text = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`);
  return text.split("\n").filter((l) => l.startsWith("lock:")).map((l) => parseLockLine(l.slice(5)))
    .filter((l): l is LockLine => l !== null);
}

/** The task's pid as the restored tasks see it (the last NSpid). */
function nsPidOf(pid: number): number {
  const line = Deno.readTextFileSync(`/proc/${pid}/status`).split("\n").find((l) => l.startsWith("NSpid:"));
  return Number(line?.split(/\s+/).at(-1) ?? pid);
}

/** At dump, for every fd: its locks, recorded, or refused without --file-locks. */
export function noteFdLocks(ctx: DumpFilesContext, fd: FdEntry, fileId: number): void {
  if (!fd.info.has("lock")) return;
  if (!ctx.session.opts.fileLocks) {
    refuse(
      ctx.pid,
      `the file lock on fd ${fd.fd} (${fd.target})`,
      "some file locks are held by the dumped tasks. You can try --file-locks to dump them",
    );
  }
  const state = lockState(ctx.table);
  for (const l of lockLines(ctx.pid, fd.fd)) {
    const range = `${l.start}-${l.end ?? "EOF"}`;
    const key = l.kind === FL.POSIX
      ? `posix:${ctx.pid}:${fileId}:${range}`
      : `${l.kindName}:${fileId}:${range}`;
    if (state.seen.has(key)) continue;
    state.seen.add(key);
    state.entries.push(create(file_lock_entrySchema, {
      flag: l.kind,
      type: l.type,
      pid: nsPidOf(ctx.pid),
      fd: fd.fd,
      start: l.start,
      len: l.end === null ? 0n : l.end + 1n - l.start,
    }));
    ctx.log.info(`fd ${fd.fd}: ${l.kindName} lock ${range} (type ${l.type})`);
  }
}

/** The dump's end: filelocks.img when any lock was found. */
export function writeFileLocks(session: FilesSession): void {
  const { entries } = lockState(session.table);
  if (entries.length > 0) session.dir.write(KINDS.FILE_LOCKS, undefined, entries);
}

/** PREPARE: filelocks.img, when the restore takes locks back (--file-locks, as CRIU). */
export function readFileLocks(session: FilesSession): void {
  const state = lockState(session.table);
  const entries = session.dir.readOptional<file_lock_entry>(KINDS.FILE_LOCKS);
  if (entries.length > 0 && !session.opts.fileLocks) {
    session.log.info(`${entries.length} file lock(s) in the images are not taken back without --file-locks`);
    return;
  }
  for (const e of entries) {
    if (!Object.values(FL).includes(e.flag as 1)) {
      throw new RestoreError(
        `Refusing the images: file lock of process ${e.pid} on fd ${e.fd} in filelocks.img has kind ${e.flag}`,
      );
    }
  }
  state.entries.push(...entries);
}

function describe(e: file_lock_entry): string {
  const kind = Object.entries(FL).find(([, v]) => v === e.flag)?.[0] ?? `${e.flag}`;
  return `${kind} lock of process ${e.pid} on fd ${e.fd} (from ${e.start}, ${e.len || "to the end"})`;
}

/** In a restored task once its fds are at their numbers: the locks it held, taken again by it. */
export function restoreFileLocks(ctx: RestoreFilesContext): void {
  const mine = lockState(ctx.table).entries.filter((e) => e.pid === ctx.nsPid);
  for (const e of mine) {
    const agent = ctx.agent;
    agent.reset();
    try {
      if (e.flag === FL.FLOCK) {
        const op = e.type === LOCK.F_WRLCK ? LOCK.LOCK_EX : LOCK.LOCK_SH;
        agent.call("flock", LOCK_NR.flock, e.fd, op | LOCK.LOCK_NB);
      } else if (e.flag === FL.LEASE) {
        agent.call("fcntl(F_SETLEASE)", NR.fcntl, e.fd, LOCK.F_SETLEASE, e.type);
      } else {
        const cmd = e.flag === FL.POSIX ? LOCK.F_SETLK : LOCK.F_OFD_SETLK;
        const lock = agent.alloc(32, flockStruct(e.type, e.start, e.len, 0));
        agent.call(e.flag === FL.POSIX ? "fcntl(F_SETLK)" : "fcntl(F_OFD_SETLK)", NR.fcntl, e.fd, cmd, lock);
      }
    } catch (err) {
      if (!isSyscallError(err)) throw err;
      const why = err.code === "EAGAIN" ? "another process holds a conflicting lock" : err.message;
      throw new RestoreError(`Cannot take back the ${describe(e)}: ${why}`, err.errno, { cause: err });
    }
  }
}
