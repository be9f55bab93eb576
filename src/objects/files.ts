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
import { type FdEntry, listFds } from "../../ffi/proc.ts";
import { copyFdOf, sameOpenFile } from "../../ffi/process.ts";
import { closeFd } from "../../ffi/fd.ts";
import { isSyscallError, type SyscallError } from "../../ffi/errors.ts";
import { sendFds } from "../../ffi/socket.ts";
import { AF } from "../../ffi/sockaddr.ts";
import { MSG, SOCK } from "../../ffi/sockcall.ts";
import {
  cmsgSpace,
  FD_PAIR_SIZE,
  iovecs,
  msghdr,
  MSGHDR_SIZE,
  parseFdPair,
  parseScmRights,
} from "../../ffi/structs.ts";
import { F, FD_CLOEXEC, NR, O } from "../../ffi/syscalls.ts";
import { refuse } from "./refusal.ts";
import { inheritedFdFor } from "./inherited_fds.ts";
import { openInSocketNetns } from "./socket_netns.ts";
import { noteFdLocks, readFileLocks, restoreFileLocks, writeFileLocks } from "./file_locks.ts";
import { DumpError, RestoreError } from "../errors.ts";
import type { Agent, BatchCall } from "../agent.ts";
import type { Log } from "../log.ts";
import type { TreeIds } from "./tree_ids.ts";
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
  /** The dump's run id, a UUID (inventory's dump_criu_run_id): it names the network lock's nft table. */
  readonly runId?: string | undefined;
  /** At dump: the id in the ids images of the namespace with link `link` (a socket's, ns_id). */
  readonly nsIdOfLink?: (link: string) => number;
  /** For a tree in a user namespace of its own: owners as it sees them (tree_ids.ts). */
  readonly treeIds?: TreeIds | undefined;
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
  /**
   * For a task in a nested PID namespace: the pid by which it sees task `pid` (the tree's id), or
   * undefined when it cannot see it (pidns.ts). Absent: the ids are the same.
   */
  pidSeen?(pid: number): number | undefined;
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

/**
 * Makes file `id` open in the context's task, parked, and returns that fd: a copy when a restored
 * task has it already, else opened by its kind (and then shared from there). For a kind that needs
 * a file no fd of the task has, such as one in flight in a socket queue.
 */
export function holdFile(ctx: RestoreFilesContext, id: number): number {
  const known = ctx.shared.byId.get(id);
  const entry = ctx.table.get(id);
  const parked = ctx.park(known ? grabFd(ctx, known) : openFile(ctx, entry, kindFor(entry)));
  if (!known) ctx.shared.byId.set(id, { pid: ctx.nsPid, fd: parked });
  return parked;
}

export interface FdKind {
  readonly name: string;
  readonly type: fd_types;
  /**
   * Where kinds share a type: whether this one restores `entry` (POSIX message queues are EXT
   * files with their own member). A kind without it takes what the others of its type leave.
   */
  claims?(entry: file_entry): boolean;
  /** Kinds with a higher rank are restored after the others in a task (epoll needs its targets). */
  readonly rank?: number;
  /**
   * Does this fd of task `pid` belong to this kind? `stat` is the fstat of the fd, null when it
   * cannot be taken. `pid` lets a kind ask the kernel more (which family a socket is).
   */
  detect(fd: FdEntry, stat: Deno.FileInfo | null, pid: number): boolean;
  /** Adds the file's entry to the table and returns its id. */
  dump(ctx: DumpFilesContext, fd: FdEntry, stat: Deno.FileInfo | null): number;
  /** Opens the file in the restored task; returns the (temporary) fd it got. */
  open(ctx: RestoreFilesContext, entry: file_entry): number;
  /**
   * The name by which `--inherit-fd fd[N]:NAME` hands in a file of this kind, CRIU's spelling
   * (`pipe:[INO]`, a path without its leading slash...); undefined when it has none.
   */
  inheritName?(entry: file_entry, table: FileTable): string | undefined;
  /**
   * An inherited fd of this kind is opened again through /proc with the dumped flags (a new open
   * file description), as CRIU does for pipes; otherwise the task gets the caller's fd as it is.
   */
  reopenInherited?(entry: file_entry): number | undefined;
  /**
   * For opening many files in one trap, instead of open(): the one call whose result is the new
   * fd (its strings allocated in the agent's scratch, `bytes` of them), and the calls to make on
   * the fd once it is at its number. Null when this file needs open().
   */
  openInBatch?(
    ctx: RestoreFilesContext,
    entry: file_entry,
  ): { open: BatchCall; bytes: number; at: (fd: number) => BatchCall[] } | null;
  /**
   * Once every task is dumped, the tree still frozen: what needs the whole tree, then the kind's
   * own images. A refusal here still resumes the tree and removes the images.
   */
  finishDump?(session: FilesSession): void;
  /**
   * At the end of a dump, before the tree is released: `tasksGoOn` when the tasks run on (a failed
   * dump, --leave-running) and what the dump changed in their objects must be undone; otherwise
   * they are killed or left stopped. Runs for every kind, whatever was dumped.
   */
  endDump?(session: FilesSession, tasksGoOn: boolean): void;
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
    const known = this.#byId.get(e.id);
    if (known && isTunPair(known, e)) return this.#addCompanion(e.type === fd_types.REG ? e : known, e);
    if (known) throw new RestoreError(`Refusing the images: files.img has file ${e.id} twice`);
    this.entries.push(e);
    this.#byId.set(e.id, e);
  }

  /** Regular-file entries that share the id of another kind's (CRIU's tun files), by id. */
  #companions = new Map<number, file_entry>();

  /**
   * Adds `reg`, a regular-file entry, under the id of an entry already added: CRIU writes a tun
   * file as the REG entry of the /dev/net/tun it opened (flags, position) and a TUNF one beside it.
   */
  addCompanion(reg: file_entry): void {
    this.entries.push(reg);
    this.#companions.set(reg.id, reg);
  }

  /** The regular-file entry sharing id `id` with another kind's, if any. */
  companionOf(id: number): file_entry | undefined {
    return this.#companions.get(id);
  }

  #addCompanion(reg: file_entry, added: file_entry): void {
    if (this.#companions.has(reg.id)) {
      throw new RestoreError(`Refusing the images: files.img has file ${reg.id} twice`);
    }
    this.entries.push(added);
    this.#byId.set(reg.id, reg === added ? this.#byId.get(reg.id)! : added);
    this.#companions.set(reg.id, reg);
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

  has(id: number): boolean {
    return this.#byId.has(id);
  }

  /** The entry with this id; a missing one is a damaged checkpoint. */
  get(id: number): file_entry {
    const e = this.#byId.get(id);
    if (!e) throw new RestoreError(`Refusing the images: files.img has no file with id ${id}`);
    return e;
  }
}

/** A REG and a TUNF entry with one id: how CRIU writes a tun file. */
function isTunPair(a: file_entry, b: file_entry): boolean {
  const types = [a.type, b.type].sort((x, y) => x - y);
  return types[0] === fd_types.REG && types[1] === fd_types.TUNF;
}

/**
 * A copy of criu's own fd `fd` in the restored task. When the task sees criu's pid (its PID
 * namespace is criu's) it opens a pidfd on criu and takes the fd with pidfd_getfd (the task is
 * still root and ours to trace); otherwise criu sends it over a socketpair the task makes.
 */
export function takeFromCriu(ctx: { agent: Agent }, fd: number): number {
  const nsLink = (pid: number | "self") => Deno.readLinkSync(`/proc/${pid}/ns/pid`);
  if (nsLink(ctx.agent.pid) !== nsLink("self")) return receiveFromCriu(ctx.agent, fd);
  const pidfd = Number(ctx.agent.call("pidfd_open(criu)", NR.pidfd_open, Deno.pid, 0));
  let copy: bigint | SyscallError;
  try {
    copy = ctx.agent.attempt(`pidfd_getfd(criu, ${fd})`, NR.pidfd_getfd, pidfd, fd, 0);
  } finally {
    ctx.agent.call("close", NR.close, pidfd);
  }
  // A task already in a user namespace below criu's has no right to take criu's fds itself.
  if (isSyscallError(copy, "EPERM")) return receiveFromCriu(ctx.agent, fd);
  if (isSyscallError(copy)) throw copy;
  return Number(copy);
}

/**
 * criu's fd `fd` handed to the task through SCM_RIGHTS, whatever namespaces the task is in: the
 * task makes a datagram socketpair, criu takes a copy of one end (pidfd_getfd from its side) and
 * sends the fd on it, the task receives it on the other end; both ends go.
 */
function receiveFromCriu(agent: Agent, fd: number): number {
  agent.reset();
  const pair = agent.alloc(FD_PAIR_SIZE, new Uint8Array(FD_PAIR_SIZE));
  agent.call("socketpair(AF_UNIX, SOCK_DGRAM)", NR.socketpair, AF.UNIX, SOCK.DGRAM | O.CLOEXEC, 0, pair);
  const [ours, theirs] = parseFdPair(agent.read(pair, FD_PAIR_SIZE));
  try {
    const copy = copyFdOf(agent.pid, ours);
    try {
      sendFds(copy, [fd]);
    } finally {
      closeFd(copy);
    }
    agent.reset();
    const byte = agent.alloc(1, new Uint8Array(1));
    const iov = agent.alloc(16, new Uint8Array(iovecs([{ base: byte, len: 1 }]).buffer));
    const controlLen = cmsgSpace(4);
    const control = agent.alloc(controlLen, new Uint8Array(controlLen));
    const header = agent.alloc(MSGHDR_SIZE, msghdr(1, iov, { addr: control, len: controlLen }));
    agent.call("recvmsg(SCM_RIGHTS)", NR.recvmsg, theirs, header, MSG.CMSG_CLOEXEC);
    const got = parseScmRights(agent.read(control, controlLen), controlLen);
    if (got.length !== 1) throw new RestoreError(`criu's fd ${fd} did not reach task ${agent.pid}`);
    return got[0]!;
  } finally {
    agent.call("close", NR.close, ours);
    agent.call("close", NR.close, theirs);
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
  return kinds.find((k) => k.type === fd_types.EXT && !k.claims)!;
}

/** Every registered kind, for the steps that ask each in turn. */
export function fdKinds(): readonly FdKind[] {
  return kinds;
}

/** The dump's last step for files: each kind finishes (peers, its own images). */
export function finishFilesDump(session: FilesSession): void {
  for (const kind of kinds) kind.finishDump?.(session);
  writeFileLocks(session);
}

/** The end of a dump, worked or not: every kind lets go of what it holds; nothing throws. */
export function endFilesDump(session: FilesSession, tasksGoOn: boolean): void {
  for (const kind of kinds) {
    try {
      kind.endDump?.(session, tasksGoOn);
    } catch (e) {
      session.log.error(`${kind.name}: ${(e as Error).message}`);
    }
  }
}

/** Reads every kind's own images (PREPARE). */
export function loadFileImages(session: FilesSession): void {
  for (const kind of kinds) kind.loadImages?.(session);
  readFileLocks(session);
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

/**
 * Dumps a file that criu itself holds at `fd` (one it took out of a socket queue in flight) as the
 * tasks' files are dumped, sharing the id of a task's fd that kcmp says is the same open file;
 * returns its id. The fd must stay open until the dump ends: later fds are compared with it.
 */
export function dumpHeldFile(ctx: DumpFilesContext, fd: number): number {
  const own = Deno.pid;
  const entry = listFds(own).find((e) => e.fd === fd);
  if (!entry) throw new DumpError(`A file in flight that criu-ts took (its fd ${fd}) is not open any more`);
  const stat = statOf(own, fd);
  const kind = kinds.find((k) => k.detect(entry, stat, own)) ??
    refuse(
      ctx.pid,
      `a file in flight in a socket queue (${entry.target})`,
      "this kind of file is not supported yet",
    );
  const known = ctx.table.sameDescription(own, entry);
  const id = known ?? kind.dump({ ...ctx, pid: own }, entry, stat);
  if (known === undefined) ctx.table.noteDescription(own, entry, id);
  ctx.log.debug(`a file in flight: ${kind.name} ${entry.target} as file ${id}`);
  return id;
}

/** Dumps every fd of a task; returns its fdinfo entries. */
export function dumpFds(ctx: DumpFilesContext, fds: FdEntry[]): fdinfo_entry[] {
  return fds.map((fd) => {
    const stat = statOf(ctx.pid, fd.fd);
    // An fd no kind takes goes to the plugins (ext_file.ts), which refuse it if none takes it.
    const kind = kinds.find((k) => k.detect(fd, stat, ctx.pid)) ?? externalFileKind();
    // An fd that shares its open file description with one already seen (dup, fork) shares its id.
    // One fd per open file description is noted: the lists stay as short as the descriptions.
    const known = ctx.table.sameDescription(ctx.pid, fd);
    const id = known ?? kind.dump(ctx, fd, stat);
    if (known === undefined) ctx.table.noteDescription(ctx.pid, fd, id);
    // Locks held through it (file_locks.ts): recorded, or refused without --file-locks.
    noteFdLocks(ctx, fd, id);
    ctx.log.debug(`fd ${fd.fd}: ${kind.name} ${fd.target} as file ${id}`);
    return create(fdinfo_entrySchema, {
      id,
      flags: fd.flags & O.CLOEXEC ? FD_CLOEXEC : 0,
      type: kind.type,
      fd: fd.fd,
    });
  });
}

function kindFor(entry: file_entry): FdKind {
  const ofType = kinds.filter((k) => k.type === entry.type);
  const kind = ofType.find((k) => k.claims?.(entry)) ?? ofType.find((k) => !k.claims);
  if (!kind) {
    throw new RestoreError(
      `Refusing the images: files of type ${
        fd_types[entry.type] ?? entry.type
      } (files.img) cannot be restored`,
    );
  }
  return kind;
}

/** Every fd's file has a kind that can restore it (PREPARE). */
export function checkRestorable(table: FileTable, fdinfos: readonly fdinfo_entry[]): void {
  for (const f of fdinfos) kindFor(table.get(f.id));
}

/** Is there a kind that restores files of this type? */
export function canRestoreFdType(type: fd_types): boolean {
  return kinds.some((k) => k.type === type);
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
    const kind = kindFor(entry);
    const list = byKind.get(kind) ?? [];
    list.push(entry); // not a copy per fd: a task may have thousands
    byKind.set(kind, list);
  }
  for (const [kind, entries] of byKind) kind.beforeTaskFds?.(ctx, entries);
  // Whatever the task holds below parkBase goes (its puppet's fds), with the next calls.
  ctx.agent.later("close_range", NR.close_range, 0, ctx.parkBase - 1, 0);
  const rank = (f: fdinfo_entry) => kindFor(ctx.table.get(f.id)).rank ?? 0;
  const order = [...fdinfos].sort((a, b) => rank(a) - rank(b) || a.fd - b.fd);
  restoreEach(ctx, order);
  for (const [kind, entries] of byKind) kind.afterTaskFds?.(ctx, entries);
  restoreFileLocks(ctx); // taken by the task itself, on the fds it now has
}

function restoreEach(ctx: RestoreFilesContext, order: readonly fdinfo_entry[]): void {
  const grabs = new GrabBatch(ctx);
  for (const info of order) {
    const entry = ctx.table.get(info.id);
    const known = ctx.shared.byId.get(info.id);
    if (known) {
      grabs.add(known, info.fd, (info.flags & FD_CLOEXEC) !== 0);
      continue;
    }
    const kind = kindFor(entry);
    const inherited = inheritedFile(ctx, entry, kind) !== undefined;
    if (
      !inherited && kind.openInBatch &&
      grabs.open(kind.openInBatch, entry, info.fd, (info.flags & FD_CLOEXEC) !== 0)
    ) {
      ctx.shared.byId.set(info.id, { pid: ctx.nsPid, fd: info.fd });
      continue;
    }
    grabs.run(); // in fd order: a kind may take what was restored before
    const tmp = openFile(ctx, entry, kind);
    // Nothing below needs an answer: these ride along with the next fd's calls.
    if (tmp !== info.fd) {
      ctx.agent.later(`dup3(fd ${info.fd})`, NR.dup3, tmp, info.fd, info.flags & FD_CLOEXEC ? O.CLOEXEC : 0);
      ctx.agent.later("close", NR.close, tmp);
    } else if (info.flags & FD_CLOEXEC || inherited) {
      // A copy of criu's fd (pidfd_getfd, SCM_RIGHTS) comes close-on-exec, whatever was dumped.
      ctx.agent.later("fcntl(F_SETFD)", NR.fcntl, info.fd, F.SETFD, info.flags & FD_CLOEXEC ? FD_CLOEXEC : 0);
    }
    ctx.shared.byId.set(info.id, { pid: ctx.nsPid, fd: info.fd });
  }
  grabs.run();
}

/** The fd of criu's that --inherit-fd gives for this file, and the name it gave it by. */
function inheritedFile(
  ctx: RestoreFilesContext,
  entry: file_entry,
  kind: FdKind,
): { name: string; criuFd: number } | undefined {
  if (ctx.options.inheritFds.length === 0) return undefined;
  const name = kind.inheritName?.(entry, ctx.table);
  const criuFd = name === undefined ? undefined : inheritedFdFor(ctx.options, name);
  return criuFd === undefined ? undefined : { name: name!, criuFd };
}

/**
 * Opens a file in the task: the caller's fd when --inherit-fd names it (opened again with the
 * dumped flags for kinds that want that), otherwise by its kind. Returns the temporary fd.
 */
function openFile(ctx: RestoreFilesContext, entry: file_entry, kind: FdKind): number {
  const inherited = inheritedFile(ctx, entry, kind);
  if (!inherited) return openInSocketNetns(ctx, entry, () => kind.open(ctx, entry));
  ctx.log.info(
    `File ${inherited.name} will be restored from inherit fd ${inherited.criuFd} (file ${entry.id} of files.img)`,
  );
  const flags = kind.reopenInherited?.(entry);
  return flags === undefined
    ? takeFromCriu(ctx, inherited.criuFd)
    : reopenCriuFd(ctx, inherited.criuFd, flags, inherited.name);
}

/**
 * Opens criu's fd `criuFd` again in the task with `flags` (a new open file description, as CRIU's
 * reopen of an inherited pipe or external file): a copy of it is taken into the task
 * (takeFromCriu, whatever the task's namespaces) and opened through the task's /proc/self/fd.
 */
export function reopenCriuFd(ctx: RestoreFilesContext, criuFd: number, flags: number, what: string): number {
  const copy = takeFromCriu(ctx, criuFd);
  const agent = ctx.agent;
  agent.reset();
  const path = `/proc/self/fd/${copy}`;
  try {
    return Number(agent.call(`open(${path})`, NR.open, agent.string(path), flags & ~O.CLOEXEC, 0));
  } catch (e) {
    throw new RestoreError(
      `Cannot open ${what} in task ${agent.pid} from criu's inherit fd ${criuFd}: ${(e as Error).message}`,
      0,
      { cause: e },
    );
  } finally {
    agent.call("close", NR.close, copy);
  }
}

/** Scratch room the paths of one batch of opens may take (the scratch area is 64 KiB). */
const OPEN_BATCH_SCRATCH = 24 * 1024;

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
    const seen = this.ctx.pidSeen ? this.ctx.pidSeen(pid) : pid;
    if (seen === undefined) {
      throw new RestoreError(
        `Process ${this.ctx.nsPid} shares a file with process ${pid}, which its PID namespace cannot see (only its ancestors' files can be taken from outside it)`,
      );
    }
    const c = this.#calls;
    c.push({ name: `pidfd_open(${seen})`, nr: NR.pidfd_open, args: [seen, 0] });
    // Parked, so that restoring an fd at its number can never close it; closed with the others.
    c.push(this.#parkCall(`fcntl(F_DUPFD_CLOEXEC, pidfd ${pid})`));
    c.push({ name: "close", nr: NR.close, args: [], ref: { arg: 0, back: 2 } });
    this.#pidfdAt.set(pid, c.length - 2);
    return c.length - 2;
  }

  /** Scratch bytes that calls of this batch point at (paths): the batch runs before they fill it. */
  #scratchUsed = 0;

  /**
   * Queues the opening of `entry` by its kind's single call, placed at fd `target` the way copies
   * are (parked first, so that an open landing on `target` itself never meets dup3 onto itself).
   * False when the kind wants its open() for this file.
   */
  open(
    openInBatch: NonNullable<FdKind["openInBatch"]>,
    entry: file_entry,
    target: number,
    cloexec: boolean,
  ): boolean {
    if (this.#scratchUsed > OPEN_BATCH_SCRATCH) this.run();
    if (this.#calls.length === 0) this.ctx.agent.reset(); // nothing queued points into scratch
    const opening = openInBatch(this.ctx, entry);
    if (!opening) return false;
    this.#scratchUsed += opening.bytes + 6 * 64; // its strings, and its calls in the batch table
    const c = this.#calls;
    c.push(opening.open);
    c.push(this.#parkCall(`fcntl(F_DUPFD_CLOEXEC, fd ${target})`));
    c.push({ name: "close", nr: NR.close, args: [], ref: { arg: 0, back: 2 } });
    const flags = cloexec ? O.CLOEXEC : 0;
    c.push({ name: `dup3(fd ${target})`, nr: NR.dup3, args: [0, target, flags], ref: { arg: 0, back: 2 } });
    c.push({ name: "close", nr: NR.close, args: [], ref: { arg: 0, back: 3 } });
    c.push(...opening.at(target));
    return true;
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
    this.#scratchUsed = 0;
    return results;
  }
}
