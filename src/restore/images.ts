/**
 * Reading a checkpoint for restore (PREPARE), and refusing it before anything is created when it
 * does not add up or holds what the kernel would refuse once the tasks exist. Every refusal names
 * the image at fault, and the one it disagrees with: a pstree that does not make a tree, a missing
 * core, ids, mm or pages image, pages outside the areas or a pages image of another size, an fd or
 * a mapping of a file files.img does not hold or that is gone, pipe data beyond the pipe. What a
 * core image or an mm image holds is checked in core_checks.ts and mm_checks.ts.
 */
import type { pstree_entry } from "../images/gen/pstree_pb.ts";
import type { core_entry, task_kobj_ids_entry } from "../images/gen/core_pb.ts";
import type { mm_entry } from "../images/gen/mm_pb.ts";
import type { vma_entry } from "../images/gen/vma_pb.ts";
import type { pagemap_entry, pagemap_head } from "../images/gen/pagemap_pb.ts";
import type { fs_entry } from "../images/gen/fs_pb.ts";
import { fd_types, type fdinfo_entry, type file_entry } from "../images/gen/fdinfo_pb.ts";
import { type inventory_entry, inventory_entrySchema } from "../images/gen/inventory_pb.ts";
import { isFieldSet, type Message } from "@bufbuild/protobuf";
import type { reg_file_entry } from "../images/gen/regfile_pb.ts";
import type { remap_file_path_entry } from "../images/gen/remap-file-path_pb.ts";
import { imageFileName, type ImageKind, KINDS } from "../images/kinds.ts";
import type { memfd_inode_entry } from "../images/gen/memfd_pb.ts";
import { MAP, O } from "../../ffi/syscalls.ts";
import { getRlimit } from "../../ffi/process.ts";
import { unusableDirectory } from "../dirs.ts";
import { ImageDir } from "../images/dir.ts";
import { canRestoreFdType, fdKinds, type FilesSession, FileTable, loadFileImages } from "../objects/files.ts";
import { inheritedFdFor } from "../objects/inherited_fds.ts";
import { defaultOptions, freezeOptions, type RunOptions } from "../options/options.ts";
import { noHooks } from "../actions/hooks.ts";
import { quietLog } from "../log.ts";
import { Plugins } from "../plugins/plugins.ts";
import { STAGE } from "../plugins/api.ts";
import { coreProblem } from "./core_checks.ts";
import { mmProblem, sysctl } from "./mm_checks.ts";
import { PAGE_SIZE, PE, VMA } from "../objects/memory.ts";
import { backingOf } from "../objects/mappings.ts";
import "../objects/mod.ts";
import { RestoreError } from "../errors.ts";
import { OLD_TASK_STATE, TASK_STATE } from "../dump/task.ts";
import { treeIdsAtRestore } from "../objects/tree_ids.ts";

/** The largest fd number plus one a task can have (fs.nr_open). */
const MAX_FD = sysctl("/proc/sys/fs/nr_open", 1024 * 1024);
const RLIMIT_NOFILE = 7;
/** fds the restore may park above a task's highest fd while it puts the others in place. */
const PARKING_ROOM = 1024;

/**
 * The highest fd number a restored task can be given: the tasks start with our hard limit on
 * open files, and the restore needs room above the highest fd to park others.
 */
function highestFd(): number {
  const hard = getRlimit(Deno.pid, RLIMIT_NOFILE).max; // RLIM_INFINITY becomes a huge number: fine
  return Math.min(MAX_FD, Number(hard)) - PARKING_ROOM - 1;
}

export interface PageRun {
  vaddr: bigint;
  pages: number;
}

export interface RestoreTaskImages {
  entry: pstree_entry;
  /** The task's pid in our PID namespace, once it is created (entry.pid is the one it sees). */
  hostPid: number;
  /** Core of each thread, leader first. */
  cores: { tid: number; core: core_entry }[];
  ids?: task_kobj_ids_entry;
  mm?: mm_entry;
  pages: PageRun[];
  pagesPath?: string;
  fs?: fs_entry;
  fdinfos: fdinfo_entry[];
  /** Ranges to install MADV_GUARD_INSTALL guards on, inside the areas (VMA_AREA_GUARD entries). */
  guards?: vma_entry[];
  zombie: boolean;
  /** A helper: a task that only recreates a process group whose leader had gone. */
  helper: boolean;
}

export interface Checkpoint {
  dir: ImageDir;
  inventory: inventory_entry;
  tasks: RestoreTaskImages[];
  files: FileTable;
  /** What every kind of file is told: the kinds read their own images into it at PREPARE. */
  session: FilesSession;
}

/** What the kinds of file are told besides the images (a restore's options, hooks, plugins, log). */
export type SessionServices = Omit<FilesSession, "table" | "dir">;

/** For a look at images without restoring them (tests, crit): CRIU's defaults, no hooks, no plugins. */
function quietServices(): SessionServices {
  const log = quietLog();
  return {
    opts: freezeOptions(defaultOptions()),
    hooks: noHooks,
    plugins: Plugins.none(STAGE.RESTORE, log),
    log,
  };
}

/**
 * Refuses the checkpoint. `what` names the image file at fault (and the one it disagrees with,
 * when two do not match), so a damaged checkpoint can be found and replaced.
 */
function bad(what: string): never {
  throw new RestoreError(`Refusing the images: ${printable(what)}`);
}

/** Control characters (a damaged name may hold a newline) shown as escapes: one line per message. */
function printable(text: string): string {
  // deno-lint-ignore no-control-regex -- control characters are exactly what is looked for
  return text.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

function hex(x: bigint): string {
  return "0x" + x.toString(16);
}

function nameOf(kind: ImageKind, id?: number | bigint): string {
  return imageFileName(kind, id);
}

/** Every entry of an image that must exist; `why` says who needs it when it does not. */
function need<T>(dir: ImageDir, kind: ImageKind, id: number | bigint | undefined, why = ""): T[] {
  if (!dir.has(kind, id)) bad(`${nameOf(kind, id)} is missing${why ? ` (${why})` : ""}`);
  return dir.read<T & Message>(kind, id);
}

/** The one entry of an image that holds exactly one. */
function needOne<T>(dir: ImageDir, kind: ImageKind, id: number | bigint | undefined, why = ""): T {
  const entries = need<T>(dir, kind, id, why);
  if (entries.length !== 1) bad(`${nameOf(kind, id)} holds ${entries.length} entries, expected 1`);
  return entries[0]!;
}

/** The highest pid the kernel gives out here; clone3 refuses a set_tid above it. */
function pidMax(): number {
  return sysctl("/proc/sys/kernel/pid_max", 4 * 1024 * 1024); // PID_MAX_LIMIT on 64-bit
}

/**
 * pstree.img: positive pids below pid_max, each pid and thread once, parents listed before
 * their children (the tree is forked in this order), the leader among its threads.
 */
function checkTree(tree: readonly pstree_entry[]): void {
  const file = nameOf(KINDS.PSTREE);
  if (tree.length === 0) bad(`${file} lists no process`);
  const max = pidMax();
  const ok = (n: number) => Number.isInteger(n) && n > 0 && n <= max;
  const seen = new Set<number>();
  const tids = new Set<number>();
  for (const [i, e] of tree.entries()) {
    if (!ok(e.pid)) bad(`${file} lists a process with pid ${e.pid}, expected 1 to ${max}`);
    if (seen.has(e.pid)) bad(`${file} lists process ${e.pid} twice`);
    if (i > 0 && !seen.has(e.ppid)) {
      bad(`${file} lists process ${e.pid} before its parent ${e.ppid}, or without it`);
    }
    for (const [what, v] of [["group", e.pgid], ["session", e.sid]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > max) bad(`${file} puts process ${e.pid} in ${what} ${v}`);
    }
    seen.add(e.pid);
    checkSession(tree, i);
    for (const t of e.threads) {
      // A zombie's, as CRIU writes them: 0, or (a zombie in a user namespace of its own) whatever
      // CRIU 4.2 left there. loadTask refuses a live process whose leader is not among its threads.
      if (e.threads.length === 1 && t !== e.pid) continue;
      if (!ok(t) || tids.has(t)) bad(`${file} lists thread ${t} of process ${e.pid} twice or out of range`);
      tids.add(t);
    }
  }
}

/**
 * Sessions and groups as the restore can make them: a task starts a session of its own or stays
 * in its parent's (the root may stay in criu's, for --shell-job), and a process group lies in one
 * session. Anything else would fail setpgid once the tasks exist, or come back different.
 */
function checkSession(tree: readonly pstree_entry[], i: number): void {
  const file = nameOf(KINDS.PSTREE);
  const e = tree[i]!;
  const parent = i > 0 ? tree.find((p) => p.pid === e.ppid) : undefined;
  if (parent && e.sid !== e.pid && e.sid !== parent.sid) {
    bad(
      `${file} puts process ${e.pid} in session ${e.sid}, neither its own nor its parent's (${parent.sid})`,
    );
  }
  const other = tree.find((o) => o.pgid === e.pgid && o.sid !== e.sid && o !== e);
  if (other) {
    bad(`${file} puts process group ${e.pgid} in two sessions (${e.sid} and ${other.sid})`);
  }
}

/** A guard range must lie inside the areas (a guard can only be installed on mapped memory). */
function checkGuard(pid: number, mm: mm_entry, g: vma_entry): void {
  const where = `process ${pid}, guard range ${hex(g.start)}-${hex(g.end)}`;
  if (g.start % BigInt(PAGE_SIZE) || g.end % BigInt(PAGE_SIZE) || g.end <= g.start) {
    bad(`${where} is not a page range`);
  }
  for (let at = g.start; at < g.end;) {
    const v = mm.vmas.find((a) => a.start <= at && at < a.end);
    if (!v) bad(`${where} is not inside the areas`);
    at = v.end;
  }
}

/** The area holding `addr`, by binary search: checkAreas has made sure they are sorted. */
function areaAt(vmas: readonly vma_entry[], addr: bigint): vma_entry | undefined {
  let lo = 0;
  let hi = vmas.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const v = vmas[mid]!;
    if (addr < v.start) hi = mid;
    else if (addr >= v.end) lo = mid + 1;
    else return v;
  }
  return undefined;
}

/** Size of a file, or undefined when it is missing. */
function sizeOf(path: string): number | undefined {
  try {
    return Deno.statSync(path).size;
  } catch {
    return undefined;
  }
}

function checkPages(pid: number, mm: mm_entry, runs: PageRun[], pagesPath: string): void {
  const file = nameOf(KINDS.PAGEMAP, pid);
  let total = 0;
  for (const r of runs) {
    const end = r.vaddr + BigInt(r.pages) * BigInt(PAGE_SIZE);
    // A run may cross from one area into the next adjacent one, never into a hole.
    let at = r.vaddr;
    while (at < end) {
      const v = areaAt(mm.vmas, at);
      if (!v) bad(`${file} has pages at ${hex(at)}, outside every area of ${nameOf(KINDS.MM, pid)}`);
      if (backingOf(v)?.ownPages(v) === "none") {
        bad(
          `${file} has pages in the area at ${hex(v.start)} of ${nameOf(KINDS.MM, pid)}, whose pages its ${
            backingOf(v)!.name
          } holds`,
        );
      }
      at = v.end < end ? v.end : end;
    }
    total += r.pages;
  }
  const pages = pagesPath.slice(pagesPath.lastIndexOf("/") + 1);
  const size = sizeOf(pagesPath);
  if (size === undefined) bad(`${pages} is missing (${file} names it)`);
  if (size !== total * PAGE_SIZE) {
    bad(
      `${pages} holds ${size} bytes but the pagemap of process ${pid} (${file}) lists ${total} pages ` +
        `(${total * PAGE_SIZE} bytes)`,
    );
  }
}

/** Page counts above this cannot be in one address space (2^47 bytes of 4 KiB pages). */
const MAX_PAGES = 2 ** 35;

/** The runs of a pagemap image (its own or a shared object's) and the pages image it names. */
function readPagemap(dir: ImageDir, kind: ImageKind, id: number | bigint, why = "") {
  const file = nameOf(kind, id);
  const [head, ...entries] = need<pagemap_head | pagemap_entry>(dir, kind, id, why);
  if (!head || !("pagesId" in head)) bad(`${file} has no header`);
  const runs = (entries as pagemap_entry[]).map((e) => {
    // CRIU marks anonymous pages PE_LAZY as well when they are in the pages image (PE_PRESENT);
    // only pages kept elsewhere (a parent image, a lazy-pages server) are out of reach.
    if (e.flags !== undefined && (e.flags & PE.PARENT || !(e.flags & PE.PRESENT))) {
      bad(`${file} refers to a parent image or lazy pages, which restore does not support yet`);
    }
    const count = e.nrPages ?? BigInt(e.compatNrPages);
    if (count <= 0n || count > BigInt(MAX_PAGES)) {
      bad(`${file} has a run of ${count} pages at ${hex(e.vaddr)}`);
    }
    if (e.vaddr % BigInt(PAGE_SIZE)) bad(`${file} has an unaligned address ${hex(e.vaddr)}`);
    return { vaddr: e.vaddr, pages: Number(count) };
  });
  return { runs, pagesPath: dir.pathFor(KINDS.PAGES, head.pagesId) };
}

function loadPagemap(dir: ImageDir, pid: number): { runs: PageRun[]; pagesPath: string } {
  return readPagemap(dir, KINDS.PAGEMAP, pid, `${nameOf(KINDS.CORE, pid)} says process ${pid} is alive`);
}

/**
 * Shared anonymous objects filled from pagemap-shmem-SHMID.img: the pages must lie inside the
 * object (the first area mapping it), and the pages image must hold them, or the restore would
 * write past the object.
 */
function checkSharedObjects(dir: ImageDir, tasks: readonly RestoreTaskImages[]): void {
  // An object is as large as the farthest any task's area reaches into it (its head may be unmapped).
  const reach = new Map<bigint, bigint>();
  for (const t of tasks) {
    for (const v of t.mm?.vmas ?? []) {
      if ((v.status & (VMA.ANON_SHARED | VMA.SYSVIPC)) !== VMA.ANON_SHARED) continue; // SysV: ipcns's
      const end = v.pgoff + (v.end - v.start);
      if (end > (reach.get(v.shmid) ?? 0n)) reach.set(v.shmid, end);
    }
  }
  for (const [shmid, size] of reach) {
    if (!dir.has(KINDS.SHMEM_PAGEMAP, shmid)) continue;
    const file = nameOf(KINDS.SHMEM_PAGEMAP, shmid);
    const { runs, pagesPath } = readPagemap(dir, KINDS.SHMEM_PAGEMAP, shmid);
    let total = 0;
    for (const r of runs) {
      if (r.vaddr + BigInt(r.pages * PAGE_SIZE) > size) {
        bad(`${file} has pages at offset ${hex(r.vaddr)}, past the end of the ${size}-byte object`);
      }
      total += r.pages;
    }
    const pages = pagesPath.slice(pagesPath.lastIndexOf("/") + 1);
    const have = sizeOf(pagesPath);
    if (have === undefined) bad(`${pages} is missing (${file} names it)`);
    if (have < total * PAGE_SIZE) bad(`${pages} holds ${have} bytes but ${file} lists ${total} pages`);
  }
}

/**
 * CRIU 4.x, on kernels where shared anonymous memory looks like a memfd, records it as a memfd
 * named "/dev/zero" whose inode's shmid names its contents (pagemap-shmem-SHMID.img). It is plain
 * shared anonymous memory, and comes back as such. Other memfd areas are memfd mappings
 * (mapping_memfd.ts); their memfd must be in memfd.img.
 */
function sharedAnonFromMemfd(
  pid: number,
  mm: mm_entry,
  files: FileTable,
  inodes: readonly memfd_inode_entry[],
) {
  for (const v of mm.vmas) {
    if (!(v.status & VMA.MEMFD)) continue;
    const file = fileFor(files, v.shmid, nameOf(KINDS.MM, pid), `the mapping at ${hex(v.start)}`);
    const inodeId = file.memfd?.inodeId;
    const inode = inodes.find((i) => i.inodeId === BigInt(inodeId ?? -1));
    if (!inode) {
      bad(
        `${nameOf(KINDS.MM, pid)} maps file ${v.shmid} at ${hex(v.start)}, whose memfd is not in memfd.img`,
      );
    }
    if (inode.name !== "/dev/zero") continue;
    v.status = (v.status & ~(VMA.MEMFD | VMA.FILE_SHARED)) | VMA.ANON_SHARED;
    v.flags |= MAP.ANONYMOUS;
    v.shmid = BigInt(inode.shmid);
  }
}

/** The entry of files.img with id `id`, which image `by` uses for `role` (an fd, a mapping...). */
function fileFor(files: FileTable, id: number | bigint, by: string, role: string): file_entry {
  const n = Number(id);
  if (!files.has(n)) {
    bad(`${by} refers to file ${id} for ${role}, which ${nameOf(KINDS.FILES)} does not hold`);
  }
  return files.get(n);
}

/**
 * A regular file of files.img, for what needs a path (an fd, a mapping, the executable, cwd,
 * root). It must exist: finding it gone only once the tasks exist would be too late.
 */
function regFileFor(
  files: FileTable,
  id: number | bigint,
  by: string,
  role: string,
  want?: "file" | "directory",
): reg_file_entry {
  const reg = fileFor(files, id, by, role).reg;
  if (!reg) {
    bad(`${by} refers to file ${id} for ${role}, which is not a regular file in ${nameOf(KINDS.FILES)}`);
  }
  const where = `file ${id} of ${nameOf(KINDS.FILES)}, ${role} in ${by}`;
  if (files.stateOf("remapped-ids", () => new Set<number>()).has(Number(id))) return reg;
  if (files.stateOf("paths-in-own-mntns", () => ({ on: false })).on) return reg;
  const st = statOf(reg.name);
  if (!st) bad(`${reg.name} does not exist (${where})`);
  if (want === "file" && !st.isFile) bad(`${reg.name} is not a regular file (${where})`);
  if (want === "directory" && !st.isDirectory) bad(`${reg.name} is not a directory (${where})`);
  return reg;
}

/** What is at `path`: what it leads to, or the link itself when it leads nowhere (an O_PATH fd may hold one). */
function statOf(path: string): Deno.FileInfo | undefined {
  for (const look of [Deno.statSync, Deno.lstatSync]) {
    try {
      return look(path);
    } catch {
      // try the next way
    }
  }
  return undefined;
}

/** Regular files the restore does not open by their name: external ones, and those --inherit-fd names. */
function handedIn(files: FileTable, opts: RunOptions): number[] {
  return files.entries.filter((e) =>
    e.reg !== undefined &&
    (e.reg.ext ||
      inheritedFdFor(opts, fdKinds().find((k) => k.type === e.type)?.inheritName?.(e, files) ?? "") !==
        undefined)
  ).map((e) => e.id);
}

/** Which field of file_entry holds the details of each kind of file the restore opens. */
const FILE_DETAILS: Partial<Record<fd_types, keyof file_entry>> = {
  [fd_types.REG]: "reg",
  [fd_types.PIPE]: "pipe",
  [fd_types.EVENTFD]: "efd",
  [fd_types.EVENTPOLL]: "epfd",
  [fd_types.TTY]: "tty",
};

/** files.img: each file has the details of its kind; offsets are ones lseek takes. */
function checkFiles(files: FileTable): void {
  const file = nameOf(KINDS.FILES);
  for (const e of files.entries) {
    const details = FILE_DETAILS[e.type];
    if (details !== undefined && e[details] === undefined) {
      bad(`${file} has file ${e.id} of type ${e.type} without its details`);
    }
    if (e.reg && e.reg.name === "") bad(`${file} has file ${e.id} without a name`);
    if (e.reg && e.reg.pos >= 1n << 63n) bad(`${file} has file ${e.id} at offset ${e.reg.pos}`);
  }
}

/** The core image of thread `tid` of process `pid`, whose threads are `threads`. */
function readCore(dir: ImageDir, tid: number, pid: number, threads: readonly number[]): core_entry {
  const core = needOne<core_entry>(
    dir,
    KINDS.CORE,
    tid,
    `${nameOf(KINDS.PSTREE)} lists thread ${tid} of ${pid}`,
  );
  const problem = coreProblem(core, threads);
  if (problem) bad(`${nameOf(KINDS.CORE, tid)} has ${problem}`);
  return core;
}

/** fdinfo-ID.img: fd numbers the kernel can give, each once, of files that files.img holds. */
const FILES = imageFileName(KINDS.FILES);

function checkFdinfos(
  filesId: number,
  fdinfos: readonly fdinfo_entry[],
  files: FileTable,
  epollsMade: Set<number>,
): void {
  const file = nameOf(KINDS.FDINFO, filesId);
  const maxFd = highestFd();
  const seen = new Set<number>();
  for (const f of fdinfos) {
    if (!Number.isInteger(f.fd) || f.fd < 0 || f.fd > maxFd) {
      bad(`${file} has fd ${f.fd}, expected 0 to ${maxFd}`);
    }
    if (seen.has(f.fd)) bad(`${file} has fd ${f.fd} twice`);
    seen.add(f.fd);
    const entry = fileFor(files, f.id, file, `fd ${f.fd}`);
    if (entry.type !== f.type) {
      bad(
        `${file} says fd ${f.fd} is of type ${f.type}, but ${FILES} has file ${f.id} of type ${entry.type}`,
      );
    }
    if (!canRestoreFdType(entry.type)) {
      bad(
        `${FILES} has file ${f.id} (fd ${f.fd} in ${file}) of type ${entry.type}, which restore cannot open`,
      );
    }
    if (entry.type === fd_types.REG) {
      const directory = ((entry.reg?.flags ?? 0) & O.DIRECTORY) !== 0;
      regFileFor(files, f.id, file, `fd ${f.fd}`, directory ? "directory" : undefined);
    }
  }
  // An epoll is made again by the first task (in tree order) that has it, and watches fds of that
  // task: each must be there to be added again. Tasks that got it over fork may have closed some.
  for (const f of fdinfos) {
    const epoll = files.get(f.id).epfd;
    if (!epoll || epollsMade.has(f.id)) continue;
    epollsMade.add(f.id);
    for (const t of epoll.tfd) {
      if (!seen.has(t.tfd)) {
        bad(`${nameOf(KINDS.FILES)} has epoll file ${f.id} watch fd ${t.tfd}, which ${file} does not have`);
      }
    }
  }
}

/** Files the checks of earlier tasks saw: mapped files whose size was checked, epolls made. */
interface SeenFiles {
  mapped: Set<number>;
  epolls: Set<number>;
}

function loadTask(
  dir: ImageDir,
  entry: pstree_entry,
  files: FileTable,
  memfds: readonly memfd_inode_entry[],
  seen: SeenFiles,
): RestoreTaskImages {
  const pid = entry.pid;
  const leader = readCore(dir, pid, pid, entry.threads);
  if (!leader.tc) {
    bad(`${nameOf(KINDS.CORE, pid)} has no task part (${nameOf(KINDS.PSTREE)} lists ${pid} as a process)`);
  }
  const state = leader.tc.taskState;
  const zombie = state === TASK_STATE.dead || state === OLD_TASK_STATE.zombie;
  const helper = state === OLD_TASK_STATE.helper;
  // CRIU lists a zombie's threads as [0]: it has none left (and CRIU 4.2 leaves a stray value
  // there for a zombie in a user namespace of its own, which nothing must take for a pid).
  if (zombie) entry.threads = [0];
  if (zombie || helper) {
    return { entry, hostPid: 0, cores: [{ tid: pid, core: leader }], pages: [], fdinfos: [], zombie, helper };
  }
  if (!entry.threads.includes(pid)) {
    bad(`${nameOf(KINDS.PSTREE)} does not list process ${pid} among its own threads`);
  }
  const cores = [
    { tid: pid, core: leader },
    ...entry.threads.filter((t) => t !== pid).map((tid) => ({
      tid,
      core: readCore(dir, tid, pid, entry.threads),
    })),
  ];
  const task: RestoreTaskImages = { entry, hostPid: 0, cores, pages: [], fdinfos: [], zombie, helper };
  for (const c of cores) {
    if (!c.core.threadInfo?.gpregs) bad(`${nameOf(KINDS.CORE, c.tid)} has no registers`);
  }
  const ids = needOne<task_kobj_ids_entry>(
    dir,
    KINDS.IDS,
    pid,
    `${nameOf(KINDS.CORE, pid)} says process ${pid} is alive`,
  );
  const mm = needOne<mm_entry>(dir, KINDS.MM, pid, `${nameOf(KINDS.CORE, pid)} says process ${pid} is alive`);
  // CRIU records the vsyscall page; the kernel maps it in every process, so nothing restores it.
  mm.vmas = mm.vmas.filter((v) => !(v.status & VMA.VSYSCALL));
  // Guard ranges lie inside the areas: they are kept apart, to be installed once those are in.
  const guards = mm.vmas.filter((v) => v.status === VMA.GUARD);
  mm.vmas = mm.vmas.filter((v) => v.status !== VMA.GUARD);
  for (const g of guards) checkGuard(pid, mm, g);
  sharedAnonFromMemfd(pid, mm, files, memfds);
  const wrong = mmProblem(mm);
  if (wrong) bad(`${nameOf(KINDS.MM, pid)} has ${wrong}`);
  const { runs, pagesPath } = loadPagemap(dir, pid);
  checkPages(pid, mm, runs, pagesPath);
  const [fs] = dir.readOptional<fs_entry>(KINDS.FS, pid);
  if (fs) {
    regFileFor(files, fs.cwdId, nameOf(KINDS.FS, pid), "the working directory", "directory");
    regFileFor(files, fs.rootId, nameOf(KINDS.FS, pid), "the root", "directory");
  }
  const fdinfos = dir.readOptional<fdinfo_entry>(KINDS.FDINFO, ids.filesId);
  checkFdinfos(ids.filesId, fdinfos, files, seen.epolls);
  for (const v of mm.vmas) backingOf(v)?.check?.(pid, v, files, seen.mapped);
  regFileFor(files, mm.exeFileId, nameOf(KINDS.MM, pid), "the executable", "file");
  Object.assign(task, { ids, mm, pages: runs, pagesPath, fdinfos, guards });
  if (fs) task.fs = fs;
  return task;
}

function ownMountTree(imagesDir: string): boolean {
  return [...Deno.readDirSync(imagesDir)].some((f) => /^mountpoints-\d+\.img$/.test(f.name));
}

export function loadCheckpoint(imagesDir: string, services: SessionServices = quietServices()): Checkpoint {
  const unusable = unusableDirectory("images directory", imagesDir);
  if (unusable !== undefined) throw new RestoreError(unusable);
  const dir = new ImageDir(imagesDir);
  if (!dir.has(KINDS.INVENTORY)) {
    throw new RestoreError(`${imagesDir} holds no checkpoint (no inventory.img)`);
  }
  const inventory = needOne<inventory_entry>(dir, KINDS.INVENTORY, undefined);
  const tree = dir.read<pstree_entry>(KINDS.PSTREE);
  checkTree(tree);
  const files = new FileTable(dir.readOptional<file_entry>(KINDS.FILES));
  checkFiles(files);
  // Files the restore recreates (ghosts) or reaches by another name (link remaps) need not be
  // where their name says: the checks below leave their existence to the remap.
  const remapped = files.stateOf("remapped-ids", () => new Set<number>());
  for (const r of dir.readOptional<remap_file_path_entry>(KINDS.REMAP_FPATH)) remapped.add(r.origId);
  // A tree with a mount namespace of its own names files as its restored mount tree shows them,
  // which does not exist yet: their opening tells whether they are there (mntns.ts).
  if (ownMountTree(imagesDir)) files.stateOf("paths-in-own-mntns", () => ({ on: true }));
  // So do external files and files the caller hands in (--inherit-fd): the fd given stands for them.
  for (const id of handedIn(files, services.opts)) remapped.add(id);
  const memfds = dir.readOptional<memfd_inode_entry>(KINDS.MEMFD_INODE);
  const seen: SeenFiles = { mapped: new Set(), epolls: new Set() };
  const tasks = tree.map((e) => loadTask(dir, e, files, memfds, seen));
  checkSharedObjects(dir, tasks);
  // Every kind of file reads (and checks) its own images before anything is created.
  const session: FilesSession = {
    table: files,
    dir,
    ...services,
    frozenUptimeUs: dumpedUptimeUs(inventory),
    runId: inventory.dumpCriuRunId || undefined,
    treeIds: treeIdsAtRestore(dir, tasks[0]?.ids?.userNsId),
  };
  loadFileImages(session);
  return { dir, inventory, tasks, files, session };
}

/**
 * The uptime (µs) at which the dump froze the tree, when the inventory has it: CRIU 4.x writes it
 * only for memory tracking, and an unset field reads as 0, which is no time to reckon from.
 */
export function dumpedUptimeUs(inventory: inventory_entry): bigint | undefined {
  return isFieldSet(inventory, inventory_entrySchema.field.dumpUptime) ? inventory.dumpUptime : undefined;
}
