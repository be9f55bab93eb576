/**
 * Files whose name is gone, as CRIU carries them (remap-fpath.img): the regular-file entry keeps
 * the old name and a remap entry says how to reach the file at restore.
 *   - GHOST: nothing names the file any more (st_nlink 0). Its contents go into ghost-file-ID.img
 *     (a ghost_file_entry, then ghost_chunk_entry + bytes per data range so holes stay holes, or
 *     the raw bytes for a small file), up to --ghost-limit bytes on disk. The restore recreates it
 *     as NAME.cr.ID.ghost, opens it, and unlinks it at the end. Removed directories (an fd, a
 *     working or root directory) are ghosts too: made again with mkdir, removed with rmdir.
 *   - LINKED (--link-remap): another hard link remains. The dump gives the file a temporary name,
 *     link_remap.ID in the same directory (linkat of /proc/PID/fd/N), recorded as a file entry of
 *     its own; the restore opens the file through it and removes it. A failed dump removes it.
 *   - Devices (--evasive-devices): a character or block device whose node is gone is reopened by
 *     any node under /dev of the same device number. Not a remap entry: the file entry names that
 *     node, as CRIU does for a device path that leads to another node of the same device.
 * All bytes move in the kernel (copy_file_range/sendfile with SEEK_DATA/SEEK_HOLE), never through
 * the JS heap.
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import { compact } from "../compact.ts";
import { fd_types, type file_entry, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { reg_file_entrySchema } from "../images/gen/regfile_pb.ts";
import {
  ghost_chunk_entrySchema,
  type ghost_file_entry,
  ghost_file_entrySchema,
} from "../images/gen/ghost-file_pb.ts";
import {
  type remap_file_path_entry,
  remap_file_path_entrySchema,
  remap_type,
} from "../images/gen/remap-file-path_pb.ts";
import { timevalSchema } from "../images/gen/time_pb.ts";
import { KINDS } from "../images/kinds.ts";
import { ImageReader, ImageWriter } from "../images/file.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import { closeFd, dataRanges, OPEN, openFd, pathExists, preadFull } from "../../ffi/fd.ts";
import {
  copyRange,
  linkOpenFile,
  makeFifo,
  makeNode,
  RawFdSink,
  symlinkTargetOf,
  truncateFd,
} from "../../ffi/files.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { O, S } from "../../ffi/syscalls.ts";
import { type DumpFilesContext, emptyFown, type FilesSession, type FileTable } from "./files.ts";
import { refuse } from "./refusal.ts";
import { mountIdToSave } from "./regfile.ts";
import { chownAsSaved, ownerInside, type TreeIds } from "./tree_ids.ts";
import { RestoreError } from "../errors.ts";

const DELETED = " (deleted)";
/** CRIU stores files from this size on in chunks (GHOST_CHUNKS_THRESH), smaller ones raw. */
const GHOST_CHUNKS_THRESH = 3 * 4096;
/** --ghost-limit counts what the file holds on disk: st_blocks in 512-byte units. */
const ST_UNIT = 512;
const { IFMT: S_IFMT, IFDIR: S_IFDIR, IFREG: S_IFREG, IFIFO: S_IFIFO, IFLNK: S_IFLNK } = S;
/** What a ghost can be, as CRIU carries them: contents for a regular file, a target for a symlink. */
const GHOST_KINDS: ReadonlySet<number> = new Set([S_IFREG, S_IFDIR, S_IFIFO, S_IFLNK]);
/** The device nodes a ghost may be made as by mknod (CRIU 4.x carries removed ones): character, block. */
const DEVICE_NODE_TYPES: readonly number[] = [S.IFCHR, S.IFBLK];
const OPEN_EXCL = 0o200;

/** A ghost to write at the end of the dump: where its contents can still be read. */
interface PendingGhost {
  id: number;
  source: string;
  entry: ghost_file_entry;
}

/** Tree-wide state: what the dump collects, what the restore made. */
interface RemapState {
  remaps: remap_file_path_entry[];
  ghostByInode: Map<string, number>;
  ghosts: PendingGhost[];
  /** Restore: the remap of each file id, the images directory, and what to remove at the end. */
  byFile: Map<number, remap_file_path_entry>;
  imagesPath: string;
  /** The tree's view of owners, which the ghosts' images hold (tree_ids.ts). */
  treeIds?: TreeIds | undefined;
  /** Ghosts made, by id: their path as the tasks see it, and as criu reaches it (`at`). */
  madeGhosts: Map<number, { path: string; at: string; dir: boolean }>;
  /** Link remaps to remove once every task has its files, as criu reaches them. */
  links: Set<string>;
  /**
   * Files linked back under their own name for the open (name -> what it links to), removed at
   * the end; the name as criu reaches it.
   */
  ownNames: Map<string, string>;
  /** A tree with a mount tree of its own: criu's fd of each mount namespace's root (by its link). */
  roots: Map<string, number>;
}

function remapState(table: FileTable): RemapState {
  return table.stateOf("remap", () => ({
    remaps: [],
    ghostByInode: new Map(),
    ghosts: [],
    byFile: new Map(),
    imagesPath: "",
    madeGhosts: new Map(),
    links: new Set(),
    ownNames: new Map(),
    roots: new Map(),
  }));
}

/** What the dump side needs: a task, the tree-wide table and the session (options, images). */
type Dumper = Pick<DumpFilesContext, "pid" | "table" | "session" | "log">;

/** Is this open file's name gone (the kernel says "(deleted)" and the name leads elsewhere)? */
export function nameIsGone(target: string, stat: Deno.FileInfo | null): boolean {
  if (!target.endsWith(DELETED)) return false;
  try {
    const now = Deno.statSync(target); // a file really named "x (deleted)"
    return now.ino !== stat?.ino || now.dev !== stat?.dev;
  } catch {
    return true;
  }
}

export function isDevice(stat: Deno.FileInfo | null): boolean {
  return stat?.isCharDevice === true || stat?.isBlockDevice === true;
}

function withoutDeleted(target: string): string {
  return target.endsWith(DELETED) ? target.slice(0, -DELETED.length) : target;
}

/**
 * `mntId`: the mount the file was opened through, for a tree with a mount namespace of its own
 * (CRIU's restore makes the ghost or finds the link in that mount).
 */
function regEntry(id: number, name: string, flags: number, pos: bigint, mntId?: number): file_entry {
  return create(file_entrySchema, {
    type: fd_types.REG,
    id,
    reg: create(reg_file_entrySchema, {
      id,
      flags: flags & ~O.CLOEXEC,
      pos,
      fown: emptyFown(),
      name,
      ...(mntId !== undefined ? { mntId } : {}),
    }),
  });
}

/**
 * The file entry of an fd whose name is gone: a ghost, a link remap or another node of the same
 * device, or a refusal naming the file and the option that would carry it.
 */
export function dumpRemappedFd(ctx: DumpFilesContext, fd: FdEntry, stat: Deno.FileInfo): number {
  const name = withoutDeleted(fd.target);
  const what = `${isDevice(stat) ? "device" : "file"} ${name} (fd ${fd.fd})`;
  if (isDevice(stat)) {
    if (!ctx.session.opts.evasiveDevices) {
      refuse(ctx.pid, what, "the node it was opened through is gone. Use --evasive-devices option");
    }
    // As CRIU: the same name is kept when it now leads to another node of the same device.
    const other = sameDevice(name, stat) ? name : nodeOfDevice(stat);
    if (!other) refuse(ctx.pid, what, `no node under /dev is device ${deviceName(stat.rdev ?? 0)}`);
    ctx.log.info(`fd ${fd.fd}: device ${name} reopened as ${other}`);
    return ctx.table.add(`fd:${ctx.pid}:${fd.fd}`, (id) => regEntry(id, other, fd.flags, fd.pos));
  }
  const source = `/proc/${ctx.pid}/fd/${fd.fd}`;
  const key = `fd:${ctx.pid}:${fd.fd}`;
  const mntId = mountIdToSave(ctx.table, ctx.pid, fd.mntId);
  if ((stat.nlink ?? 0) === 0) return addGhost(ctx, what, name, source, stat, fd.flags, fd.pos, key, mntId);
  return addLinkRemap(ctx, source, key, what, name, fd.flags, fd.pos, mntId);
}

/**
 * The path entry of a FIFO fd whose name is gone (fifo.ts keeps it as the FIFO's regf_id): a ghost
 * FIFO made again with mknod, or a link remap when another name remains.
 */
export function addRemovedFifo(ctx: DumpFilesContext, fd: FdEntry, stat: Deno.FileInfo, key: string): number {
  const name = withoutDeleted(fd.target);
  const what = `FIFO ${name} (fd ${fd.fd})`;
  const source = `/proc/${ctx.pid}/fd/${fd.fd}`;
  const mntId = mountIdToSave(ctx.table, ctx.pid, fd.mntId);
  if ((stat.nlink ?? 0) === 0) return addGhost(ctx, what, name, source, stat, fd.flags, 0n, key, mntId);
  return addLinkRemap(ctx, source, key, what, name, fd.flags, 0n, mntId);
}

/**
 * The file entry of a mapping of a file whose name is gone (" (deleted)" in /proc/PID/maps),
 * reached through /proc/PID/map_files: a ghost or a link remap, as for an fd. For the mappings'
 * own registry (memory.ts); the restore opens it through pathToOpen().
 */
export function addRemovedMapping(
  session: FilesSession,
  pid: number,
  area: { start: bigint; end: bigint; path: string },
  flags: number,
): number {
  const ctx: Dumper = { pid, table: session.table, session, log: session.log };
  const source = `/proc/${pid}/map_files/${area.start.toString(16)}-${area.end.toString(16)}`;
  const name = withoutDeleted(area.path);
  const what = `mapped file ${name} (at 0x${area.start.toString(16)})`;
  const stat = Deno.statSync(source);
  if ((stat.nlink ?? 0) === 0) {
    return addGhost(ctx, what, name, source, stat, flags, 0n, `ghost:${stat.dev}:${stat.ino}:${flags}`);
  }
  return addLinkRemap(ctx, source, `map:${stat.dev}:${stat.ino}:${flags}`, what, name, flags, 0n);
}

/** The file entry of a task's executable that was removed (/proc/PID/exe): a ghost or a link remap. */
export function addRemovedExe(session: FilesSession, pid: number, exe: string): number {
  const ctx: Dumper = { pid, table: session.table, session, log: session.log };
  const source = `/proc/${pid}/exe`;
  const name = withoutDeleted(exe);
  const what = `executable ${name}`;
  const stat = Deno.statSync(source);
  const key = `${stat.dev}:${stat.ino}:${O.RDONLY}`;
  if ((stat.nlink ?? 0) === 0) return addGhost(ctx, what, name, source, stat, O.RDONLY, 0n, `ghost:${key}`);
  return addLinkRemap(ctx, source, `map:${key}`, what, name, O.RDONLY, 0n);
}

/**
 * The file entry of a working or root directory that was removed: a ghost directory, as CRIU
 * does (the dump of `/proc/PID/cwd` or `/proc/PID/root`).
 */
export function addRemovedDirectory(ctx: Dumper, which: "cwd" | "root", path: string): number {
  const source = `/proc/${ctx.pid}/${which}`;
  const stat = Deno.statSync(source);
  const what = `${which === "cwd" ? "working" : "root"} directory ${withoutDeleted(path)}`;
  if ((stat.nlink ?? 0) !== 0) {
    refuse(ctx.pid, what, "it was moved away, and only removed directories are carried");
  }
  return addGhost(ctx, what, withoutDeleted(path), source, stat, O.RDONLY | O.DIRECTORY, 0n);
}

function addGhost(
  ctx: Dumper,
  what: string,
  name: string,
  source: string,
  stat: Deno.FileInfo,
  flags: number,
  pos: bigint,
  key = `ghost:${ctx.pid}:${source}`,
  mntId?: number,
): number {
  const mode = stat.mode ?? 0;
  if (!GHOST_KINDS.has(mode & S_IFMT)) {
    refuse(
      ctx.pid,
      what,
      "it was removed, and only removed regular files, directories, FIFOs and symlinks are carried",
    );
  }
  const onDisk = (stat.blocks ?? 0) * ST_UNIT;
  const limit = ctx.session.opts.ghostLimit;
  if (onDisk > limit) {
    refuse(
      ctx.pid,
      what,
      `it was removed and holds ${onDisk} bytes on disk, more than the ghost limit of ${limit}; increase --ghost-limit`,
    );
  }
  const state = remapState(ctx.table);
  const inode = `${stat.dev}:${stat.ino}`;
  let ghostId = state.ghostByInode.get(inode);
  if (ghostId === undefined) {
    ghostId = state.ghostByInode.size + 1;
    state.ghostByInode.set(inode, ghostId);
    state.ghosts.push({ id: ghostId, source, entry: ghostEntry(stat, source, ctx.session.treeIds) });
  }
  const known = ctx.table.nextId();
  const id = ctx.table.add(key, (id) => regEntry(id, name, flags, pos, mntId));
  if (id !== known) return id; // a second mapping of the same file: one entry, one remap
  state.remaps.push(
    create(remap_file_path_entrySchema, { origId: id, remapId: ghostId, remapType: remap_type.GHOST }),
  );
  ctx.log.info(`${what}: ghost ${ghostId}`);
  return id;
}

function timeval(t: Date | null) {
  const ms = t?.getTime() ?? 0;
  return create(timevalSchema, { tvSec: BigInt(Math.floor(ms / 1000)), tvUsec: BigInt((ms % 1000) * 1000) });
}

function ghostEntry(stat: Deno.FileInfo, source: string, treeIds: TreeIds | undefined): ghost_file_entry {
  const mode = stat.mode ?? 0;
  const owner = ownerInside(treeIds, stat.uid ?? 0, stat.gid ?? 0);
  const chunked = (mode & S_IFMT) === S_IFREG && stat.size >= GHOST_CHUNKS_THRESH;
  return create(
    ghost_file_entrySchema,
    compact({
      uid: owner.uid,
      gid: owner.gid,
      mode,
      dev: kernelDev(stat.dev),
      ino: BigInt(stat.ino ?? 0),
      atim: timeval(stat.atime),
      mtim: timeval(stat.mtime),
      chunks: chunked ? true : undefined,
      size: chunked ? BigInt(stat.size) : undefined,
      symlnkTarget: (mode & S_IFMT) === S_IFLNK ? symlinkTargetOf(source) : undefined,
    }),
  );
}

function addLinkRemap(
  ctx: Dumper,
  source: string,
  key: string,
  what: string,
  name: string,
  flags: number,
  pos: bigint,
  mntId?: number,
): number {
  if (!ctx.session.opts.linkRemap) {
    refuse(
      ctx.pid,
      what,
      `its name was removed while another hard link remains. Can't create link remap for ${name}. Use --link-remap option`,
    );
  }
  const known = ctx.table.nextId();
  const id = ctx.table.add(key, (id) => regEntry(id, name, flags, pos, mntId));
  if (id !== known) return id; // a second mapping of the same file: linked already
  const linkId = ctx.table.nextId();
  let dir = name.slice(0, name.lastIndexOf("/")) || "/";
  let link = "";
  for (;;) {
    link = `${dir === "/" ? "" : dir}/link_remap.${linkId}`;
    try {
      linkOpenFile(source, link);
      break;
    } catch (e) {
      // As CRIU: a directory that is gone too is replaced by its parent.
      if (!isSyscallError(e, "ENOENT") || dir === "/") {
        refuse(ctx.pid, what, `cannot link it back as ${link}: ${(e as Error).message}`);
      }
      dir = dir.slice(0, dir.lastIndexOf("/")) || "/";
    }
  }
  // Removed again if the dump fails; kept for the restore otherwise.
  ctx.session.dir.noteWritten(link);
  const made = ctx.table.add(`link:${link}`, (lid) => regEntry(lid, link, 0, 0n, mntId));
  remapState(ctx.table).remaps.push(
    create(remap_file_path_entrySchema, { origId: id, remapId: made, remapType: remap_type.LINKED }),
  );
  ctx.log.info(`${what}: linked as ${link}`);
  return id;
}

/** Major and minor of a dev_t as stat(2) gives it (glibc's encoding). */
function splitDev(dev: number): [number, number] {
  const d = BigInt(dev);
  return [Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn)), Number((d & 0xffn) | ((d >> 12n) & ~0xffn))];
}

/** A device number as CRIU's images keep it (the kernel's own: major << 20 | minor). */
function kernelDev(dev: number): number {
  const [major, minor] = splitDev(dev);
  return ((major << 20) | minor) >>> 0;
}

function deviceName(rdev: number): string {
  return splitDev(rdev).join(":");
}

function sameDevice(path: string, stat: Deno.FileInfo): boolean {
  try {
    const st = Deno.statSync(path);
    return isDevice(st) && st.rdev === stat.rdev && st.isCharDevice === stat.isCharDevice;
  } catch {
    return false;
  }
}

/** A node under /dev of the same kind and device number, the plainest name first. */
function nodeOfDevice(stat: Deno.FileInfo): string | null {
  const queue = ["/dev"];
  while (queue.length > 0) {
    const dir = queue.shift()!;
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)].sort((a, b) => a.name.localeCompare(b.name));
    } catch {
      continue;
    }
    for (const e of entries) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) {
        queue.push(path);
        continue;
      }
      if (e.isSymlink || e.isFile) continue;
      try {
        const st = Deno.statSync(path);
        if (st.rdev === stat.rdev && st.isCharDevice === stat.isCharDevice && isDevice(st)) return path;
      } catch {
        // gone meanwhile
      }
    }
  }
  return null;
}

/** The dump's end: ghost-file-ID.img for every ghost, then remap-fpath.img. */
export function writeRemaps(session: FilesSession): void {
  const state = remapState(session.table);
  for (const g of state.ghosts) writeGhost(session, g);
  if (state.remaps.length > 0) session.dir.write(KINDS.REMAP_FPATH, undefined, state.remaps);
}

function writeGhost(session: FilesSession, g: PendingGhost): void {
  const path = session.dir.pathFor(KINDS.GHOST_FILE, g.id);
  const imageFd = openFd(path, OPEN.WRONLY | OPEN.CREAT | OPEN.TRUNC | OPEN.CLOEXEC, 0o644);
  session.dir.noteWritten(path);
  const w = ImageWriter.toSink(new RawFdSink(imageFd, path), path, KINDS.GHOST_FILE);
  try {
    w.writeEntry(g.entry);
    if ((g.entry.mode & S_IFMT) !== S_IFREG) return;
    const src = openFd(g.source, OPEN.RDONLY | OPEN.CLOEXEC);
    try {
      const size = g.entry.chunks ? Number(g.entry.size) : Deno.statSync(g.source).size;
      const ranges = g.entry.chunks ? dataRanges(src, size) : [[0, size] as [number, number]];
      for (const [start, end] of ranges) {
        if (g.entry.chunks) {
          w.writeEntry(create(ghost_chunk_entrySchema, { len: BigInt(end - start), off: BigInt(start) }));
        }
        w.flush();
        copyRange(src, start, imageFd, null, end - start, `ghost file ${g.id}`);
      }
    } finally {
      closeFd(src);
    }
  } finally {
    w.close();
  }
}

/** PREPARE: remap-fpath.img, each remap checked against files.img. */
export function readRemaps(session: FilesSession): void {
  const state = remapState(session.table);
  state.imagesPath = session.dir.path;
  state.treeIds = session.treeIds;
  for (const r of session.dir.readOptional<remap_file_path_entry>(KINDS.REMAP_FPATH)) {
    session.table.get(r.origId);
    if (r.remapType === remap_type.LINKED) session.table.get(r.remapId);
    else if (r.remapType === remap_type.GHOST) {
      if (!session.dir.has(KINDS.GHOST_FILE, r.remapId)) {
        throw new RestoreError(
          `Refusing the images: ghost file ${r.remapId} of file ${r.origId} (remap-fpath.img) is missing`,
        );
      }
    } else {
      throw new RestoreError(
        `Refusing the images: file ${r.origId} has a remap of type ${r.remapType} in remap-fpath.img, not supported`,
      );
    }
    state.byFile.set(r.origId, r);
  }
}

/**
 * The path a restored task opens for regular file `id`: its ghost (made on first use), its link
 * remap, or its own name.
 */
export function pathToOpen(table: FileTable, id: number, pid: number): string {
  const entry = table.get(id);
  const name = entry.reg?.name ?? "/";
  const state = remapState(table);
  const remap = state.byFile.get(id);
  if (!remap) return name;
  const at = criuPrefixOf(table, pid);
  if (remap.remapType === remap_type.LINKED) {
    const link = table.get(remap.remapId).reg?.name;
    if (!link) throw new RestoreError(`Link remap ${remap.remapId} of ${name} is not a regular file`);
    state.links.add(at + link);
    return underOwnName(state, name, link, at);
  }
  const ghost = ghostPath(table, name, remap.remapId, at);
  return ghost === name ? name : underOwnName(state, name, ghost, at);
}

/**
 * How criu reaches the paths task `pid` opens: as they are, unless the tree has a mount tree of
 * its own (a container's), where they are under the task's root, which criu holds an fd of (it
 * outlives the task, for the removal at the end).
 */
export function criuPrefixOf(table: FileTable, pid: number): string {
  if (!table.stateOf("paths-in-own-mntns", () => ({ on: false })).on) return "";
  const roots = remapState(table).roots;
  const ns = Deno.readLinkSync(`/proc/${pid}/ns/mnt`);
  let fd = roots.get(ns);
  if (fd === undefined) {
    fd = openFd(`/proc/${pid}/root`, OPEN.RDONLY | OPEN.DIRECTORY | OPEN.CLOEXEC);
    roots.set(ns, fd);
  }
  return `/proc/self/fd/${fd}`;
}

/**
 * As CRIU does: the file is opened by its own name when that name is free (a hard link made for
 * the open and removed at the end), so the task sees the same name, "(deleted)", as before the
 * dump; otherwise by the remap's name.
 */
function underOwnName(state: RemapState, name: string, remapPath: string, at: string): string {
  const known = state.ownNames.get(at + name);
  if (known !== undefined) return known === at + remapPath ? name : remapPath;
  try {
    Deno.linkSync(at + remapPath, at + name);
  } catch {
    return remapPath; // the name is taken again, or its directory is gone
  }
  state.ownNames.set(at + name, at + remapPath);
  return name;
}

/**
 * NAME.cr.ID.ghost, in the file's directory or, as CRIU does when that directory is gone too,
 * in its nearest parent that exists.
 */
function ghostName(name: string, ghostId: number, at: string): string {
  const base = name.slice(name.lastIndexOf("/") + 1);
  let dir = name.slice(0, name.lastIndexOf("/")) || "/";
  while (dir !== "/" && !pathExists(at + dir)) dir = dir.slice(0, dir.lastIndexOf("/")) || "/";
  return `${dir === "/" ? "" : dir}/${base}.cr.${ghostId.toString(16)}.ghost`;
}

/** The ghost's path as the tasks see it; criu makes it at `at` + that path. */
function ghostPath(table: FileTable, name: string, ghostId: number, at: string): string {
  const state = remapState(table);
  const known = state.madeGhosts.get(ghostId);
  if (known) return known.path;
  const ghost = ghostName(name, ghostId, at);
  const r = ImageReader.open(state.imagesPath, KINDS.GHOST_FILE, ghostId);
  let header: ghost_file_entry;
  let offset: number;
  try {
    header = r.readEntry() as ghost_file_entry;
    offset = r.offset;
  } finally {
    r.close();
  }
  const dir = (header.mode & S_IFMT) === S_IFDIR;
  // A directory cannot be linked under its own name later: as CRIU, it is made there when free.
  const parent = name.slice(0, name.lastIndexOf("/")) || "/";
  const path = dir && !pathExists(at + name) && pathExists(at + parent) ? name : ghost;
  const type = header.mode & S_IFMT;
  const made = at + path;
  try {
    if (dir) Deno.mkdirSync(made, { mode: header.mode & 0o7777 });
    else if (type === S_IFREG) makeGhostFile(state.imagesPath, ghostId, made, header, offset);
    else if (type === S_IFIFO) makeFifo(made, header.mode);
    else if (type === S_IFLNK && header.symlnkTarget !== undefined) {
      Deno.symlinkSync(header.symlnkTarget, made);
    } // CRIU 4.x carries a removed device node as a ghost too (mode and rdev, no contents).
    else if (DEVICE_NODE_TYPES.includes(type)) makeNode(made, header.mode, BigInt(header.rdev));
    else {
      throw new RestoreError(
        `Ghost file ${ghostId} of ${name} is not a file, directory, FIFO, device node or symlink with its target (mode 0${
          header.mode.toString(8)
        })`,
      );
    }
    state.madeGhosts.set(ghostId, { path, at: made, dir });
    // A symlink has no mode or times of its own to set, and chown would follow it.
    if (type === S_IFLNK) return path;
    chownAsSaved(made, state.treeIds, header.uid, header.gid);
    Deno.chmodSync(made, header.mode & 0o7777);
    if (header.atim && header.mtim) {
      const seconds = (t: { tvSec: bigint; tvUsec: bigint }) => Number(t.tvSec) + Number(t.tvUsec) / 1e6;
      Deno.utimeSync(made, seconds(header.atim), seconds(header.mtim));
    }
  } catch (e) {
    if (e instanceof RestoreError) throw e;
    throw new RestoreError(`Cannot make ghost file ${path}: ${(e as Error).message}`, 0, { cause: e });
  }
  return path;
}

function makeGhostFile(
  imagesPath: string,
  ghostId: number,
  path: string,
  header: ghost_file_entry,
  at: number,
): void {
  const imagePath = `${imagesPath}/ghost-file-${ghostId.toString(16)}.img`;
  const img = openFd(imagePath, OPEN.RDONLY | OPEN.CLOEXEC);
  let out = -1;
  try {
    out = openFd(path, OPEN.WRONLY | OPEN.CREAT | OPEN_EXCL | OPEN.CLOEXEC, header.mode & 0o7777);
    const end = Deno.statSync(imagePath).size;
    if (!header.chunks) {
      copyRange(img, at, out, 0, end - at, imagePath);
      return;
    }
    if (header.size === undefined) {
      throw new RestoreError(`${imagePath}: a chunked ghost file without a size`);
    }
    truncateFd(out, Number(header.size), path);
    const word = new Uint8Array(4);
    while (at < end) {
      preadFull(img, word, at, imagePath);
      const n = new DataView(word.buffer).getUint32(0, true);
      const body = new Uint8Array(n);
      preadFull(img, body, at + 4, imagePath);
      const chunk = fromBinary(ghost_chunk_entrySchema, body);
      copyRange(img, at + 4 + n, out, Number(chunk.off), Number(chunk.len), imagePath);
      at += 4 + n + Number(chunk.len);
    }
  } catch (e) {
    if (out >= 0) Deno.removeSync(path);
    throw e;
  } finally {
    closeFd(out);
    closeFd(img);
  }
}

/** Once every task has its files: the link remaps go, as CRIU removes them. */
export function removeLinks(table: FileTable): void {
  const state = remapState(table);
  for (const link of state.links) Deno.removeSync(link);
  state.links.clear();
}

/** At the end of a restore, worked or not: every ghost made and own name linked is unlinked again. */
export function removeGhosts(table: FileTable): void {
  const state = remapState(table);
  for (const name of state.ownNames.keys()) {
    try {
      Deno.removeSync(name);
    } catch {
      // already gone
    }
  }
  state.ownNames.clear();
  for (const { at } of state.madeGhosts.values()) {
    try {
      Deno.removeSync(at);
    } catch {
      // already gone
    }
  }
  state.madeGhosts.clear();
  for (const fd of state.roots.values()) closeFd(fd);
  state.roots.clear();
}
