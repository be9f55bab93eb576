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
 * Mappings of memfds are the memory side's (memory.ts); only the fds are here.
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
import { copyMemfdIn, copyMemfdOut, memfdSeals, type PageRun } from "../../ffi/memfd.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import { KINDS } from "../images/kinds.ts";
import { PE } from "./memory.ts";
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
import { RestoreError } from "../errors.ts";

const MEMFD_LINK = /^\/memfd:(.*?)( \(deleted\))?$/;
const MFD_ALLOW_SEALING = 2;
const MFD_HUGETLB = 4;
const F_SEAL_SEAL = 1;
const F_ADD_SEALS = 1033;
/** Flags that only matter at open time and must not be replayed. */
const OPEN_ONLY = O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY | O.CLOEXEC;
const NAME_MAX = 249; // memfd_create's limit, "memfd:" excluded

/** A memfd inode seen at dump: its entry, and where criu can read its contents until the end. */
interface DumpedInode {
  entry: memfd_inode_entry;
  procPath: string;
}

/** The memfds of a dump (by inode number) or of a restore (by inode id). */
interface Memfds {
  dumped: Map<number, DumpedInode>;
  restored: Map<bigint, memfd_inode_entry>;
}

function memfds(table: FileTable): Memfds {
  return table.stateOf("memfd", () => ({ dumped: new Map(), restored: new Map() }));
}

function dumpInode(
  pid: number,
  fd: number,
  name: string,
  stat: Deno.FileInfo,
  state: Memfds,
): memfd_inode_entry {
  const known = state.dumped.get(stat.ino!);
  if (known) return known.entry;
  const procPath = `/proc/${pid}/fd/${fd}`;
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
    const inode = dumpInode(ctx.pid, fd.fd, name, stat!, memfds(ctx.table));
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
    for (const e of session.dir.readOptional<memfd_inode_entry>(KINDS.MEMFD_INODE)) {
      state.restored.set(e.inodeId, e);
    }
  },
};

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
  session.dir.write(KINDS.MEMFD_INODE, undefined, [...dumped.values()].map((d) => d.entry));
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
 * Creates memfd `inodeId` in the context's task, parked: its size, contents (copied in by criu
 * through /proc), owner and mode, then its seals, last since a write seal would stop the rest.
 */
function createMemfd(ctx: RestoreFilesContext, inodeId: bigint, key: string): void {
  const inode = memfds(ctx.table).restored.get(inodeId);
  if (!inode) throw new RestoreError(`Refusing the images: memfd.img has no memfd inode ${inodeId}`);
  if ((inode.hugetlbFlag ?? 0) & MFD_HUGETLB) {
    throw new RestoreError(`Memfd ${inode.name} is backed by huge pages: not supported yet`);
  }
  const { agent } = ctx;
  agent.reset();
  const sealable = inode.seals !== F_SEAL_SEAL;
  const made = agent.call(
    `memfd_create(${inode.name})`,
    NR.memfd_create,
    agent.string(inode.name),
    sealable ? MFD_ALLOW_SEALING : 0,
  );
  const fd = ctx.park(Number(made));
  agent.call(`ftruncate(memfd ${inode.name})`, NR.ftruncate, fd, inode.size);
  copyMemfdIn(`/proc/${agent.pid}/fd/${fd}`, ...contentsOf(ctx.session, inode));
  agent.later(`fchown(memfd ${inode.name})`, NR.fchown, fd, inode.uid, inode.gid);
  if (inode.mode !== undefined) {
    agent.later(`fchmod(memfd ${inode.name})`, NR.fchmod, fd, inode.mode & 0o7777);
  }
  if (sealable && inode.seals !== 0) {
    agent.later(`fcntl(F_ADD_SEALS, ${inode.name})`, NR.fcntl, fd, F_ADD_SEALS, inode.seals);
  }
  agent.settle();
  ctx.shared.objects.set(key, [{ pid: ctx.nsPid, fd }]);
}

/** Where a memfd's contents are: the pages image, its runs, and the size they may fill. */
function contentsOf(session: FilesSession, inode: memfd_inode_entry): [string, PageRun[], number] {
  const size = Number(inode.size);
  if (!session.dir.has(KINDS.SHMEM_PAGEMAP, inode.shmid)) return ["/dev/null", [], size];
  const [head, ...entries] = session.dir.read<pagemap_head | pagemap_entry>(KINDS.SHMEM_PAGEMAP, inode.shmid);
  if (!head || !("pagesId" in head)) {
    throw new RestoreError(`Refusing the images: pagemap-shmem-${inode.shmid}.img has no header`);
  }
  const runs = (entries as pagemap_entry[]).map((e) => ({
    offset: Number(e.vaddr),
    pages: Number(e.nrPages ?? BigInt(e.compatNrPages)),
  }));
  return [session.dir.pathFor(KINDS.PAGES, head.pagesId), runs, size];
}

registerFdKind(memfdKind);
