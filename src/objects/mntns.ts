/**
 * Mount namespaces. A tree in a mount namespace of its own (a container) gets a new one on restore
 * holding the mount tree its tasks saw, as CRIU writes it:
 *   - mountpoints-ID.img: one mnt_entry per line of the root's /proc/PID/mountinfo (ids, parents,
 *     device, root, mountpoint, source, type, mount and superblock flags, peer group and master);
 *   - tmpfs-dev-DEV.tar.gz.img: the files of each tmpfs (DEV its kernel device number), made by
 *     Debian's tar with CRIU's flags.
 * What each mount becomes at restore:
 *   - the root mount (the one whose parent is outside the view): `--root DIR`, bound recursively;
 *   - a mount named at dump by `--external mnt[MOUNTPOINT]:KEY` (or `--ext-mount-map MP:KEY`):
 *     bound from the PATH that `--external mnt[KEY]:PATH` (or `--ext-mount-map KEY:PATH`) gives;
 *   - a mount of a filesystem already mounted in the tree at a wider root (a bind mount, a copy a
 *     shared mount propagated): bound from that one;
 *   - a virtual filesystem (proc, sysfs, devpts, mqueue, cgroup2, tmpfs...): mounted anew with its
 *     options, a tmpfs then filled from its archive.
 * Anything else (a disk mounted inside the namespace, a bind from outside not named) is refused
 * by name at dump, the tree left running.
 *
 * The tree is built by the root task itself (remote syscalls) right after it is cloned with
 * CLONE_NEWNS and before its memory comes back, so that its mapped files, its fds, cwd and root,
 * opened by path later, resolve through the restored mounts. It mounts everything under DIR in
 * mnt_id order (parents and bind sources first), private, keeping an O_PATH fd to each new mount
 * so that overmounted ones stay reachable; then sets each mount's flags (mount_setattr), pivots
 * into DIR, and only then recreates the peer groups and masters (move_mount MOVE_MOUNT_SET_GROUP,
 * Linux 5.15), so that nothing propagates while the tree is built. The namespace starts as a
 * recursive slave of criu's: no mount made in it reaches the host, and a failed restore, which
 * kills the root, leaves no mount anywhere.
 */
import { create } from "@bufbuild/protobuf";
import { type mnt_entry, mnt_entrySchema } from "../images/gen/mnt_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import {
  AT_EMPTY_PATH,
  kernelDev,
  MNT_DETACH,
  MOUNT_ATTR,
  mountAttr,
  type MountInfo,
  MOVE_MOUNT,
  MS,
  parseMountinfo,
} from "../../ffi/mount.ts";
import { CLONE, NR } from "../../ffi/syscalls.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { refuse } from "./refusal.ts";
import { registerNamespaceKind } from "./namespaces.ts";
import type { Agent } from "../agent.ts";
import type { RunOptions } from "../options/options.ts";
import type { Log } from "../log.ts";

/** CRIU's fstype enum (mnt.proto) for the filesystems mounted anew at restore. */
const FSTYPES: Record<string, number> = {
  proc: 1,
  sysfs: 2,
  devtmpfs: 3,
  binfmt_misc: 4,
  tmpfs: 5,
  devpts: 6,
  pstore: 8,
  securityfs: 9,
  fusectl: 10,
  debugfs: 11,
  cgroup: 12,
  mqueue: 14,
  tracefs: 19,
  cgroup2: 23,
};
const FSTYPE_UNSUPPORTED = 0;
const FSTYPE_TMPFS = 5;
const FSTYPE_NAMES = new Map(Object.entries(FSTYPES).map(([name, code]) => [code, name]));

/** Per-mount options as MS_* flags, as CRIU reads them (strictatime when no atime mode is named). */
const MOUNT_OPTION_FLAGS: Record<string, number> = {
  rw: 0,
  ro: MS.RDONLY,
  nosuid: MS.NOSUID,
  nodev: MS.NODEV,
  noexec: MS.NOEXEC,
  noatime: MS.NOATIME,
  nodiratime: MS.NODIRATIME,
  relatime: MS.RELATIME,
};
/** Superblock options taken as flags; the rest stay in the options string. */
const SUPER_OPTION_FLAGS: Record<string, number> = {
  rw: 0,
  ro: MS.RDONLY,
  sync: MS.SYNCHRONOUS,
  dirsync: MS.DIRSYNC,
  mand: MS.MANDLOCK,
};

/** CRIU's tar flags for a tmpfs archive. */
const TAR_CREATE = [
  "--create",
  "--gzip",
  "--no-unquote",
  "--no-wildcards",
  "--one-file-system",
  "--check-links",
  "--preserve-permissions",
  "--sparse",
  "--numeric-owner",
];
const TAR_EXTRACT = ["--extract", "--gzip", "--no-unquote", "--no-wildcards"];

// ---------------------------------------------------------------------------------------------
// Options: --external mnt[A]:B and --ext-mount-map A:B (dump: mountpoint → key; restore: key → path).

function externalMounts(opts: RunOptions | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of opts?.external ?? []) {
    const m = /^mnt\[([^\]]+)\]:(.+)$/s.exec(e);
    if (m) out.set(m[1]!, m[2]!);
  }
  for (const m of opts?.extMountMaps ?? []) out.set(m.key, m.value);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Dump

function optionFlags(list: string, table: Record<string, number>): { flags: number; rest: string[] } {
  let flags = 0;
  const rest: string[] = [];
  for (const o of list.split(",")) {
    const f = table[o];
    if (f === undefined) rest.push(o);
    else flags |= f;
  }
  return { flags, rest };
}

function toEntry(m: MountInfo): mnt_entry {
  let { flags } = optionFlags(m.mountOptions, MOUNT_OPTION_FLAGS);
  if ((flags & (MS.RELATIME | MS.NOATIME)) === 0) flags |= MS.STRICTATIME;
  let sharedId = 0, masterId = 0;
  for (const o of m.optional) {
    if (o.startsWith("shared:")) [flags, sharedId] = [flags | MS.SHARED, Number(o.slice(7))];
    else if (o.startsWith("master:")) [flags, masterId] = [flags | MS.SLAVE, Number(o.slice(7))];
    else if (o === "unbindable") flags |= MS.UNBINDABLE;
  }
  const sb = optionFlags(m.superOptions, SUPER_OPTION_FLAGS);
  const deleted = m.root.endsWith(" (deleted)");
  const e = create(mnt_entrySchema, {
    fstype: FSTYPES[m.fstype.split(".")[0]!] ?? FSTYPE_UNSUPPORTED,
    mntId: m.id,
    rootDev: kernelDev(m.major, m.minor),
    parentMntId: m.parentId,
    flags: flags >>> 0,
    root: deleted ? m.root.slice(0, -" (deleted)".length) : m.root,
    mountpoint: m.mountpoint,
    source: m.source,
    options: sb.rest.join(","),
    sharedId,
    masterId,
    sbFlags: sb.flags,
  });
  if (deleted) e.deleted = true;
  return e;
}

/** `inner` is `outer` or a path under it. */
function within(inner: string, outer: string): boolean {
  return outer === "/" || inner === outer || inner.startsWith(`${outer}/`);
}

/** The mount the tree already holds that `e` can be bound from: same filesystem, a root that holds e's. */
function bindSource(entries: readonly mnt_entry[], e: mnt_entry): mnt_entry | undefined {
  return entries.find((s) =>
    s !== e && s.rootDev === e.rootDev && !s.extKey && within(e.root, s.root) &&
    (s.root !== e.root || s.mntId < e.mntId)
  );
}

function isRootMount(entries: readonly mnt_entry[], e: mnt_entry): boolean {
  return !entries.some((p) => p.mntId === e.parentMntId && p !== e);
}

function describe(e: mnt_entry, fstype: string): string {
  return `the mount ${e.mountpoint} (${fstype}, mount ${e.mntId})`;
}

/** Says how each mount comes back, or refuses the first that cannot. */
function checkMounts(pid: number, infos: readonly MountInfo[], entries: readonly mnt_entry[]): void {
  const roots = entries.filter((e) => isRootMount(entries, e));
  if (roots.length !== 1) {
    throw new DumpError(
      `The mount namespace of process ${pid} has ${roots.length} root mounts; expected one`,
    );
  }
  const groups = new Set(entries.filter((e) => e.sharedId).map((e) => e.sharedId));
  entries.forEach((e, i) => {
    const what = describe(e, infos[i]!.fstype);
    if (e.deleted) refuse(pid, what, "its root was deleted");
    if (e.masterId && !groups.has(e.masterId) && !(e === roots[0] || e.masterId === roots[0]!.masterId)) {
      refuse(
        pid,
        what,
        `it is a slave of peer group ${e.masterId}, which is outside the tree (--enable-external-masters is not supported yet)`,
      );
    }
    if (e === roots[0] || e.extKey) return;
    if (bindSource(entries, e)) return;
    if (e.fstype === FSTYPE_UNSUPPORTED) {
      refuse(
        pid,
        what,
        `its source ${e.source}:${e.root} is outside the tree's view; name it with --external mnt[${e.mountpoint}]:KEY`,
      );
    }
    if (e.root !== "/") {
      refuse(
        pid,
        what,
        `only ${e.root} of the filesystem is mounted, and the filesystem's root is not in the tree; name it with --external mnt[${e.mountpoint}]:KEY`,
      );
    }
  });
}

/** The tmpfs's files, archived by tar from where the tree sees the mount. */
function dumpTmpfs(pid: number, dir: ImageDir, e: mnt_entry, dev: { major: number; minor: number }): void {
  const path = `/proc/${pid}/root${e.mountpoint}`;
  const st = Deno.statSync(path);
  if (st.dev !== ((dev.major << 8) | (dev.minor & 0xff) | ((dev.minor & ~0xff) << 12))) {
    refuse(pid, describe(e, "tmpfs"), "it is covered by another mount, so its files cannot be read");
  }
  const image = dir.pathFor(KINDS.TMPFS_DEV, e.rootDev);
  const out = new Deno.Command("tar", {
    args: [...TAR_CREATE, "--file", image, "--directory", path, "."],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).outputSync();
  dir.noteWritten(image);
  if (!out.success) {
    throw new DumpError(
      `Cannot archive the tmpfs at ${e.mountpoint}: tar said ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
}

function dumpMounts(pid: number, id: number, dir: ImageDir, opts: RunOptions | undefined, log: Log): void {
  const infos = parseMountinfo(Deno.readTextFileSync(`/proc/${pid}/mountinfo`));
  const external = externalMounts(opts);
  const entries = infos.map((m) => {
    const e = toEntry(m);
    const key = external.get(m.mountpoint);
    if (key !== undefined) e.extKey = key;
    return e;
  });
  checkMounts(pid, infos, entries);
  const archived = new Set<number>();
  entries.forEach((e, i) => {
    if (e.fstype !== FSTYPE_TMPFS || e.root !== "/" || archived.has(e.rootDev) || e.extKey) return;
    archived.add(e.rootDev);
    dumpTmpfs(pid, dir, e, infos[i]!);
  });
  dir.write(KINDS.MNTS, id, entries);
  log.info(
    `Saved ${entries.length} mount(s) of the mount namespace ${id}, ${archived.size} tmpfs archive(s)`,
  );
}

// ---------------------------------------------------------------------------------------------
// Restore

interface MountPlan {
  entries: mnt_entry[];
  rootDir: string;
  /** Each external mount's source path, by mnt_id. */
  externalPaths: Map<number, string>;
  dir: ImageDir;
  log: Log;
}

function planRestore(dir: ImageDir, id: number, opts: RunOptions | undefined, log: Log): MountPlan {
  const entries = dir.read<mnt_entry>(KINDS.MNTS, id).sort((a, b) => a.mntId - b.mntId);
  const image = `mountpoints-${id}.img`;
  const roots = entries.filter((e) => isRootMount(entries, e));
  if (roots.length !== 1) throw new RestoreError(`${image} holds ${roots.length} root mounts; expected one`);
  if (!opts?.root) throw new RestoreError("The --root option is required to restore a mount namespace");
  let rootDir: string;
  try {
    rootDir = Deno.realPathSync(opts.root);
  } catch {
    throw new RestoreError(`The --root directory ${opts.root} does not exist`);
  }
  const external = externalMounts(opts);
  const externalPaths = new Map<number, string>();
  for (const e of entries) {
    if (e === roots[0]) continue;
    if (e.extKey) {
      const path = external.get(e.extKey);
      if (path === undefined) {
        throw new RestoreError(
          `The mount ${e.mountpoint} is external with key ${e.extKey}; give its source with --external mnt[${e.extKey}]:PATH`,
        );
      }
      externalPaths.set(e.mntId, path);
    } else if (!bindSource(entries, e) && !FSTYPE_NAMES.has(e.fstype)) {
      throw new RestoreError(
        `${image}: mount ${e.mntId} at ${e.mountpoint} has filesystem type ${e.fstype}, which cannot be mounted anew`,
      );
    } else if (!bindSource(entries, e) && e.fstype === FSTYPE_TMPFS && !dir.has(KINDS.TMPFS_DEV, e.rootDev)) {
      throw new RestoreError(`The tmpfs at ${e.mountpoint} has no archive tmpfs-dev-${e.rootDev}.tar.gz.img`);
    }
  }
  return { entries, rootDir, externalPaths, dir, log };
}

/** Builds the tree in the root task (see the top of this file). */
class TreeBuilder {
  /** An O_PATH fd in the root task to each mount made, by mnt_id. */
  #fds = new Map<number, number>();
  #root: Agent;
  #plan: MountPlan;

  constructor(root: Agent, plan: MountPlan) {
    this.#root = root;
    this.#plan = plan;
  }

  build(): void {
    const { entries, rootDir } = this.#plan;
    const r = this.#root;
    r.reset();
    r.call("mount(/, rslave)", NR.mount, 0, r.string("/"), 0, MS.REC | MS.SLAVE, 0);
    const root = entries.find((e) => isRootMount(entries, e))!;
    this.#mount(root, `mount(${rootDir}, bind)`, rootDir, rootDir, 0, MS.BIND | MS.REC, "");
    for (const e of entries) if (e !== root) this.#make(e);
    for (const e of entries) this.#setFlags(e);
    this.#pivot(rootDir);
    for (const e of entries) this.#setAttr(e, 0, 0, MS.PRIVATE);
    this.#peerGroups();
    for (const fd of this.#fds.values()) r.call("close", NR.close, fd);
  }

  #target(e: mnt_entry): string {
    return `${this.#plan.rootDir}${e.mountpoint === "/" ? "" : e.mountpoint}`;
  }

  #mount(
    e: mnt_entry,
    what: string,
    source: string,
    target: string,
    fstype: number | string,
    flags: number,
    data: string,
  ): void {
    const r = this.#root;
    r.reset();
    const fs = typeof fstype === "string" ? r.string(fstype) : fstype;
    const res = r.raw(NR.mount, r.string(source), r.string(target), fs, flags, data ? r.string(data) : 0);
    if (res < 0n) throw new RestoreError(`Cannot restore the mount ${e.mountpoint} (${what}): errno ${-res}`);
    r.reset();
    const fd = r.raw(NR.open, r.string(target), 0o10000000 | 0o2000000 | 0o400000, 0);
    if (fd < 0n) throw new RestoreError(`Cannot open the new mount ${e.mountpoint}: errno ${-fd}`);
    this.#fds.set(e.mntId, Number(fd));
  }

  #make(e: mnt_entry): void {
    const target = this.#target(e);
    const ext = this.#plan.externalPaths.get(e.mntId);
    if (ext !== undefined) return this.#mount(e, `bind from ${ext}`, ext, target, 0, MS.BIND, "");
    const src = bindSource(this.#plan.entries, e);
    if (src) {
      const from = `/proc/self/fd/${this.#fds.get(src.mntId)}${
        e.root.slice(src.root === "/" ? 0 : src.root.length)
      }`;
      return this.#mount(e, `bind from mount ${src.mntId}`, from, target, 0, MS.BIND, "");
    }
    const fstype = e.fstype === 16 ? e.fsname : FSTYPE_NAMES.get(e.fstype)!;
    const sbFlags = e.sbFlags & ~MS.RDONLY;
    this.#mount(e, fstype, e.source, target, fstype, sbFlags, e.options);
    if (e.fstype === FSTYPE_TMPFS) this.#untar(e, target);
    if (e.sbFlags & MS.RDONLY) {
      const r = this.#root;
      r.reset();
      r.call(
        `remount ${e.mountpoint} ro`,
        NR.mount,
        0,
        r.string(`/proc/self/fd/${this.#fds.get(e.mntId)}`),
        0,
        MS.REMOUNT | e.sbFlags,
        e.options ? r.string(e.options) : 0,
      );
    }
  }

  #untar(e: mnt_entry, target: string): void {
    const image = this.#plan.dir.pathFor(KINDS.TMPFS_DEV, e.rootDev);
    const out = new Deno.Command("tar", {
      args: [...TAR_EXTRACT, "--file", image, "--directory", `/proc/${this.#root.pid}/root${target}`],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).outputSync();
    if (!out.success) {
      throw new RestoreError(
        `Cannot fill the tmpfs at ${e.mountpoint} from ${image}: tar said ${
          new TextDecoder().decode(out.stderr).trim()
        }`,
      );
    }
  }

  #setAttr(e: mnt_entry, set: number, clear: number, propagation: number): void {
    const r = this.#root;
    r.reset();
    const attr = mountAttr(set, clear, propagation);
    const res = r.raw(
      NR.mount_setattr,
      this.#fds.get(e.mntId)!,
      r.string(""),
      AT_EMPTY_PATH,
      r.alloc(attr.length, attr),
      attr.length,
    );
    if (res < 0n) throw new RestoreError(`Cannot set the flags of the mount ${e.mountpoint}: errno ${-res}`);
  }

  #setFlags(e: mnt_entry): void {
    const f = e.flags;
    let set = 0;
    if (f & MS.RDONLY) set |= MOUNT_ATTR.RDONLY;
    if (f & MS.NOSUID) set |= MOUNT_ATTR.NOSUID;
    if (f & MS.NODEV) set |= MOUNT_ATTR.NODEV;
    if (f & MS.NOEXEC) set |= MOUNT_ATTR.NOEXEC;
    if (f & MS.NODIRATIME) set |= MOUNT_ATTR.NODIRATIME;
    if (f & MS.NOATIME) set |= MOUNT_ATTR.NOATIME;
    else if (f & MS.STRICTATIME) set |= MOUNT_ATTR.STRICTATIME;
    const all = MOUNT_ATTR.RDONLY | MOUNT_ATTR.NOSUID | MOUNT_ATTR.NODEV | MOUNT_ATTR.NOEXEC |
      MOUNT_ATTR.NODIRATIME | MOUNT_ATTR.ATIME;
    this.#setAttr(e, set, all, 0);
  }

  #pivot(rootDir: string): void {
    const r = this.#root;
    r.reset();
    r.call(`chdir(${rootDir})`, NR.chdir, r.string(rootDir));
    r.reset();
    const dot = r.string(".");
    r.call("pivot_root", NR.pivot_root, dot, dot);
    r.call("umount2(old root)", NR.umount2, dot, MNT_DETACH);
    r.reset();
    r.call("chdir(/)", NR.chdir, r.string("/"));
  }

  /** Peer groups and masters, each group's first member made shared before the others join it. */
  #peerGroups(): void {
    const { entries } = this.#plan;
    const done = new Set<number>();
    const ensureGroup = (group: number): mnt_entry | undefined => {
      const members = entries.filter((e) => e.sharedId === group).sort((a, b) =>
        a.root.length - b.root.length
      );
      const first = members[0];
      if (!first || done.has(group)) return first;
      done.add(group);
      if (first.masterId) this.#slaveOf(first, ensureGroup(first.masterId));
      this.#setAttr(first, 0, 0, MS.SHARED);
      for (const m of members.slice(1)) this.#setGroup(first, m);
      return first;
    };
    for (const e of entries) {
      if (e.sharedId) ensureGroup(e.sharedId);
      else if (e.masterId) this.#slaveOf(e, ensureGroup(e.masterId));
    }
  }

  /** Makes `e` a slave of `master`'s peer group; an external master (the root's) stays as it was. */
  #slaveOf(e: mnt_entry, master: mnt_entry | undefined): void {
    if (!master) {
      this.#plan.log.info(
        `The master of mount ${e.mntId} (${e.mountpoint}) is outside the tree; it stays private`,
      );
      return;
    }
    this.#setGroup(master, e);
    this.#setAttr(e, 0, 0, MS.SLAVE);
  }

  #setGroup(from: mnt_entry, to: mnt_entry): void {
    const r = this.#root;
    r.reset();
    const empty = r.string("");
    const res = r.raw(
      NR.move_mount,
      this.#fds.get(from.mntId)!,
      empty,
      this.#fds.get(to.mntId)!,
      empty,
      MOVE_MOUNT.SET_GROUP | MOVE_MOUNT.F_EMPTY_PATH | MOVE_MOUNT.T_EMPTY_PATH,
    );
    if (res < 0n) {
      throw new RestoreError(
        `Cannot put the mount ${to.mountpoint} into the peer group of ${from.mountpoint}: errno ${-res}`,
      );
    }
  }
}

registerNamespaceKind({
  name: "mnt",
  words: "mount",
  cloneFlag: CLONE.NEWNS,
  check(tree, nsIds) {
    const root = nsIds.linksOf(tree.root.pid).get("mnt");
    for (const t of tree.tasks) {
      const theirs = nsIds.linksOf(t.pid).get("mnt");
      if (t.state === "zombie" || theirs === root) continue;
      refuse(
        t.pid,
        `mount namespace ${theirs}`,
        `it differs from the root's (${root}); nested mount namespaces are not supported`,
      );
    }
  },
  dump(ctx) {
    dumpMounts(ctx.tree.root.pid, ctx.id, ctx.dir, ctx.options, ctx.log);
  },
  prepareRestore(ctx) {
    const id = ctx.tasks[0]!.ids?.mntNsId;
    if (id === undefined || !ctx.dir.has(KINDS.MNTS, id)) return undefined;
    const plan = planRestore(ctx.dir, id, ctx.options, ctx.log);
    return { beforeMemory: (root) => new TreeBuilder(root, plan).build() };
  },
});
