/**
 * Reading a checkpoint for restore, and refusing it before anything is created when it does not
 * add up: areas that overlap or leave user space, pages outside the areas, a pages image whose
 * size is not what the pagemap says, threads without a core, files that are not in files.img.
 */
import type { pstree_entry } from "../images/gen/pstree_pb.ts";
import type { core_entry, task_kobj_ids_entry } from "../images/gen/core_pb.ts";
import type { mm_entry } from "../images/gen/mm_pb.ts";
import type { pagemap_entry, pagemap_head } from "../images/gen/pagemap_pb.ts";
import type { fs_entry } from "../images/gen/fs_pb.ts";
import type { fdinfo_entry, file_entry } from "../images/gen/fdinfo_pb.ts";
import type { inventory_entry } from "../images/gen/inventory_pb.ts";
import type { tty_info_entry } from "../images/gen/tty_pb.ts";
import { KINDS } from "../images/kinds.ts";
import { ImageDir } from "../images/dir.ts";
import { ImageReader } from "../images/file.ts";
import type { pipe_data_entry } from "../images/gen/pipe-data_pb.ts";
import { FileTable } from "../objects/files.ts";
import { PAGE_SIZE, PE, VMA } from "../objects/memory.ts";
import { RestoreError } from "../errors.ts";
import { TASK_STATE } from "../dump/task.ts";
import type { net_device_entry } from "../images/gen/netdev_pb.ts";
import { readNetns } from "../objects/netns.ts";

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
  zombie: boolean;
  /** A helper: a task that only recreates a process group whose leader had gone. */
  helper: boolean;
}

export interface Checkpoint {
  dir: ImageDir;
  inventory: inventory_entry;
  tasks: RestoreTaskImages[];
  files: FileTable;
  /** The devices of the tree's own network namespace; undefined when it had none. */
  netDevices?: net_device_entry[];
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

function checkPages(pid: number, mm: mm_entry, runs: PageRun[], pagesPath: string): void {
  let total = 0;
  for (const r of runs) {
    const end = r.vaddr + BigInt(r.pages * PAGE_SIZE);
    // A run may cross from one area into the next adjacent one, never into a hole.
    let at = r.vaddr;
    while (at < end) {
      const v = mm.vmas.find((a) => a.start <= at && at < a.end);
      if (!v) bad(`pagemap of process ${pid} has pages at ${hex(at)}, outside every area`);
      if (v.status & VMA.FILE_SHARED) {
        bad(`pagemap of process ${pid} has pages in shared file area ${hex(v.start)}`);
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
    if (e.flags !== undefined && (e.flags & (PE.PARENT | PE.LAZY))) {
      bad(`pagemap-${pid}.img refers to a parent image or lazy pages, which restore does not support yet`);
    }
    const pages = Number(e.nrPages ?? BigInt(e.compatNrPages));
    if (e.vaddr % BigInt(PAGE_SIZE)) bad(`pagemap-${pid}.img has an unaligned address ${hex(e.vaddr)}`);
    return { vaddr: e.vaddr, pages };
  });
  return { runs, pagesPath: dir.pathFor(KINDS.PAGES, head.pagesId) };
}

function loadTask(dir: ImageDir, entry: pstree_entry, files: FileTable): RestoreTaskImages {
  const pid = entry.pid;
  if (entry.threads.length === 0 || entry.threads[0] !== pid && !entry.threads.includes(pid)) {
    bad(`pstree entry of ${pid} does not list the process among its threads`);
  }
  const threads = [pid, ...entry.threads.filter((t) => t !== pid)];
  const cores = threads.map((tid) => {
    const [core] = dir.read<core_entry>(KINDS.CORE, tid);
    if (!core) bad(`core-${tid}.img is empty`);
    return { tid, core };
  });
  const leader = cores[0]!.core;
  if (!leader.tc) bad(`core-${pid}.img has no task part`);
  const zombie = leader.tc.taskState === TASK_STATE.zombie;
  const helper = leader.tc.taskState === TASK_STATE.helper;
  const task: RestoreTaskImages = { entry, hostPid: 0, cores, pages: [], fdinfos: [], zombie, helper };
  if (zombie || helper) return task;
  for (const c of cores) {
    if (!c.core.threadInfo?.gpregs) bad(`core-${c.tid}.img has no registers`);
  }
  const [ids] = dir.read<task_kobj_ids_entry>(KINDS.IDS, pid);
  const [mm] = dir.read<mm_entry>(KINDS.MM, pid);
  if (!ids) bad(`ids-${pid}.img is empty`);
  if (!mm) bad(`mm-${pid}.img is empty`);
  checkAreas(pid, mm);
  const { runs, pagesPath } = loadPagemap(dir, pid);
  checkPages(pid, mm, runs, pagesPath);
  const [fs] = dir.readOptional<fs_entry>(KINDS.FS, pid);
  const fdinfos = dir.readOptional<fdinfo_entry>(KINDS.FDINFO, ids.filesId);
  for (const f of fdinfos) files.get(f.id); // throws for a dangling id
  for (const v of mm.vmas) if (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) files.get(Number(v.shmid));
  files.get(mm.exeFileId);
  Object.assign(task, { ids, mm, pages: runs, pagesPath, fdinfos });
  if (fs) task.fs = fs;
  return task;
}

function readPipeData(dir: ImageDir, files: FileTable): void {
  if (!dir.has(KINDS.PIPES_DATA)) return;
  const r = ImageReader.open(dir.path, KINDS.PIPES_DATA);
  try {
    for (let e = r.readEntry() as pipe_data_entry | null; e; e = r.readEntry() as pipe_data_entry | null) {
      const data = r.readBlob(e.bytes);
      files.pipeData.set(e.pipeId, { data: new Uint8Array(data), capacity: e.size ?? 65536 });
    }
  } finally {
    r.close();
  }
}

export function loadCheckpoint(imagesDir: string): Checkpoint {
  let dir: ImageDir;
  try {
    dir = new ImageDir(imagesDir);
  } catch {
    throw new RestoreError(`Images directory ${imagesDir} does not exist`);
  }
  if (!dir.has(KINDS.INVENTORY)) {
    throw new RestoreError(`${imagesDir} holds no checkpoint (no inventory.img)`);
  }
  const [inventory] = dir.read<inventory_entry>(KINDS.INVENTORY);
  if (!inventory) bad("inventory.img is empty");
  const tree = dir.read<pstree_entry>(KINDS.PSTREE);
  if (tree.length === 0) bad("pstree.img lists no process");
  const files = new FileTable(dir.readOptional<file_entry>(KINDS.FILES));
  for (const t of dir.readOptional<tty_info_entry>(KINDS.TTY_INFO)) files.ttyInfos.push(t);
  readPipeData(dir, files);
  const tasks = tree.map((e) => loadTask(dir, e, files));
  const cp: Checkpoint = { dir, inventory, tasks, files };
  const netDevices = readNetns(dir, tasks[0]!.ids?.netNsId);
  if (netDevices) cp.netDevices = netDevices;
  return cp;
}
