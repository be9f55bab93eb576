/**
 * Mounts: the kernel's flag values for mount(2), mount_setattr(2) and move_mount(2), the layout of
 * struct mount_attr, and the reading of /proc/PID/mountinfo. The calls themselves are made by a
 * task of the restored tree (remote syscalls), so only their numbers and arguments live here;
 * except the few criu makes in its own namespace for a mount it hands to such a task (a plugin's,
 * or a nested namespace's device or external bind).
 */
import { addressOf, call, callBig, cstr, libc } from "./libc.ts";
import { AT_FDCWD, NR, O } from "./syscalls.ts";

/** mount(2) flags (MS_*), as the kernel and CRIU's images use them. */
export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  SYNCHRONOUS: 0x10,
  REMOUNT: 0x20,
  MANDLOCK: 0x40,
  DIRSYNC: 0x80,
  NOATIME: 0x400,
  NODIRATIME: 0x800,
  BIND: 0x1000,
  REC: 0x4000,
  UNBINDABLE: 0x20000,
  PRIVATE: 0x40000,
  SLAVE: 0x80000,
  SHARED: 0x100000,
  RELATIME: 0x200000,
  STRICTATIME: 0x1000000,
} as const;

/** mount_setattr(2) attributes (MOUNT_ATTR_*). */
export const MOUNT_ATTR = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  /** The mask of the three access-time modes below. */
  ATIME: 0x70,
  RELATIME: 0x0,
  NOATIME: 0x10,
  STRICTATIME: 0x20,
  NODIRATIME: 0x80,
} as const;

export const MOVE_MOUNT = {
  F_EMPTY_PATH: 0x4,
  T_EMPTY_PATH: 0x40,
  /** Puts the target into the source's peer group and under its master (Linux 5.15). */
  SET_GROUP: 0x100,
} as const;

export const AT_EMPTY_PATH = 0x1000;
export { AT_FDCWD };
export const MNT_DETACH = 0x2;

/** sizeof(struct mount_attr): attr_set, attr_clr, propagation, userns_fd, each a u64. */
export const MOUNT_ATTR_SIZE = 32;

/** A struct mount_attr, for a task's memory. */
export function mountAttr(set: number, clear: number, propagation: number): Uint8Array {
  const buf = new Uint8Array(MOUNT_ATTR_SIZE);
  const v = new DataView(buf.buffer);
  v.setBigUint64(0, BigInt(set), true);
  v.setBigUint64(8, BigInt(clear), true);
  v.setBigUint64(16, BigInt(propagation), true);
  return buf;
}

/** One line of /proc/PID/mountinfo, unescaped. */
export interface MountInfo {
  id: number;
  parentId: number;
  major: number;
  minor: number;
  /** The path inside its filesystem that is mounted (a bind mount's source). */
  root: string;
  /** Where, as the reading task sees it. */
  mountpoint: string;
  /** Per-mount options ("rw,nosuid,relatime"). */
  mountOptions: string;
  /** The optional fields: "shared:N", "master:N", "propagate_from:N", "unbindable". */
  optional: string[];
  fstype: string;
  source: string;
  /** The superblock's options. */
  superOptions: string;
}

/** The kernel escapes space, tab, newline and backslash in paths as \ooo (octal). */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export class MountinfoFormatError extends Error {
  override name = "MountinfoFormatError";
}

/** Parses the text of a mountinfo file, mounts in the kernel's order. */
export function parseMountinfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const f = line.split(" ");
    const dash = f.indexOf("-", 6);
    const dev = /^(\d+):(\d+)$/.exec(f[2] ?? "");
    if (f.length < 10 || dash < 0 || dash + 3 > f.length || !dev) {
      throw new MountinfoFormatError(`Cannot parse the mountinfo line ${JSON.stringify(line)}`);
    }
    out.push({
      id: Number(f[0]),
      parentId: Number(f[1]),
      major: Number(dev[1]),
      minor: Number(dev[2]),
      root: unescape(f[3]!),
      mountpoint: unescape(f[4]!),
      mountOptions: f[5]!,
      optional: f.slice(6, dash),
      fstype: f[dash + 1]!,
      source: unescape(f[dash + 2]!),
      superOptions: f[dash + 3] ?? "",
    });
  }
  return out;
}

/** A device number as the kernel keeps it inside (MKDEV: major << 20 | minor), as CRIU records s_dev. */
export function kernelDev(major: number, minor: number): number {
  return ((major << 20) | minor) >>> 0;
}

/** open_tree(2) flags (OPEN_TREE_CLOEXEC is O_CLOEXEC). */
export const OPEN_TREE = { CLONE: 0x1, CLOEXEC: O.CLOEXEC } as const;

/**
 * A detached copy of the mount at `path` in criu's own namespace (open_tree OPEN_TREE_CLONE): an fd
 * that a task in another mount namespace can attach with move_mount, as a bind it could not make
 * by path. O_CLOEXEC; close it when done.
 */
export function cloneMountTree(path: string): number {
  const name = cstr(path);
  return callBig(
    `open_tree(${path}, OPEN_TREE_CLONE)`,
    libc.syscall(
      BigInt(NR.open_tree),
      BigInt(AT_FDCWD),
      addressOf(name),
      BigInt(OPEN_TREE.CLONE | OPEN_TREE.CLOEXEC),
      0n,
      0n,
      0n,
    ),
  );
}

/**
 * mount(2) in criu's own namespace: a filesystem a nested namespace of a restored tree gets from a
 * device of criu's view, mounted on a scratch directory of criu's and copied (cloneMountTree).
 */
export function mountInCriu(
  source: string,
  target: string,
  fstype: string,
  flags: number,
  data: string,
): void {
  const [src, dst, type, opts] = [cstr(source), cstr(target), cstr(fstype), cstr(data)];
  callBig(
    `mount(${source}, ${target}, ${fstype})`,
    libc.syscall(
      BigInt(NR.mount),
      addressOf(src),
      addressOf(dst),
      addressOf(type),
      BigInt(flags),
      data ? addressOf(opts) : 0n,
      0n,
    ),
  );
}

/** Detaches the mount at `path` in criu's own namespace (umount2 MNT_DETACH); false if none is there. */
export function detachMount(path: string): boolean {
  const name = cstr(path);
  return libc.syscall(BigInt(NR.umount2), addressOf(name), BigInt(MNT_DETACH), 0n, 0n, 0n, 0n) === 0n;
}

/** An O_PATH fd of criu's on `path` (a mount another namespace's task reaches via /proc/CRIU/fd/N). */
export function openPathFd(path: string): number {
  return call("open(O_PATH)", libc.open(cstr(path), O.PATH | O.CLOEXEC, 0), path);
}
