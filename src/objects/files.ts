/**
 * Open files: the registry that picks one object module per fd, and the file table that collects
 * files.img entries (one per open file description, shared by every fd and mapping that uses it).
 *
 * Each kind of file is a module exporting an `FdKind`: `detect` looks at the fd, `dump` adds its
 * entry to the table, `open` recreates it in the restored task and returns the fd number it got.
 * An fd no kind recognises is refused by name; that refusal is where a plugin will be asked.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, type fdinfo_entry, fdinfo_entrySchema, type file_entry } from "../images/gen/fdinfo_pb.ts";
import type { tty_info_entry } from "../images/gen/tty_pb.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import { sameOpenFile } from "../../ffi/process.ts";
import { F, O } from "../../ffi/syscalls.ts";
import { RestoreError, UnsupportedObjectError } from "../errors.ts";
import type { Agent, BatchCall } from "../agent.ts";
import type { Log } from "../log.ts";

export interface DumpFilesContext {
  pid: number;
  agent: Agent;
  table: FileTable;
  shellJob: boolean;
  log: Log;
}

export interface RestoreFilesContext {
  agent: Agent;
  /** The task's pid as the restored tasks see it (their PID namespace), for sharing fds. */
  nsPid: number;
  table: FileTable;
  /** An fd in the task that refers to our terminal (for --shell-job), or -1. */
  terminalFd: number;
  /** Files already open in some restored task, for sharing them. */
  shared: SharedFiles;
  /** Moves an fd of the task out of the way of the fd numbers being restored; returns its new number. */
  park(fd: number): number;
  /** The lowest fd number park() uses: above every fd being restored. */
  parkBase: number;
  /** pidfds the task opened on other tasks while taking their fds (parked, so closed at the end). */
  pidfds?: Map<number, bigint>;
  log: Log;
}

/** A file that is open in a restored task: where to get another reference to it. */
export interface OpenedFile {
  /** The task, as the restored tasks see it (their PID namespace). */
  pid: number;
  fd: number;
}

/**
 * Restore-wide knowledge of open files: which file ids are already open in which task (so other
 * tasks share the same open file description), and per-kind state such as pipes created but
 * not yet fully handed out. Parked fds are closed once every task has its files.
 */
export class SharedFiles {
  readonly byId = new Map<number, OpenedFile>();
  /** Kind-specific state (pipe ends by pipe inode, ...), keyed by a string of the kind's. */
  readonly objects = new Map<string, OpenedFile[]>();
  /** Fds parked in each task, to close at the end. */
  readonly parked = new Map<number, number[]>();

  noteParked(pid: number, fd: number): void {
    const list = this.parked.get(pid) ?? [];
    list.push(fd);
    this.parked.set(pid, list);
  }
}

const NR_PIDFD_OPEN = 434;
const NR_PIDFD_GETFD = 438;
const NR_DUP = 32;
const NR_DUP3 = 292;
const NR_CLOSE = 3;
const NR_FCNTL = 72;

/**
 * Gets into the context's task a copy of fd `src.fd` of task `src.pid` (same open file
 * description), at the lowest free number; returns that number. One trap.
 */
export function grabFd(ctx: RestoreFilesContext, src: OpenedFile): number {
  const grab = new GrabBatch(ctx);
  grab.copy(src);
  return Number(grab.run().at(-1)!);
}

export interface FdKind {
  readonly name: string;
  readonly type: fd_types;
  /** Kinds with a higher rank are restored after the others (epoll needs its targets). */
  readonly rank?: number;
  /** Does this fd belong to this kind? `stat` is the fstat of the fd, null when it cannot be taken. */
  detect(fd: FdEntry, stat: Deno.FileInfo | null): boolean;
  /** Adds the file's entry to the table and returns its id. */
  dump(ctx: DumpFilesContext, fd: FdEntry, stat: Deno.FileInfo | null): number;
  /** Opens the file in the restored task; returns the (temporary) fd it got. */
  open(ctx: RestoreFilesContext, entry: file_entry): number;
}

/** files.img: every file entry of the dump, by id. */
export class FileTable {
  readonly entries: file_entry[] = [];
  /** tty-info.img: the terminals the files refer to. */
  readonly ttyInfos: tty_info_entry[] = [];
  /** pipes-data.img: bytes queued in each pipe (by pipe inode) and its capacity. */
  readonly pipeData = new Map<number, { data: Uint8Array<ArrayBuffer>; capacity: number }>();
  #byKey = new Map<string, number>();
  #byId = new Map<number, file_entry>();

  constructor(entries: file_entry[] = []) {
    for (const e of entries) this.#add(e);
  }

  nextId(): number {
    return this.entries.length + 1;
  }

  /** Adds an entry unless one with the same key exists; returns its id. */
  add(key: string, make: (id: number) => file_entry): number {
    const known = this.#byKey.get(key);
    if (known !== undefined) return known;
    const e = make(this.nextId());
    this.#add(e);
    this.#byKey.set(key, e.id);
    return e.id;
  }

  #add(e: file_entry): void {
    this.entries.push(e);
    this.#byId.set(e.id, e);
  }

  /** Fds dumped so far, by link target, for finding shared open file descriptions. */
  #described = new Map<string, { pid: number; fd: number; id: number }[]>();

  /** The id of a dumped fd that kcmp says is the same open file description as `fd`, if any. */
  sameDescription(pid: number, fd: FdEntry): number | undefined {
    const candidates = this.#described.get(fd.target) ?? [];
    return candidates.find((c) => sameOpenFile(pid, fd.fd, c.pid, c.fd))?.id;
  }

  noteDescription(pid: number, fd: FdEntry, id: number): void {
    const list = this.#described.get(fd.target) ?? [];
    list.push({ pid, fd: fd.fd, id });
    this.#described.set(fd.target, list);
  }

  has(id: number): boolean {
    return this.#byId.has(id);
  }

  get(id: number): file_entry {
    const e = this.#byId.get(id);
    if (!e) throw new RestoreError(`files.img has no file with id ${id}`);
    return e;
  }
}

const kinds: FdKind[] = [];

export function registerFdKind(kind: FdKind): void {
  kinds.push(kind);
}

function statOf(pid: number, fd: number): Deno.FileInfo | null {
  try {
    return Deno.statSync(`/proc/${pid}/fd/${fd}`);
  } catch {
    return null;
  }
}

/** Dumps every fd of a task; returns its fdinfo entries. */
export function dumpFds(ctx: DumpFilesContext, fds: FdEntry[]): fdinfo_entry[] {
  return fds.map((fd) => {
    // A lock (flock, POSIX, lease) the task holds through this fd would be gone after a restore
    // while the task believes it holds it: CRIU refuses these too unless --file-locks.
    if (fd.info.has("lock")) {
      throw new UnsupportedObjectError(
        ctx.pid,
        `the file lock on fd ${fd.fd} (${fd.target})`,
        "file locks are not saved yet, with or without --file-locks",
      );
    }
    const stat = statOf(ctx.pid, fd.fd);
    const kind = kinds.find((k) => k.detect(fd, stat));
    if (!kind) {
      throw new UnsupportedObjectError(
        ctx.pid,
        `fd ${fd.fd} (${fd.target})`,
        "this kind of file is not supported yet",
      );
    }
    // An fd that shares its open file description with one already seen (dup, fork) shares its id.
    // One fd per open file description is noted: the lists stay as short as the descriptions.
    const known = ctx.table.sameDescription(ctx.pid, fd);
    const id = known ?? kind.dump(ctx, fd, stat);
    if (known === undefined) ctx.table.noteDescription(ctx.pid, fd, id);
    ctx.log.debug(`fd ${fd.fd}: ${kind.name} ${fd.target} as file ${id}`);
    return create(fdinfo_entrySchema, {
      id,
      flags: fd.flags & O.CLOEXEC ? 1 : 0, // FD_CLOEXEC
      type: kind.type,
      fd: fd.fd,
    });
  });
}

function kindFor(type: fd_types): FdKind {
  const kind = kinds.find((k) => k.type === type);
  if (!kind) throw new RestoreError(`Cannot restore files of type ${fd_types[type] ?? type} (files.img)`);
  return kind;
}

/** Is there a kind that restores files of this type? */
export function canRestoreFdType(type: fd_types): boolean {
  return kinds.some((k) => k.type === type);
}

/**
 * Opens every fd of a task at its number. A file already open (in this task or another) is
 * duplicated rather than reopened, so every fd of it shares one open file description, offset
 * and flags included, as before the dump.
 */
export function restoreFds(ctx: RestoreFilesContext, fdinfos: readonly fdinfo_entry[]): void {
  const rank = (f: fdinfo_entry) => kindFor(ctx.table.get(f.id).type).rank ?? 0;
  const order = [...fdinfos].sort((a, b) => rank(a) - rank(b) || a.fd - b.fd);
  restoreEach(ctx, order);
}

function restoreEach(ctx: RestoreFilesContext, order: readonly fdinfo_entry[]): void {
  const grabs = new GrabBatch(ctx);
  for (const info of order) {
    const entry = ctx.table.get(info.id);
    const known = ctx.shared.byId.get(info.id);
    if (known) {
      grabs.add(known, info.fd, (info.flags & 1) !== 0);
      continue;
    }
    grabs.run(); // in fd order: a kind may take what was restored before
    const tmp = kindFor(entry.type).open(ctx, entry);
    // Nothing below needs an answer: these ride along with the next fd's calls.
    if (tmp !== info.fd) {
      ctx.agent.later(`dup3(fd ${info.fd})`, NR_DUP3, tmp, info.fd, info.flags & 1 ? O.CLOEXEC : 0);
      ctx.agent.later("close", NR_CLOSE, tmp);
    } else if (info.flags & 1) {
      ctx.agent.later("fcntl(F_SETFD)", NR_FCNTL, info.fd, F.SETFD, 1); // FD_CLOEXEC
    }
    ctx.shared.byId.set(info.id, { pid: ctx.nsPid, fd: info.fd });
  }
  grabs.run();
}

/**
 * Copies of files already open in restored tasks, put at their fd numbers in one trap: each
 * call takes the fd the one before it made (BatchCall.ref), so no answer is needed in between.
 * A task that inherited its files over fork takes them all this way.
 */
class GrabBatch {
  readonly #calls: BatchCall[] = [];
  /** pidfds (parked) that calls of this batch open, by task: the index of the parking call. */
  readonly #pidfdAt = new Map<number, number>();

  constructor(private readonly ctx: RestoreFilesContext) {}

  /** Queues a copy of `src` at the lowest free fd number: the result of the last call queued. */
  copy(src: OpenedFile): void {
    if (src.pid === this.ctx.nsPid) {
      this.#calls.push({ name: `dup(${src.fd})`, nr: NR_DUP, args: [src.fd] });
      return;
    }
    const pidfd = this.#pidfd(src.pid);
    const name = `pidfd_getfd(${src.pid}, ${src.fd})`;
    this.#calls.push(
      typeof pidfd === "number"
        ? {
          name,
          nr: NR_PIDFD_GETFD,
          args: [0, src.fd, 0],
          ref: { arg: 0, back: this.#calls.length - pidfd },
        }
        : { name, nr: NR_PIDFD_GETFD, args: [pidfd, src.fd, 0] },
    );
  }

  /** Queues a copy of `src` at fd `target`. */
  add(src: OpenedFile, target: number, cloexec: boolean): void {
    const flags = cloexec ? O.CLOEXEC : 0;
    const c = this.#calls;
    if (src.pid === this.ctx.nsPid) {
      c.push({ name: `dup3(fd ${target})`, nr: NR_DUP3, args: [src.fd, target, flags] });
      return;
    }
    this.copy(src);
    // The fd got is the lowest free one, which may be `target` itself: moving it above every
    // restored number first keeps dup3 from ever being asked to copy an fd onto itself.
    c.push(this.#parkCall(`fcntl(F_DUPFD_CLOEXEC, fd ${target})`));
    c.push({ name: "close", nr: NR_CLOSE, args: [], ref: { arg: 0, back: 2 } });
    c.push({ name: `dup3(fd ${target})`, nr: NR_DUP3, args: [0, target, flags], ref: { arg: 0, back: 2 } });
    c.push({ name: "close", nr: NR_CLOSE, args: [], ref: { arg: 0, back: 3 } });
  }

  /** The pidfd of task `pid` in the context's task: a number, or the index of the call making it. */
  #pidfd(pid: number): bigint | number {
    const known = this.ctx.pidfds?.get(pid) ?? this.#pidfdAt.get(pid);
    if (known !== undefined) return known;
    const c = this.#calls;
    c.push({ name: `pidfd_open(${pid})`, nr: NR_PIDFD_OPEN, args: [pid, 0] });
    // Parked, so that restoring an fd at its number can never close it; closed with the others.
    c.push(this.#parkCall(`fcntl(F_DUPFD_CLOEXEC, pidfd ${pid})`));
    c.push({ name: "close", nr: NR_CLOSE, args: [], ref: { arg: 0, back: 2 } });
    this.#pidfdAt.set(pid, c.length - 2);
    return c.length - 2;
  }

  /** A copy of the previous call's fd at the lowest free number from parkBase. */
  #parkCall(name: string): BatchCall {
    return { name, nr: NR_FCNTL, args: [0, F.DUPFD_CLOEXEC, this.ctx.parkBase], ref: { arg: 0, back: 1 } };
  }

  /** Runs what was queued (with the agent's own queue before it); returns the results. */
  run(): bigint[] {
    if (this.#calls.length === 0) return [];
    const results = this.ctx.agent.batch(this.#calls);
    const ctx = this.ctx;
    for (const [pid, at] of this.#pidfdAt) {
      (ctx.pidfds ??= new Map()).set(pid, results[at]!);
      ctx.shared.noteParked(ctx.agent.pid, Number(results[at]!));
    }
    this.#calls.length = 0;
    this.#pidfdAt.clear();
    return results;
  }
}
