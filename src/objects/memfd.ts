/**
 * memfd fds, as CRIU keeps them: per memfd inode a `memfd_inode_entry` in memfd.img (name, owner,
 * mode, size, seals, and a shmid, the inode number, naming its contents), per open file description
 * a `memfd_file_entry` in files.img (flags, offset, the inode's id). The contents are shared
 * memory pages: pagemap-shmem-SHMID.img listing the page runs that hold data, in a pages image
 * of their own. They are copied by the kernel (sendfile) both ways, holes left as holes.
 *
 * At restore the first task that needs a memfd creates it (memfd_create, size, contents, owner and
 * mode, then seals), and keeps it parked; every fd of it, in any task, is a new open of that
 * memfd through /proc/self/fd with the fd's own flags and offset, as CRIU does.
 *
 * Areas mapping a memfd are mapping_memfd.ts's; the memfd they share with fds is made here.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import {
  memfd_file_entrySchema,
  type memfd_inode_entry,
  memfd_inode_entrySchema,
} from "../images/gen/memfd_pb.ts";
import {
  type pagemap_entry,
  pagemap_entrySchema,
  type pagemap_head,
  pagemap_headSchema,
} from "../images/gen/pagemap_pb.ts";
import {
  addMemfdSeals,
  copyMemfdIn,
  copyMemfdOut,
  F_ADD_SEALS,
  F_SEAL_SEAL,
  memfdSeals,
  MFD,
  type PageRun,
} from "../../ffi/memfd.ts";
import type { MapsEntry } from "../../ffi/proc.ts";
import type { ImageDir } from "../images/dir.ts";
import type { Agent } from "../agent.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import { KINDS } from "../images/kinds.ts";
import { mapFilesPath, PE } from "./memory.ts";
import {
  addFdFile,
  emptyFown,
  type FdKind,
  type FilesSession,
  type FileTable,
  grabFd,
  registerFdKind,
  type RestoreFilesContext,
} from "./files.ts";
import { refuse } from "./refusal.ts";
import { chownAsSaved, ownerInside, type TreeIds } from "./tree_ids.ts";
import { RestoreError } from "../errors.ts";

const MEMFD_LINK = /^\/memfd:(.*?)( \(deleted\))?$/;
/** Flags that only matter at open time and must not be replayed. */
const OPEN_ONLY = O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY | O.CLOEXEC;
const NAME_MAX = 249; // memfd_create's limit, "memfd:" excluded

/** A memfd inode seen at dump: its entry, and where criu can read its contents until the end. */
interface DumpedInode {
  entry: memfd_inode_entry;
  procPath: string;
}

/**
 * The memfds of a dump (by inode number) or of a restore (by inode id). At restore, a memfd that
 * some task maps is made by the first mapping (mapping_memfd.ts, before any fd): `mapped` says
 * where it is (that area's /proc/PID/map_files link), and its seals wait until every task has its
 * areas and fds (F_SEAL_FUTURE_WRITE would forbid a writable shared mapping made after it).
 */
interface Memfds {
  dumped: Map<number, DumpedInode>;
  restored: Map<bigint, memfd_inode_entry>;
  mapped: Map<bigint, string>;
  /** Restore: the tree's view of owners, which the inodes' entries hold (tree_ids.ts). */
  treeIds?: TreeIds | undefined;
}

function memfds(table: FileTable): Memfds {
  return table.stateOf("memfd", () => ({ dumped: new Map(), restored: new Map(), mapped: new Map() }));
}

function dumpInode(
  procPath: string,
  name: string,
  stat: Deno.FileInfo,
  state: Memfds,
): memfd_inode_entry {
  const known = state.dumped.get(stat.ino!);
  if (known) return known.entry;
  const entry = create(memfd_inode_entrySchema, {
    name,
    uid: stat.uid ?? 0,
    gid: stat.gid ?? 0,
    size: BigInt(stat.size),
    shmid: stat.ino!,
    seals: memfdSeals(procPath),
    inodeId: BigInt(state.dumped.size + 1),
    mode: stat.mode ?? 0o100777,
  });
  state.dumped.set(stat.ino!, { entry, procPath });
  return entry;
}

export const memfdKind: FdKind = {
  name: "memfd",
  type: fd_types.MEMFD,
  detect(fd, stat) {
    return MEMFD_LINK.test(fd.target) && stat?.isFile === true;
  },
  dump(ctx, fd, stat) {
    const name = MEMFD_LINK.exec(fd.target)![1]!;
    if (new TextEncoder().encode(name).length > NAME_MAX) {
      refuse(
        ctx.pid,
        `fd ${fd.fd} (${fd.target})`,
        `its name is longer than memfd_create takes (${NAME_MAX} bytes)`,
      );
    }
    const inode = dumpInode(`/proc/${ctx.pid}/fd/${fd.fd}`, name, stat!, memfds(ctx.table));
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.MEMFD,
        id,
        memfd: create(memfd_file_entrySchema, {
          id,
          flags: fd.flags & ~O.CLOEXEC,
          pos: fd.pos,
          fown: emptyFown(),
          inodeId: Number(inode.inodeId),
        }),
      }));
  },
  open(ctx, entry) {
    const m = entry.memfd;
    if (!m) throw new RestoreError(`File ${entry.id} has no memfd data`);
    const key = `memfd:${m.inodeId}`;
    if (!ctx.shared.objects.has(key)) createMemfd(ctx, BigInt(m.inodeId), key);
    const { agent } = ctx;
    const copy = grabFd(ctx, ctx.shared.objects.get(key)![0]!);
    agent.reset();
    const fd = agent.call(
      `open(memfd ${m.inodeId})`,
      NR.open,
      agent.string(`/proc/self/fd/${copy}`),
      m.flags & ~OPEN_ONLY,
      0,
    );
    agent.later("close(memfd copy)", NR.close, copy);
    if (m.pos !== 0n) agent.later(`lseek(memfd ${m.inodeId})`, NR.lseek, fd, m.pos, 0);
    return Number(fd);
  },
  // CRIU's name for --inherit-fd: /memfd:NAME; the caller's fd is then used as it is.
  inheritName(entry, table) {
    const inode = entry.memfd && memfds(table).restored.get(BigInt(entry.memfd.inodeId));
    return inode ? `/memfd:${inode.name}` : undefined;
  },
  finishDump(session) {
    writeInodes(session);
  },
  loadImages(session) {
    const state = memfds(session.table);
    state.treeIds = session.treeIds;
    for (const e of session.dir.readOptional<memfd_inode_entry>(KINDS.MEMFD_INODE)) {
      state.restored.set(e.inodeId, e);
    }
  },
  // The seals of mapped memfds, now that every area and fd of every task is there.
  afterAllFds(session) {
    const state = memfds(session.table);
    for (const [inodeId, path] of state.mapped) {
      const inode = state.restored.get(inodeId)!;
      if (inode.seals !== F_SEAL_SEAL && inode.seals !== 0) addMemfdSeals(path, inode.seals);
    }
  },
};

/** A memfd area as /proc/PID/maps names it: its memfd's name. */
const MEMFD_AREA = /^\/memfd:(.*) \(deleted\)$/;

/** Is this area of /proc/PID/maps a memfd's? */
export function isMemfdArea(m: MapsEntry): boolean {
  return m.inode !== 0 && MEMFD_AREA.test(m.path);
}

/**
 * The files.img entry of the memfd behind an area (dump), with its inode in memfd.img (its
 * contents read through /proc/PID/map_files while the tree is frozen); returns the entry's id.
 * One entry per memfd and access mode, as CRIU makes one per mapping's open file.
 */
export function addMappedMemfd(table: FileTable, pid: number, m: MapsEntry, fdflags: number): number {
  const procPath = mapFilesPath(pid, m);
  const stat = Deno.statSync(procPath);
  const inode = dumpInode(procPath, MEMFD_AREA.exec(m.path)![1]!, stat, memfds(table));
  return table.add(`memfd-map:${stat.ino}:${fdflags}`, (id) =>
    create(file_entrySchema, {
      type: fd_types.MEMFD,
      id,
      memfd: create(memfd_file_entrySchema, {
        id,
        flags: fdflags,
        pos: 0n,
        fown: emptyFown(),
        inodeId: Number(inode.inodeId),
      }),
    }));
}

/** The memfd inode a files.img entry names, for a restore. */
export function memfdInodeOf(table: FileTable, fileId: number): memfd_inode_entry {
  const inodeId = table.get(fileId).memfd?.inodeId;
  const inode = inodeId === undefined ? undefined : memfds(table).restored.get(BigInt(inodeId));
  if (!inode) {
    throw new RestoreError(`Refusing the images: file ${fileId} of files.img is no memfd of memfd.img`);
  }
  return inode;
}

/**
 * An fd of the memfd that area `e` maps, in the task `agent` drives, to map it from: the first
 * area of a memfd creates it (contents, owner, mode; seals come after every area), later ones
 * open it again through that area's /proc/PID/map_files link with `flags`.
 */
export function openMappedMemfd(
  agent: Agent,
  table: FileTable,
  dir: ImageDir,
  inode: memfd_inode_entry,
  e: { start: bigint; end: bigint },
  flags: number,
): bigint {
  const state = memfds(table);
  const known = state.mapped.get(inode.inodeId);
  agent.reset();
  if (known) return agent.call(`open(${known})`, NR.open, agent.string(known), flags | O.CLOEXEC, 0);
  const fd = makeMemfd(agent, inode, dir, state.treeIds);
  state.mapped.set(inode.inodeId, mapFilesPath(agent.pid, e));
  return BigInt(fd);
}

/** memfd_create in the task, then its size, contents (copied by criu through /proc), owner and mode. */
function makeMemfd(
  agent: Agent,
  inode: memfd_inode_entry,
  dir: ImageDir,
  treeIds: TreeIds | undefined,
): number {
  if ((inode.hugetlbFlag ?? 0) & MFD.HUGETLB) {
    throw new RestoreError(`Memfd ${inode.name} is backed by huge pages: not supported yet`);
  }
  agent.reset();
  const sealable = inode.seals !== F_SEAL_SEAL;
  const fd = Number(agent.call(
    `memfd_create(${inode.name})`,
    NR.memfd_create,
    agent.string(inode.name),
    (sealable ? MFD.ALLOW_SEALING : 0) | MFD.CLOEXEC,
  ));
  agent.call(`ftruncate(memfd ${inode.name})`, NR.ftruncate, fd, inode.size);
  copyMemfdIn(`/proc/${agent.pid}/fd/${fd}`, ...contentsOf(dir, inode));
  // criu sets the owner (through the maps): the task may not be in its user namespace yet.
  chownAsSaved(`/proc/${agent.pid}/fd/${fd}`, treeIds, inode.uid, inode.gid);
  if (inode.mode !== undefined) {
    agent.later(`fchmod(memfd ${inode.name})`, NR.fchmod, fd, inode.mode & 0o7777);
  }
  agent.settle();
  return fd;
}

/**
 * memfd.img, and each memfd's contents in a pages image of its own, numbered after those the
 * tasks' memory took (this runs once every task is dumped, the tree still frozen).
 */
function writeInodes(session: FilesSession): void {
  const { dumped } = memfds(session.table);
  if (dumped.size === 0) return;
  let pagesId = lastPagesId(session.dir.path);
  for (const { entry, procPath } of dumped.values()) {
    pagesId += 1;
    const pagesPath = session.dir.pathFor(KINDS.PAGES, pagesId);
    session.dir.noteWritten(pagesPath);
    const runs = copyMemfdOut(procPath, Number(entry.size), pagesPath);
    session.dir.write(KINDS.SHMEM_PAGEMAP, entry.shmid, [
      create(pagemap_headSchema, { pagesId }),
      ...runs.map((r) =>
        create(pagemap_entrySchema, {
          vaddr: BigInt(r.offset),
          compatNrPages: r.pages,
          nrPages: BigInt(r.pages),
          flags: PE.PRESENT,
        })
      ),
    ]);
  }
  // Owners as the tree sees them, known here where the session is (an area's memfd has none).
  const entries = [...dumped.values()].map((d) =>
    Object.assign(d.entry, ownerInside(session.treeIds, d.entry.uid, d.entry.gid))
  );
  session.dir.write(KINDS.MEMFD_INODE, undefined, entries);
}

function lastPagesId(dir: string): number {
  let last = 0;
  for (const f of Deno.readDirSync(dir)) {
    const m = /^pages-(\d+)\.img$/.exec(f.name);
    if (m) last = Math.max(last, Number(m[1]));
  }
  return last;
}

/**
 * Makes memfd `inodeId` open in the context's task, parked: a new open of it through an area's
 * /proc link when a task maps it (its seals come once every task has its fds, afterAllFds),
 * else made here (memfd_create, contents, owner, mode), then sealed, last, since a write seal
 * would stop the rest.
 */
function createMemfd(ctx: RestoreFilesContext, inodeId: bigint, key: string): void {
  const state = memfds(ctx.table);
  const inode = state.restored.get(inodeId);
  if (!inode) throw new RestoreError(`Refusing the images: memfd.img has no memfd inode ${inodeId}`);
  const { agent } = ctx;
  const mapped = state.mapped.get(inodeId);
  if (mapped) {
    agent.reset();
    const fd = ctx.park(
      Number(agent.call(`open(${mapped})`, NR.open, agent.string(mapped), O.RDWR | O.CLOEXEC, 0)),
    );
    ctx.shared.objects.set(key, [{ pid: ctx.nsPid, fd }]);
    return;
  }
  const fd = ctx.park(makeMemfd(agent, inode, ctx.session.dir, ctx.session.treeIds));
  if (inode.seals !== F_SEAL_SEAL && inode.seals !== 0) {
    agent.call(`fcntl(F_ADD_SEALS, ${inode.name})`, NR.fcntl, fd, F_ADD_SEALS, inode.seals);
  }
  ctx.shared.objects.set(key, [{ pid: ctx.nsPid, fd }]);
}

/** Where a memfd's contents are: the pages image, its runs, and the size they may fill. */
function contentsOf(dir: ImageDir, inode: memfd_inode_entry): [string, PageRun[], number] {
  const size = Number(inode.size);
  if (!dir.has(KINDS.SHMEM_PAGEMAP, inode.shmid)) return ["/dev/null", [], size];
  const [head, ...entries] = dir.read<pagemap_head | pagemap_entry>(KINDS.SHMEM_PAGEMAP, inode.shmid);
  if (!head || !("pagesId" in head)) {
    throw new RestoreError(`Refusing the images: pagemap-shmem-${inode.shmid}.img has no header`);
  }
  const runs = (entries as pagemap_entry[]).map((e) => ({
    offset: Number(e.vaddr),
    pages: Number(e.nrPages ?? BigInt(e.compatNrPages)),
  }));
  return [dir.pathFor(KINDS.PAGES, head.pagesId), runs, size];
}

registerFdKind(memfdKind);
