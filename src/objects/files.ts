/**
 * Open files: the registry that picks one object module per fd, and the file table that collects
 * files.img entries (one per open file description, shared by every fd and mapping that uses it).
 *
 * Each kind of file is one module exporting an `FdKind` and registering it (see `mod.ts`). A kind
 * owns everything about its files, so that the dump and the restore know none of them by name:
 *   - `detect` looks at an fd, `dump` adds its files.img entry, `open` recreates it in a task;
 *   - its own images (pipes-data.img, tty-info.img, socket queues...) and any tree-wide state
 *     (`FileTable.stateOf`): written by `finishDump` once the whole tree is collected (where work
 *     that needs every task, such as finding a socket's peer, also goes) and read back by
 *     `loadImages` while the restore still refuses bad images, before any process exists;
 *   - its place in the restore: `rank` orders a task's fds (epoll after its targets),
 *     `beforeTaskFds`/`afterTaskFds` run in each task around its fds, `afterAllFds` once every task
 *     has its fds (what needs them all, e.g. fds in flight), `endRestore` at the end either way.
 * An fd no kind recognises goes to the plugins (`ext_file.ts`), and is refused there when no
 * plugin takes it.
 * `pipe.ts` and `tty.ts` show a kind with images and state of its own; `eventfd.ts` the plain shape.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, type fdinfo_entry, fdinfo_entrySchema, type file_entry } from "../images/gen/fdinfo_pb.ts";
import { fown_entrySchema } from "../images/gen/fown_pb.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import { sameOpenFile } from "../../ffi/process.ts";
import { F, NR, O } from "../../ffi/syscalls.ts";
import { refuse } from "./refusal.ts";
import { RestoreError } from "../errors.ts";
import type { Agent, BatchCall } from "../agent.ts";
import type { Log } from "../log.ts";
import type { RunOptions } from "../options/options.ts";
import type { ImageDir } from "../images/dir.ts";
import type { Hooks } from "../actions/hooks.ts";
import type { Plugins } from "../plugins/plugins.ts";

/**
 * What a dump or restore tells every kind, the same object from start to end: the options that
 * reach objects, the images directory, the action-script hooks and the log. Read-only.
 */
export interface FilesSession {
  readonly table: FileTable;
  readonly dir: ImageDir;
  /** Every option of the operation, read-only (a terminal needs --shell-job). */
  readonly opts: RunOptions;
  readonly hooks: Hooks;
  /** The plugins of the operation, asked before an object is refused. */
  readonly plugins: Plugins;
  readonly log: Log;
  /**
   * CLOCK_BOOTTIME (µs) when the tree was frozen: inventory's dump_uptime, at dump and restore
   * alike, so that timers can take off the time the tree was away. Unknown: undefined.
   */
  readonly frozenUptimeUs?: bigint | undefined;
}

export interface DumpFilesContext {
  pid: number;
  agent: Agent;
  table: FileTable;
  session: FilesSession;
  log: Log;
}

export interface RestoreFilesContext {
  agent: Agent;
  /** The task's pid as the restored tasks see it (their PID namespace), for sharing fds. */
  nsPid: number;
  /** The task's session id, as the restored tasks see it. */
  nsSid: number;
  table: FileTable;
  session: FilesSession;
  /** Files already open in some restored task, for sharing them. */
  shared: SharedFiles;
  /** Moves an fd of the task out of the way of the fd numbers being restored; returns its new number. */
  park(fd: number): number;
  /** The lowest fd number park() uses: above every fd being restored. */
  parkBase: number;
  /** pidfds the task opened on other tasks while taking their fds (parked, so closed at the end). */
  pidfds?: Map<number, bigint>;
  /** The restore's options, read-only. */
  options: RunOptions;
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
 * tasks share the same open file description), and per-kind objects such as pipes created but
 * not yet fully handed out. Parked fds are closed once every task has its files.
 */
export class SharedFiles {
  readonly byId = new Map<number, OpenedFile>();
  /** Kind-specific objects (pipe ends by pipe inode, ...), keyed by a string of the kind's. */
  readonly objects = new Map<string, OpenedFile[]>();
  /** Fds parked in each task, to close at the end. */
  readonly parked = new Map<number, number[]>();

  noteParked(pid: number, fd: number): void {
    const list = this.parked.get(pid) ?? [];
    list.push(fd);
    this.parked.set(pid, list);
  }
}

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
  /** Kinds with a higher rank are restored after the others in a task (epoll needs its targets). */
  readonly rank?: number;
  /** Does this fd belong to this kind? `stat` is the fstat of the fd, null when it cannot be taken. */
  detect(fd: FdEntry, stat: Deno.FileInfo | null): boolean;
  /** Adds the file's entry to the table and returns its id. */
  dump(ctx: DumpFilesContext, fd: FdEntry, stat: Deno.FileInfo | null): number;
  /** Opens the file in the restored task; returns the (temporary) fd it got. */
  open(ctx: RestoreFilesContext, entry: file_entry): number;
  /**
   * Once every task is dumped, the tree still frozen: what needs the whole tree, then the kind's
   * own images. A refusal here still resumes the tree and removes the images.
   */
  finishDump?(session: FilesSession): void;
  /** At PREPARE: reads and checks the kind's own images, before any process exists. */
  loadImages?(session: FilesSession): void;
  /** In a restored task, before its fds are opened, when it has files of this kind. */
  beforeTaskFds?(ctx: RestoreFilesContext, entries: readonly file_entry[]): void;
  /** In a restored task, once its fds are all at their numbers, when it has files of this kind. */
  afterTaskFds?(ctx: RestoreFilesContext, entries: readonly file_entry[]): void;
  /** Once every task has its fds (and the parked ones are still open). */
  afterAllFds?(session: FilesSession, shared: SharedFiles): void;
  /** At the end of a restore, whether it worked or not. */
  endRestore?(session: FilesSession): void;
}

/** files.img: every file entry of the dump, by id, and the state each kind keeps for the whole tree. */
export class FileTable {
  readonly entries: file_entry[] = [];
  #byKey = new Map<string, number>();
  #byId = new Map<number, file_entry>();
  #states = new Map<string, unknown>();

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
    if (this.#byId.has(e.id)) throw new RestoreError(`Refusing the images: files.img has file ${e.id} twice`);
    this.entries.push(e);
    this.#byId.set(e.id, e);
  }

  /**
   * The tree-wide state of one kind (its pipes' data, its terminals...), made on first use: the
   * dump collects into it, the restore reads the kind's images into it.
   */
  stateOf<T>(kind: string, make: () => T): T {
    if (!this.#states.has(kind)) this.#states.set(kind, make());
    return this.#states.get(kind) as T;
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

  /** The entry with this id; a missing one is a damaged checkpoint. */
  get(id: number): file_entry {
    const e = this.#byId.get(id);
    if (!e) throw new RestoreError(`Refusing the images: files.img has no file with id ${id}`);
    return e;
  }
}

/** The owner record CRIU writes for a file nobody asked signals from (F_SETOWN unused). */
export function emptyFown() {
  return create(fown_entrySchema, { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 });
}

/** An fd's file status flags as an entry keeps them: O_CLOEXEC belongs to the fd, not the file. */
export function fileFlags(fd: FdEntry): number {
  return fd.flags & ~O.CLOEXEC;
}

/** Adds the entry of an fd whose open file description no other fd shares so far; returns its id. */
export function addFdFile(ctx: DumpFilesContext, fd: FdEntry, make: (id: number) => file_entry): number {
  return ctx.table.add(`fd:${ctx.pid}:${fd.fd}`, make);
}

const kinds: FdKind[] = [];

export function registerFdKind(kind: FdKind): void {
  kinds.push(kind);
}

/** The kind of what no other kind takes (registered last, detecting nothing). */
function externalFileKind(): FdKind {
  return kinds.find((k) => k.type === fd_types.EXT)!;
}

/** Every registered kind, for the steps that ask each in turn. */
export function fdKinds(): readonly FdKind[] {
  return kinds;
}

/** The dump's last step for files: each kind finishes (peers, its own images). */
export function finishFilesDump(session: FilesSession): void {
  for (const kind of kinds) kind.finishDump?.(session);
}

/** Reads every kind's own images (PREPARE). */
export function loadFileImages(session: FilesSession): void {
  for (const kind of kinds) kind.loadImages?.(session);
}

/** Once every task has its fds. */
export function afterAllFds(session: FilesSession, shared: SharedFiles): void {
  for (const kind of kinds) kind.afterAllFds?.(session, shared);
}

/** At the end of a restore, worked or not: every kind lets go of what it holds; nothing throws. */
export function endFilesRestore(session: FilesSession): void {
  for (const kind of kinds) {
    try {
      kind.endRestore?.(session);
    } catch (e) {
      session.log.error(`${kind.name}: ${(e as Error).message}`);
    }
  }
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
      refuse(
        ctx.pid,
        `the file lock on fd ${fd.fd} (${fd.target})`,
        "file locks are not saved yet, with or without --file-locks",
      );
    }
    const stat = statOf(ctx.pid, fd.fd);
    // An fd no kind takes goes to the plugins (ext_file.ts), which refuse it if none takes it.
    const kind = kinds.find((k) => k.detect(fd, stat)) ?? externalFileKind();
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
  if (!kind) {
    throw new RestoreError(`Refusing the images: files of type ${fd_types[type] ?? type} cannot be restored`);
  }
  return kind;
}

/** Every fd's file has a kind that can restore it (PREPARE). */
export function checkRestorable(table: FileTable, fdinfos: readonly fdinfo_entry[]): void {
  for (const f of fdinfos) kindFor(table.get(f.id).type);
}

/**
 * Opens every fd of a task at its number. A file already open (in this task or another) is
 * duplicated rather than reopened, so every fd of it shares one open file description, offset
 * and flags included, as before the dump. Kinds with files in the task run their steps around.
 */
export function restoreFds(ctx: RestoreFilesContext, fdinfos: readonly fdinfo_entry[]): void {
  const byKind = new Map<FdKind, file_entry[]>();
  for (const f of fdinfos) {
    const entry = ctx.table.get(f.id);
    const kind = kindFor(entry.type);
    byKind.set(kind, [...(byKind.get(kind) ?? []), entry]);
  }
  for (const [kind, entries] of byKind) kind.beforeTaskFds?.(ctx, entries);
  // Whatever the task holds below parkBase goes (its puppet's fds), with the next calls.
  ctx.agent.later("close_range", NR.close_range, 0, ctx.parkBase - 1, 0);
  const rank = (f: fdinfo_entry) => kindFor(ctx.table.get(f.id).type).rank ?? 0;
  const order = [...fdinfos].sort((a, b) => rank(a) - rank(b) || a.fd - b.fd);
  restoreEach(ctx, order);
  for (const [kind, entries] of byKind) kind.afterTaskFds?.(ctx, entries);
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
      ctx.agent.later(`dup3(fd ${info.fd})`, NR.dup3, tmp, info.fd, info.flags & 1 ? O.CLOEXEC : 0);
      ctx.agent.later("close", NR.close, tmp);
    } else if (info.flags & 1) {
      ctx.agent.later("fcntl(F_SETFD)", NR.fcntl, info.fd, F.SETFD, 1); // FD_CLOEXEC
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
      this.#calls.push({ name: `dup(${src.fd})`, nr: NR.dup, args: [src.fd] });
      return;
    }
    const pidfd = this.#pidfd(src.pid);
    const name = `pidfd_getfd(${src.pid}, ${src.fd})`;
    this.#calls.push(
      typeof pidfd === "number"
        ? {
          name,
          nr: NR.pidfd_getfd,
          args: [0, src.fd, 0],
          ref: { arg: 0, back: this.#calls.length - pidfd },
        }
        : { name, nr: NR.pidfd_getfd, args: [pidfd, src.fd, 0] },
    );
  }

  /** Queues a copy of `src` at fd `target`. */
  add(src: OpenedFile, target: number, cloexec: boolean): void {
    const flags = cloexec ? O.CLOEXEC : 0;
    const c = this.#calls;
    if (src.pid === this.ctx.nsPid) {
      c.push({ name: `dup3(fd ${target})`, nr: NR.dup3, args: [src.fd, target, flags] });
      return;
    }
    this.copy(src);
    // The fd got is the lowest free one, which may be `target` itself: moving it above every
    // restored number first keeps dup3 from ever being asked to copy an fd onto itself.
    c.push(this.#parkCall(`fcntl(F_DUPFD_CLOEXEC, fd ${target})`));
    c.push({ name: "close", nr: NR.close, args: [], ref: { arg: 0, back: 2 } });
    c.push({ name: `dup3(fd ${target})`, nr: NR.dup3, args: [0, target, flags], ref: { arg: 0, back: 2 } });
    c.push({ name: "close", nr: NR.close, args: [], ref: { arg: 0, back: 3 } });
  }

  /** The pidfd of task `pid` in the context's task: a number, or the index of the call making it. */
  #pidfd(pid: number): bigint | number {
    const known = this.ctx.pidfds?.get(pid) ?? this.#pidfdAt.get(pid);
    if (known !== undefined) return known;
    const c = this.#calls;
    c.push({ name: `pidfd_open(${pid})`, nr: NR.pidfd_open, args: [pid, 0] });
    // Parked, so that restoring an fd at its number can never close it; closed with the others.
    c.push(this.#parkCall(`fcntl(F_DUPFD_CLOEXEC, pidfd ${pid})`));
    c.push({ name: "close", nr: NR.close, args: [], ref: { arg: 0, back: 2 } });
    this.#pidfdAt.set(pid, c.length - 2);
    return c.length - 2;
  }

  /** A copy of the previous call's fd at the lowest free number from parkBase. */
  #parkCall(name: string): BatchCall {
    return { name, nr: NR.fcntl, args: [0, F.DUPFD_CLOEXEC, this.ctx.parkBase], ref: { arg: 0, back: 1 } };
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
