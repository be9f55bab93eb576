/**
 * Reading a checkpoint for restore, and refusing it before anything is created when it does not
 * add up: areas that overlap or leave user space, pages outside the areas, a pages image whose
 * size is not what the pagemap says, threads without a core, files that are not in files.img.
 */
import type { pstree_entry } from "../images/gen/pstree_pb.ts";
import type { core_entry, task_kobj_ids_entry } from "../images/gen/core_pb.ts";
import type { mm_entry } from "../images/gen/mm_pb.ts";
import type { vma_entry } from "../images/gen/vma_pb.ts";
import type { pagemap_entry, pagemap_head } from "../images/gen/pagemap_pb.ts";
import type { fs_entry } from "../images/gen/fs_pb.ts";
import type { fdinfo_entry, file_entry } from "../images/gen/fdinfo_pb.ts";
import type { inventory_entry } from "../images/gen/inventory_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { memfd_inode_entry } from "../images/gen/memfd_pb.ts";
import { MAP } from "../../ffi/syscalls.ts";
import { unusableDirectory } from "../dirs.ts";
import { ImageDir } from "../images/dir.ts";
import { checkRestorable, FileTable } from "../objects/files.ts";
import { PAGE_SIZE, PE, VMA } from "../objects/memory.ts";
import { backingOf } from "../objects/mappings.ts";
import "../objects/mod.ts";
import { RestoreError } from "../errors.ts";
import { OLD_TASK_STATE, TASK_STATE } from "../dump/task.ts";

/** Highest user-space address on x86_64 with 4-level paging (47 bits). */
const USER_SPACE_END = 1n << 47n;

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
}

function bad(what: string): never {
  throw new RestoreError(`Refusing the images: ${what}`);
}

function hex(x: bigint): string {
  return "0x" + x.toString(16);
}

function checkAreas(pid: number, mm: mm_entry): void {
  let prevEnd = 0n;
  for (const v of mm.vmas) {
    const where = `process ${pid}, area ${hex(v.start)}-${hex(v.end)}`;
    if (v.start % BigInt(PAGE_SIZE) || v.end % BigInt(PAGE_SIZE)) bad(`${where} is not page aligned`);
    if (v.end <= v.start) bad(`${where} ends before it starts`);
    if (v.end > USER_SPACE_END) bad(`${where} leaves user space`);
    if (v.start < prevEnd) bad(`${where} overlaps the area before it`);
    prevEnd = v.end;
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

function checkPages(pid: number, mm: mm_entry, runs: PageRun[], pagesPath: string): void {
  let total = 0;
  for (const r of runs) {
    const end = r.vaddr + BigInt(r.pages * PAGE_SIZE);
    // A run may cross from one area into the next adjacent one, never into a hole.
    let at = r.vaddr;
    while (at < end) {
      const v = areaAt(mm.vmas, at);
      if (!v) bad(`pagemap of process ${pid} has pages at ${hex(at)}, outside every area`);
      if (backingOf(v)?.ownPages(v) === "none") {
        bad(
          `pagemap of process ${pid} has pages in area ${hex(v.start)}, whose pages its ${
            backingOf(v)!.name
          } holds`,
        );
      }
      at = v.end < end ? v.end : end;
    }
    total += r.pages;
  }
  let size: number;
  try {
    size = Deno.statSync(pagesPath).size;
  } catch {
    return bad(`${pagesPath} is missing`);
  }
  if (size !== total * PAGE_SIZE) {
    bad(
      `${pagesPath} holds ${size} bytes but the pagemap of process ${pid} lists ${total} pages (${
        total * PAGE_SIZE
      } bytes)`,
    );
  }
}

function loadPagemap(dir: ImageDir, pid: number): { runs: PageRun[]; pagesPath: string } {
  const [head, ...entries] = dir.read<pagemap_head | pagemap_entry>(KINDS.PAGEMAP, pid);
  if (!head || !("pagesId" in head)) bad(`pagemap-${pid}.img has no header`);
  const runs = (entries as pagemap_entry[]).map((e) => {
    // CRIU marks anonymous pages PE_LAZY as well when they are in the pages image (PE_PRESENT);
    // only pages kept elsewhere (a parent image, a lazy-pages server) are out of reach.
    if (e.flags !== undefined && (e.flags & PE.PARENT || !(e.flags & PE.PRESENT))) {
      bad(`pagemap-${pid}.img refers to a parent image or lazy pages, which restore does not support yet`);
    }
    const pages = Number(e.nrPages ?? BigInt(e.compatNrPages));
    if (e.vaddr % BigInt(PAGE_SIZE)) bad(`pagemap-${pid}.img has an unaligned address ${hex(e.vaddr)}`);
    return { vaddr: e.vaddr, pages };
  });
  return { runs, pagesPath: dir.pathFor(KINDS.PAGES, head.pagesId) };
}

/**
 * CRIU 4.x, on kernels where shared anonymous memory looks like a memfd, records it as a memfd
 * named "/dev/zero" whose inode's shmid names its contents (pagemap-shmem-SHMID.img). It is plain
 * shared anonymous memory, and comes back as such; other memfd mappings are not supported yet.
 */
function sharedAnonFromMemfd(
  pid: number,
  mm: mm_entry,
  files: FileTable,
  inodes: readonly memfd_inode_entry[],
) {
  for (const v of mm.vmas) {
    if (!(v.status & VMA.MEMFD)) continue;
    const inodeId = files.get(Number(v.shmid)).memfd?.inodeId;
    const inode = inodes.find((i) => i.inodeId === BigInt(inodeId ?? -1));
    if (inode?.name !== "/dev/zero") {
      throw new RestoreError(
        `Process ${pid} maps memfd ${inode?.name ?? `file ${v.shmid}`} at ${
          hex(v.start)
        }: memfd mappings are not supported yet`,
      );
    }
    v.status = (v.status & ~(VMA.MEMFD | VMA.FILE_SHARED)) | VMA.ANON_SHARED;
    v.flags |= MAP.ANONYMOUS;
    v.shmid = BigInt(inode.shmid);
  }
}

function readCore(dir: ImageDir, tid: number): core_entry {
  const [core] = dir.read<core_entry>(KINDS.CORE, tid);
  if (!core) bad(`core-${tid}.img is empty`);
  return core;
}

function loadTask(
  dir: ImageDir,
  entry: pstree_entry,
  files: FileTable,
  memfds: readonly memfd_inode_entry[],
  checkedFiles: Set<number>,
): RestoreTaskImages {
  const pid = entry.pid;
  const leader = readCore(dir, pid);
  if (!leader.tc) bad(`core-${pid}.img has no task part`);
  const state = leader.tc.taskState;
  const zombie = state === TASK_STATE.dead || state === OLD_TASK_STATE.zombie;
  const helper = state === OLD_TASK_STATE.helper;
  // CRIU lists a zombie's threads as [0]: it has none left.
  if (zombie || helper) {
    return { entry, hostPid: 0, cores: [{ tid: pid, core: leader }], pages: [], fdinfos: [], zombie, helper };
  }
  if (!entry.threads.includes(pid)) bad(`pstree entry of ${pid} does not list the process among its threads`);
  const cores = [
    { tid: pid, core: leader },
    ...entry.threads.filter((t) => t !== pid).map((tid) => ({ tid, core: readCore(dir, tid) })),
  ];
  const task: RestoreTaskImages = { entry, hostPid: 0, cores, pages: [], fdinfos: [], zombie, helper };
  for (const c of cores) {
    if (!c.core.threadInfo?.gpregs) bad(`core-${c.tid}.img has no registers`);
  }
  const [ids] = dir.read<task_kobj_ids_entry>(KINDS.IDS, pid);
  const [mm] = dir.read<mm_entry>(KINDS.MM, pid);
  if (!ids) bad(`ids-${pid}.img is empty`);
  if (!mm) bad(`mm-${pid}.img is empty`);
  // CRIU records the vsyscall page; the kernel maps it in every process, so nothing restores it.
  mm.vmas = mm.vmas.filter((v) => !(v.status & VMA.VSYSCALL));
  // Guard ranges lie inside the areas: they are kept apart, to be installed once those are in.
  const guards = mm.vmas.filter((v) => v.status === VMA.GUARD);
  mm.vmas = mm.vmas.filter((v) => v.status !== VMA.GUARD);
  for (const g of guards) checkGuard(pid, mm, g);
  sharedAnonFromMemfd(pid, mm, files, memfds);
  checkAreas(pid, mm);
  const { runs, pagesPath } = loadPagemap(dir, pid);
  checkPages(pid, mm, runs, pagesPath);
  const [fs] = dir.readOptional<fs_entry>(KINDS.FS, pid);
  const fdinfos = dir.readOptional<fdinfo_entry>(KINDS.FDINFO, ids.filesId);
  checkRestorable(files, fdinfos); // a dangling id, or a kind of file no module restores
  for (const v of mm.vmas) backingOf(v)?.check?.(pid, v, files, checkedFiles);
  files.get(mm.exeFileId);
  Object.assign(task, { ids, mm, pages: runs, pagesPath, fdinfos, guards });
  if (fs) task.fs = fs;
  return task;
}

export function loadCheckpoint(imagesDir: string): Checkpoint {
  const unusable = unusableDirectory("images directory", imagesDir);
  if (unusable !== undefined) throw new RestoreError(unusable);
  const dir = new ImageDir(imagesDir);
  if (!dir.has(KINDS.INVENTORY)) {
    throw new RestoreError(`${imagesDir} holds no checkpoint (no inventory.img)`);
  }
  const [inventory] = dir.read<inventory_entry>(KINDS.INVENTORY);
  if (!inventory) bad("inventory.img is empty");
  const tree = dir.read<pstree_entry>(KINDS.PSTREE);
  if (tree.length === 0) bad("pstree.img lists no process");
  const files = new FileTable(dir.readOptional<file_entry>(KINDS.FILES));
  const memfds = dir.readOptional<memfd_inode_entry>(KINDS.MEMFD_INODE);
  const checkedFiles = new Set<number>();
  const tasks = tree.map((e) => loadTask(dir, e, files, memfds, checkedFiles));
  return { dir, inventory, tasks, files };
}
