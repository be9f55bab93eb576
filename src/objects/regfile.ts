/**
 * Regular files, directories and the harmless character devices (/dev/null, /dev/zero, /dev/full,
 * /dev/random, /dev/urandom): reopened by path with their flags, at their offset. Files whose name
 * is gone (unlinked files, --link-remap, --evasive-devices) are reached through `remap.ts`.
 */
import { create } from "@bufbuild/protobuf";
import { compact } from "../compact.ts";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { reg_file_entrySchema } from "../images/gen/regfile_pb.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import { openPathFd, parseMountinfo } from "../../ffi/mount.ts";
import { closeFd } from "../../ffi/fd.ts";
import { emptyFown, type FdKind, type FileTable, registerFdKind } from "./files.ts";
import { RestoreError } from "../errors.ts";
import { errnoName, isSyscallError } from "../../ffi/errors.ts";
import { refuse } from "./refusal.ts";
import {
  dumpRemappedFd,
  isDevice,
  nameIsGone,
  pathToOpen,
  readRemaps,
  removeGhosts,
  removeLinks,
  writeRemaps,
} from "./remap.ts";
import {
  addExternalFile,
  checkExternalFiles,
  externalFileKey,
  externalKeyOf,
  noteOtherExternals,
  openExternalFile,
} from "./regfile_external.ts";

const PLAIN_DEVICES = new Set(["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]);
/** Flags that only matter at open time and must not be replayed (O_TRUNC would empty the file). */
const OPEN_ONLY = O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY | O.CLOEXEC;

/**
 * Adds (or finds) a regular-file entry; mappings and cwd/root/exe use this too. `mntId`: the
 * mount it is on, for a task in a mount namespace the dump saves (see mountIdToSave).
 */
export function addRegFile(
  table: FileTable,
  path: string,
  flags: number,
  pos = 0n,
  key?: string,
  known?: Deno.FileInfo | null,
  mntId?: number,
): number {
  const st = known ?? safeStat(path);
  const shared = mntId === undefined ? `reg:${path}:${flags}` : `reg:${path}:${flags}:${mntId}`;
  return table.add(key ?? shared, (id) =>
    create(file_entrySchema, {
      type: fd_types.REG,
      id,
      reg: create(
        reg_file_entrySchema,
        compact({
          id,
          flags: flags & ~O.CLOEXEC,
          pos,
          fown: emptyFown(),
          name: path,
          size: st?.isFile ? BigInt(st.size) : undefined,
          mode: st?.mode ?? undefined,
          mntId,
        }),
      ),
    }));
}

/** Per dump (its file table): the mounts of each task's namespace when it is saved (not criu's), else null. */
const savedMounts = new WeakMap<FileTable, Map<number, Set<number> | null>>();

/**
 * The mount id to record with a file of task `pid`, as CRIU records it: the restore opens the file
 * in the mount namespace that mount belongs to (a nested one's tasks see other files by the same
 * names). Undefined when the task is in criu's own mount namespace, which no image holds, or the
 * mount is not in the task's view (a file opened before it left criu's: no image names it either).
 */
export function mountIdToSave(table: FileTable, pid: number, mntId: number): number | undefined {
  let byPid = savedMounts.get(table);
  if (!byPid) savedMounts.set(table, byPid = new Map());
  let mounts = byPid.get(pid);
  if (mounts === undefined) {
    mounts = null;
    try {
      if (Deno.readLinkSync(`/proc/${pid}/ns/mnt`) !== Deno.readLinkSync("/proc/self/ns/mnt")) {
        mounts = new Set(parseMountinfo(Deno.readTextFileSync(`/proc/${pid}/mountinfo`)).map((m) => m.id));
      }
    } catch {
      // gone: nothing to record
    }
    byPid.set(pid, mounts);
  }
  return mounts?.has(mntId) ? mntId : undefined;
}

/**
 * A task's cwd or root (named `path`): stat'd through /proc, since in a mount namespace of the
 * tree's own the same name may be another directory in criu's, with the mount it is on.
 */
export function addTaskDirectory(table: FileTable, pid: number, which: "cwd" | "root", path: string): number {
  const link = `/proc/${pid}/${which}`;
  return addRegFile(
    table,
    path,
    O.RDONLY | O.DIRECTORY,
    0n,
    undefined,
    safeStat(link),
    mountIdOfLink(table, pid, link, `its ${which}`, path),
  );
}

/**
 * A file task `pid` maps (named `path` in its view), reached through `link` (its entry in
 * /proc/PID/map_files, or /proc/PID/exe): recorded with the mount it is on, as a task directory is, so that a restore opens it in the namespace of that mount (a file of a
 * nested namespace's own tmpfs is nowhere else).
 */
export function addMappedFile(
  table: FileTable,
  pid: number,
  link: string,
  path: string,
  flags: number,
): number {
  // The size stays the one at `path` in criu's view, which is what the restore's check of a mapped
  // file compares it with (mapping_regfile.ts) before any mount namespace of the tree exists.
  const mntId = mountIdOfLink(table, pid, link, `the mapping of ${path}`, path);
  return addRegFile(table, path, flags, 0n, undefined, safeStat(path), mntId);
}

/** The mount id to save (mountIdOrRefuse) of `object`, the file /proc link `link` of task `pid` leads to. */
function mountIdOfLink(
  table: FileTable,
  pid: number,
  link: string,
  object: string,
  path: string,
): number | undefined {
  if (!inSavedMountNs(table, pid)) return undefined;
  const fd = openPathFd(link);
  let mntId: number | undefined;
  try {
    const line = Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`).split("\n").find((l) =>
      l.startsWith("mnt_id:")
    );
    mntId = line ? Number(line.slice(7).trim()) : undefined;
  } finally {
    closeFd(fd);
  }
  return mntId === undefined
    ? undefined
    : mountIdOrRefuse(table, pid, object, path, mntId, () => safeStat(link));
}

/**
 * mountIdToSave, for `object` of task `pid` (named `path` in its view, on mount `mntId`). A file on
 * a mount outside the task's saved mount namespace (a container's stdout sent to a log of the host)
 * could only be opened again by its name inside that namespace: when that name leads to another
 * file or none, the dump is refused before any task is touched, as CRIU refuses it, not left for a
 * restore that would fail after the container is gone. A file opened before the task left criu's
 * mount namespace is still found there, on the copy of its mount. Devices are reopened by name.
 */
function mountIdOrRefuse(
  table: FileTable,
  pid: number,
  object: string,
  path: string,
  mntId: number,
  statOf: () => Deno.FileInfo | null,
): number | undefined {
  const saved = mountIdToSave(table, pid, mntId);
  if (saved !== undefined || !inSavedMountNs(table, pid)) return saved;
  const stat = statOf();
  if (!stat || isDevice(stat)) return undefined;
  let inside: Deno.FileInfo | null = null;
  try {
    inside = Deno.statSync(`/proc/${pid}/root${path}`);
  } catch {
    // no such name in the task's view
  }
  if (inside && inside.dev === stat.dev && inside.ino === stat.ino) return undefined;
  const where = inside ? "is another file" : "does not exist";
  const handOver = object.startsWith("fd ")
    ? `; hand it over as --external ${externalKeyOf(mntId, stat.ino!)} and --inherit-fd at restore, ` +
      "or give the process a file of its own"
    : "";
  refuse(
    pid,
    object,
    `it is on mount ${mntId}, which is not in the process's mount namespace, where ${path} ${where} ` +
      `(CRIU: "Can't lookup mount=${mntId}")${handOver}`,
  );
}

function inSavedMountNs(table: FileTable, pid: number): boolean {
  mountIdToSave(table, pid, 0);
  return !!savedMounts.get(table)?.get(pid);
}

function safeStat(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch {
    return null;
  }
}

export const regFileKind: FdKind = {
  name: "regular file",
  type: fd_types.REG,
  detect(fd, stat) {
    if (!fd.target.startsWith("/")) return false;
    if (stat?.isFile || stat?.isDirectory) return true;
    // A device whose node is gone is ours (reopened by another node, or refused by name).
    return PLAIN_DEVICES.has(fd.target) || (isDevice(stat) && nameIsGone(fd.target, stat));
  },
  dump(ctx, fd, stat) {
    const external = externalFileKey(ctx.session.opts, fd, stat);
    if (external) return addExternalFile(ctx.table, fd, stat, external, `fd:${ctx.pid}:${fd.fd}`);
    if (stat && nameIsGone(fd.target, stat)) return dumpRemappedFd(ctx, fd, stat);
    // Each fd gets its own description unless the caller proves two fds share one.
    // The fd's own stat is the file's: no second stat by path (thousands of fds add up).
    const object = `fd ${fd.fd} (${fd.target})`;
    const mntId = mountIdOrRefuse(ctx.table, ctx.pid, object, fd.target, fd.mntId, () => stat);
    return addRegFile(ctx.table, fd.target, fd.flags, fd.pos, `fd:${ctx.pid}:${fd.fd}`, stat, mntId);
  },
  open(ctx, entry) {
    const reg = entry.reg;
    if (!reg) throw new RestoreError(`File ${entry.id} has no regular-file data`);
    if (reg.ext) return openExternalFile(ctx, entry);
    const path = pathToOpen(ctx.table, entry.id, ctx.agent.pid);
    ctx.agent.reset();
    let fd: bigint;
    try {
      fd = ctx.agent.call(
        `open(${path})`,
        NR.open,
        ctx.agent.string(path),
        reg.flags & ~OPEN_ONLY,
        0,
      );
    } catch (e) {
      if (!isSyscallError(e)) throw e;
      throw new RestoreError(
        `Cannot reopen ${reg.name} (file ${entry.id} of files.img): ${errnoName(e.errno)}`,
        e.errno,
        { cause: e },
      );
    }
    // No answer needed: it rides along with the next trap (the dup3 that places the fd).
    if (reg.pos !== 0n) ctx.agent.later(`lseek(${reg.name})`, NR.lseek, fd, reg.pos, 0);
    return Number(fd);
  },
  openInBatch(ctx, entry) {
    const reg = entry.reg;
    if (!reg || reg.ext) return null;
    const path = pathToOpen(ctx.table, entry.id, ctx.agent.pid);
    const name = new TextEncoder().encode(path).length + 1;
    const open = {
      name: `reopen ${path}`,
      nr: NR.open,
      args: [ctx.agent.string(path), reg.flags & ~OPEN_ONLY, 0],
    };
    const at = (fd: number) =>
      reg.pos === 0n ? [] : [{ name: `lseek(${path})`, nr: NR.lseek, args: [fd, reg.pos, 0] }];
    return { open, bytes: name, at };
  },
  // CRIU's name of a file for --inherit-fd: its path without the leading slash ("." for "/").
  // An external file is named file[MNT_ID:INODE] and is only ever opened from its inherit fd.
  inheritName: (entry) => entry.reg && !entry.reg.ext ? entry.reg.name.slice(1) || "." : undefined,
  finishDump(session) {
    writeRemaps(session);
    noteOtherExternals(session);
  },
  loadImages(session) {
    readRemaps(session);
    checkExternalFiles(session);
    noteOtherExternals(session);
  },
  afterAllFds: (session) => removeLinks(session.table),
  endRestore: (session) => removeGhosts(session.table),
};

registerFdKind(regFileKind);
