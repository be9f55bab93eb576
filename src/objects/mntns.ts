/**
 * Mount namespaces. A tree in a mount namespace of its own (a container) gets a new one on restore
 * holding the mount tree its tasks saw, as CRIU writes it:
 *   - mountpoints-ID.img: one mnt_entry per line of the root's /proc/PID/mountinfo (ids, parents,
 *     device, root, mountpoint, source, type, mount and superblock flags, peer group and master);
 *   - tmpfs-dev-DEV.tar.gz.img: the files of each tmpfs (DEV its kernel device number), made by
 *     Debian's tar with CRIU's flags.
 * What each mount becomes at restore:
 *   - the root mount (the one whose parent is outside the view): `--root DIR`, bound recursively;
 *   - a mount named at dump by `--external mnt[MOUNTPOINT]:KEY` (or `--ext-mount-map MP:KEY`, or
 *     RPC ext_mnt): bound from the PATH that `--external mnt[KEY]:PATH` (or `--ext-mount-map
 *     KEY:PATH`) gives; with `--external mnt[]` (auto) a bind of a mount of criu's namespace is
 *     external by itself, its host path kept in the image;
 *   - a bind that nothing else takes: DUMP_EXT_MOUNT/RESTORE_EXT_MOUNT of the plugins;
 *   - a mount of a filesystem already mounted in the tree at a wider root (a bind mount, a copy a
 *     shared mount propagated): bound from that one;
 *   - a virtual filesystem (proc, sysfs, devpts, mqueue, cgroup2, tmpfs...): mounted anew with its
 *     options, a tmpfs then filled from its archive; an overlayfs, whose options name paths of the
 *     tree's view, from inside --root (chroot).
 * A slave of a peer group outside the tree gets that group back from the mount of criu's namespace
 * that an external mount's path (or --root) is on, and an external mount in a group of criu's
 * namespace (--enable-external-sharing) joins it again, as CRIU's external masters and sharing.
 * A disk filesystem mounted at its root inside the tree comes back as CRIU brings it: with
 * `--external dev[MAJOR/MINOR]:KEY` at dump (source "dev[KEY]") it is mounted from the device that
 * `--external dev[KEY]:DEVPATH` gives at restore; with --enable-fs naming its type, from its own
 * source again ("auto", fsname its kernel name). Anything else (such a disk named by neither, a
 * bind from outside not named) is refused by name at dump, with CRIU's options as the hint, the
 * tree left running.
 *
 * The tree is built by the root task itself (remote syscalls) right after it is cloned with
 * CLONE_NEWNS and before its memory comes back, so that its mapped files, its fds, cwd and root,
 * opened by path later, resolve through the restored mounts. It mounts everything under DIR in
 * an order where parents and bind sources come first (mount ids do not give one), private, keeping an O_PATH fd to each new mount
 * so that overmounted ones stay reachable; then sets each mount's flags (mount_setattr), pivots
 * into DIR, and only then recreates the peer groups and masters (move_mount MOVE_MOUNT_SET_GROUP,
 * Linux 5.15), so that nothing propagates while the tree is built. The namespace starts as a
 * recursive slave of criu's: no mount made in it reaches the host, and a failed restore, which
 * kills the root, leaves no mount anywhere.
 *
 * Nested mount namespaces (a task below the root that unshared CLONE_NEWNS: a systemd service's
 * PrivateTmp= in a container) are saved as CRIU 4.2 saves them: a mountpoints-ID.img each (the
 * ids of each task's ids image name it), mount ids and peer groups the kernel's, so that a master
 * or a group may be in another namespace; a tmpfs seen by several is archived once; a file, cwd or
 * root of a task in such a namespace records the mount it is on (reg mnt_id), which CRIU's restore
 * needs to open it in the right namespace. A child in a namespace of its own under a root in criu's
 * is refused (CRIU saves nothing of it and cannot restore it). The restore builds a nested
 * namespace in its first task (namespaces.ts clones it with CLONE_NEWNS from its parent, a task of
 * the parent namespace, already built): each of its mounts that is a copy of one of the parent's
 * is copied (open_tree) from that mount itself, the task entering the parent namespace for it and
 * coming back (the copy of the parent's tree it starts with may have them covered); its root is
 * attached on top of the task's root, its cwd moved into it, the others below it (move_mount);
 * what no parent mount holds is made anew or bound from one of its own; the pivot then drops the
 * copy it started with. Peer groups and masters held by a namespace
 * built before are joined there (SET_GROUP from an fd on that namespace's mount, which its builder
 * keeps until every namespace is built and criu copies in). A slave of a group that only a
 * namespace built later holds (the root's root mount made a slave after a nested namespace copied
 * it) stays private until that one is built, which then puts it into the group (SET_GROUP) and,
 * entering its namespace, makes it a slave (one that is also shared: its whole group made again).
 * A group with a slave whose root none of its members' holds (a bind of pt/in joined pt's group,
 * then pt, whose copy elsewhere was its slave, was made private) is founded on a helper: a detached
 * copy of a mount whose root holds them all, made shared, that the members and slaves join (the
 * kernel lets a mount join a group only from a member whose root holds its own, which CRIU 4.2
 * relies on and fails with); it goes once every namespace is built, the group and slaves stay.
 * A nested namespace's own mounts that its parent's has no copy of come back as the root
 * namespace's do, but what comes from criu's view (an external bind found by itself with
 * --external mnt[], also a slave of a host group with mnt[]:m, which it carries as the root
 * namespace's external mounts do; a disk from its device; a plugin's mount) is mounted by criu
 * in its own namespace and handed to the building task as a detached mount (an fd), since a
 * nested namespace does not see criu's paths; an overlayfs is mounted with the task chrooted
 * into its new root. A mountpoint key names a mount of the root's namespace only (CRIU's rule:
 * a nested namespace may hold another mount at that place).
 */
import { create } from "@bufbuild/protobuf";
import { type mnt_entry, mnt_entrySchema } from "../images/gen/mnt_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  cloneMountTree,
  detachMount,
  kernelDev,
  MNT_DETACH,
  MOUNT_ATTR,
  mountAttr,
  mountInCriu,
  type MountInfo,
  MOVE_MOUNT,
  MS,
  OPEN_TREE,
  openPathFd,
  parseMountinfo,
} from "../../ffi/mount.ts";
import { CLONE, NR, O } from "../../ffi/syscalls.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { closeFd, OPEN, openFd } from "../../ffi/fd.ts";
import { copyFdOf } from "../../ffi/process.ts";
import { PluginError, type Plugins } from "../plugins/plugins.ts";
import { ENOTSUP } from "../plugins/api.ts";
import { refuse } from "./refusal.ts";
import { enterNamespaceFd, type NsDumpContext, registerNamespaceKind } from "./namespaces.ts";
import type { FrozenTree } from "../dump/freeze.ts";
import type { RestoreTaskImages } from "../restore/images.ts";
import { takeFromCriu } from "./files.ts";
import { idsInUserNamespaceOf, userNamespaceRootOf } from "./userns.ts";
import { archiveTmpfs, extractTmpfs } from "./tmpfs_tar.ts";
import { boundPtsIndex, makeBoundPty } from "./devpts_bind.ts";
import { ptyMastersOf } from "./pty.ts";
import { Agent } from "../agent.ts";
import { withSleepHelper } from "./sleep_helper.ts";
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
  overlay: 17,
  tracefs: 19,
  cgroup2: 23,
};
const FSTYPE_OVERLAY = 17;
const FSTYPE_DEVPTS = 6;
/** The options of an overlayfs that name directories (as paths of the tree's view). */
const OVERLAY_PATH_OPTIONS = ["lowerdir", "upperdir", "workdir"];
const FSTYPE_UNSUPPORTED = 0;
const FSTYPE_TMPFS = 5;
/** CRIU's "auto": a filesystem mounted again from its source by its kernel name (fsname). */
const FSTYPE_AUTO = 16;
/** The key CRIU writes for a disk filesystem given back by a device (--external dev[...]). */
const EXTERNAL_DEV = "CRIU:EXTERNAL_DEV";
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

// ---------------------------------------------------------------------------------------------
// Options: --external mnt[A]:B and --ext-mount-map A:B (dump: mountpoint → key; restore: key → path);
// --external mnt[] (also mnt[]:m, mnt[]:s) and --ext-mount-map auto: mounts found in criu's own
// namespace are taken as external by themselves.

/** The key CRIU writes for a mount found external by itself; its source then holds the host path. */
const AUTODETECTED = "CRIU:AUTOGENERATED";

interface ExternalOptions {
  /** mnt[A]:B and A:B pairs. */
  byKey: Map<string, string>;
  /** dev[A]:B pairs: at dump "MAJOR/MINOR" → key, at restore key → device path. */
  devices: Map<string, string>;
  /** --enable-fs: filesystems mounted again from their source ("all" for any). */
  enableFs: readonly string[];
  auto: boolean;
  masters: boolean;
  sharing: boolean;
}

function externalOptions(opts: RunOptions | undefined): ExternalOptions {
  const out: ExternalOptions = {
    byKey: new Map(),
    devices: new Map(),
    enableFs: opts?.enableFs ?? [],
    auto: opts?.autoDetectExtMounts ?? false,
    masters: opts?.enableExternalMasters ?? false,
    sharing: opts?.enableExternalSharing ?? false,
  };
  for (const e of opts?.external ?? []) {
    const auto = /^mnt\[\](?::(.*))?$/s.exec(e);
    if (auto) {
      out.auto = true;
      if (auto[1] === "m") out.masters = true;
      if (auto[1] === "s") out.sharing = true;
      continue;
    }
    const m = /^mnt\[([^\]]+)\]:(.+)$/s.exec(e);
    if (m) out.byKey.set(m[1]!, m[2]!);
    const d = /^dev\[([^\]]+)\]:(.+)$/s.exec(e);
    if (d) out.devices.set(d[1]!, d[2]!);
  }
  for (const m of opts?.extMountMaps ?? []) out.byKey.set(m.key, m.value);
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

/**
 * A filesystem's `uid=` and `gid=` options as the task's user namespace sees them, as CRIU saves
 * them: the kernel shows them to criu in its own ids (a tmpfs of an id-mapped container's root:
 * uid=100000), and a mount made again inside that namespace takes them in its ids (uid=0).
 */
function optionIdsInside(options: string, ids: { uid(id: number): number; gid(id: number): number }): string {
  return options.split(",").map((o) => {
    const m = /^(uid|gid)=(\d+)$/.exec(o);
    if (!m) return o;
    return `${m[1]}=${m[1] === "uid" ? ids.uid(Number(m[2])) : ids.gid(Number(m[2]))}`;
  }).join(",");
}

/**
 * A filesystem criu cannot make anew (a disk's), mounted at its root: given back at restore by a
 * device when `--external dev[MAJOR/MINOR]:KEY` names it (source "dev[KEY]"), or mounted again
 * from the same source when --enable-fs names its type, as CRIU writes both ("auto" with its
 * kernel name).
 */
function diskMount(e: mnt_entry, m: MountInfo, ext: ExternalOptions, log: Log): void {
  if (e.fstype !== FSTYPE_UNSUPPORTED) return;
  const key = e.root === "/" ? ext.devices.get(`${m.major}/${m.minor}`) : undefined;
  const name = m.fstype;
  if (key !== undefined) {
    e.extKey = EXTERNAL_DEV;
    e.source = `dev[${key}]`;
    log.info(
      `Mount ${e.mntId} (${e.mountpoint}, ${name}) is external: device ${m.major}:${m.minor} as ${key}`,
    );
  } else if (ext.enableFs.includes("all") || ext.enableFs.includes(name)) {
    // Every mount of the filesystem, binds too, as CRIU types them (its restore compares them).
    log.info(`Mount ${e.mntId} (${e.mountpoint}, ${name}) is of a filesystem mounted again from its source`);
  } else {
    return;
  }
  e.fstype = FSTYPE_AUTO;
  e.fsname = name;
}

/** `inner` is `outer` or a path under it. */
function within(inner: string, outer: string): boolean {
  return outer === "/" || inner === outer || inner.startsWith(`${outer}/`);
}

/**
 * The mount the tree already holds that `e` can be bound from: same filesystem, a root that holds
 * e's. An external mount is one too (runc's masked files are binds of its external /dev/null).
 */
function bindSource(entries: readonly mnt_entry[], e: mnt_entry): mnt_entry | undefined {
  return entries.find((s) =>
    s !== e && s.rootDev === e.rootDev && within(e.root, s.root) && (s.root !== e.root || boundFirst(s, e))
  );
}

/** Of two mounts of the same root, the one the other is bound from: an external one, else the lower id. */
function boundFirst(a: mnt_entry, b: mnt_entry): boolean {
  if (!a.extKey !== !b.extKey) return !!a.extKey;
  return a.mntId < b.mntId;
}

/**
 * The order the tree is built in: each mount after its parent and after the mount it is bound
 * from. Mount ids do not give it: the kernel hands out the lowest free id, so a mount made after
 * another may have a lower one.
 */
function buildOrder(entries: readonly mnt_entry[], fromEarlier: ReadonlyMap<number, mnt_entry>): mnt_entry[] {
  const ids = new Set(entries.map((e) => e.mntId));
  const done = new Set<number>();
  const pending = [...entries];
  const out: mnt_entry[] = [];
  const ready = (e: mnt_entry): boolean => {
    if (ids.has(e.parentMntId) && e.parentMntId !== e.mntId && !done.has(e.parentMntId)) return false;
    const src = e.extKey || e.withPlugin || fromEarlier.has(e.mntId) ? undefined : bindSource(entries, e);
    return !src || done.has(src.mntId);
  };
  while (pending.length) {
    const i = pending.findIndex(ready);
    if (i < 0) {
      throw new RestoreError(
        `The mounts ${
          pending.map((e) => e.mountpoint).join(", ")
        } wait on each other; they cannot be made in any order`,
      );
    }
    const [e] = pending.splice(i, 1);
    done.add(e!.mntId);
    out.push(e!);
  }
  return out;
}

/**
 * For a slave of a peer group outside the tree: the mount, `e` itself or another of its
 * filesystem with a root that holds e's, slave of the same group, that `reaches` the host (an
 * external mount, or the root), from which the restore takes the group back (CRIU's external
 * slavery).
 */
function masterCarrier(
  entries: readonly mnt_entry[],
  e: mnt_entry,
  reaches: (m: mnt_entry) => boolean,
): mnt_entry | undefined {
  const candidates = entries.filter((x) =>
    x.rootDev === e.rootDev && x.masterId === e.masterId && within(e.root, x.root) && reaches(x)
  );
  return candidates.find((x) => x.extKey) ?? candidates[0];
}

function isRootMount(entries: readonly mnt_entry[], e: mnt_entry): boolean {
  return !entries.some((p) => p.mntId === e.parentMntId && p !== e);
}

function describe(e: mnt_entry, fstype: string): string {
  return `the mount ${e.mountpoint} (${fstype}, mount ${e.mntId})`;
}

/**
 * A bind mount with no source in the tree and no option naming it: the plugins are asked, as CRIU
 * asks them (DUMP_EXT_MOUNT with its "./"-prefixed mountpoint and its id). True when one took it.
 */
function askPlugins(pid: number, e: mnt_entry, what: string, plugins: Plugins | undefined): boolean {
  if (!plugins?.has("DUMP_EXT_MOUNT")) return false;
  const answer = plugins.run("DUMP_EXT_MOUNT", (p) => p.dumpExtMount(`.${e.mountpoint}`, e.mntId));
  if (answer === -ENOTSUP) return false;
  if (answer < 0) {
    throw new PluginError(`A plugin failed to dump ${what} of process ${pid}: ${answer}`, -answer);
  }
  e.withPlugin = true;
  return true;
}

/**
 * An overlayfs's options with each layer directory passed through `place` (the kernel shows them
 * as they were given, octal-escaped; lowerdir holds a colon-separated list).
 */
function overlayLayers(options: string, place: (path: string) => string): string {
  return options.split(",").map((o) => {
    const eq = o.indexOf("=");
    const key = o.slice(0, eq).replace(/\+$/, "");
    if (eq < 0 || !OVERLAY_PATH_OPTIONS.includes(key)) return o;
    const value = o.slice(eq + 1).replace(
      /\\([0-7]{3})/g,
      (_, c: string) => String.fromCharCode(parseInt(c, 8)),
    );
    return `${o.slice(0, eq + 1)}${
      value.split(/(?<!\\):/).map((p) => (p.startsWith("/") ? place(p) : p)).join(":")
    }`;
  }).join(",");
}

/** The layers of an overlayfs must be in the tree's view: the restore finds them under --root. */
function checkOverlay(pid: number, e: mnt_entry, what: string): void {
  overlayLayers(e.options, (p) => {
    try {
      Deno.statSync(`/proc/${pid}/root${p}`);
    } catch {
      refuse(pid, what, `its layer ${p} is not in the tree's view`);
    }
    return p;
  });
}

/**
 * A mount of the parent namespace (the one a nested namespace starts as a copy of) that `e` can
 * be bound from: same filesystem, a root that holds e's. The restore copies it (open_tree) from
 * inside the parent namespace, in the nested namespace's first task.
 */
function earlierSource(parent: readonly mnt_entry[], e: mnt_entry): mnt_entry | undefined {
  const candidates = parent.filter((s) => s.rootDev === e.rootDev && within(e.root, s.root));
  return candidates.find((s) => s.root === e.root) ?? candidates[0];
}

/**
 * For a slave in a nested namespace: a mount of an earlier namespace that its master's group can
 * be taken from, a member of the group or a slave of it that is no member of another.
 */
function earlierMasterCarrier(earlier: readonly mnt_entry[], e: mnt_entry): mnt_entry | undefined {
  return earlier.find((x) =>
    x.rootDev === e.rootDev && within(e.root, x.root) && x.sharedId === e.masterId
  ) ??
    earlier.find((x) =>
      x.rootDev === e.rootDev && within(e.root, x.root) && x.masterId === e.masterId && !x.sharedId
    );
}

/** What a namespace's mounts are checked against: the groups of the whole tree, the mounts before it. */
interface TreeMounts {
  /** Every peer group of the tree's namespaces. */
  groups: ReadonlySet<number>;
  /** The mounts of the namespace a nested one starts as a copy of; undefined for the root's namespace. */
  parent: readonly mnt_entry[] | undefined;
  /** The mounts of every namespace saved before this one (their groups and masters can be taken). */
  earlier: readonly mnt_entry[];
}

/** Says how each mount comes back, or refuses the first that cannot. */
function checkMounts(
  pid: number,
  infos: readonly MountInfo[],
  entries: readonly mnt_entry[],
  tree: TreeMounts,
  plugins: Plugins | undefined,
  ptySlaveBinds: (e: mnt_entry, what: string) => void,
): void {
  const roots = entries.filter((e) => isRootMount(entries, e));
  if (roots.length !== 1) {
    throw new DumpError(
      `The mount namespace of process ${pid} has ${roots.length} root mounts; expected one`,
    );
  }
  entries.forEach((e, i) => {
    const what = describe(e, infos[i]!.fstype);
    if (e.deleted) refuse(pid, what, "its root was deleted");
    if (tree.parent) return checkNestedMount(pid, e, what, infos[i]!, entries, tree, roots[0]!, plugins);
    if (
      e.masterId && !tree.groups.has(e.masterId) &&
      !masterCarrier(entries, e, (m) => m === roots[0] || !!m.extKey)
    ) {
      refuse(
        pid,
        what,
        `it is a slave of peer group ${e.masterId}, which is outside the tree, and no external mount or the root of its filesystem carries that group (unreachable sharing; name it with --external mnt[${e.mountpoint}]:KEY, or try --external mnt[]:m / --enable-external-masters)`,
      );
    }
    if (e === roots[0] || e.extKey) return;
    if (e.fstype === FSTYPE_DEVPTS) ptySlaveBinds(e, what);
    checkMadeMount(pid, e, what, infos[i]!, entries, plugins);
  });
}

/**
 * A mount of a nested namespace: a copy of one of its parent's namespace (bound from it at
 * restore), or one made in it, checked as the root namespace's made mounts are (an external mount
 * found by itself, a disk, an overlay, a plugin's); a slave's master must be a group of the tree or
 * carried by an earlier mount.
 */
function checkNestedMount(
  pid: number,
  e: mnt_entry,
  what: string,
  info: MountInfo,
  entries: readonly mnt_entry[],
  tree: TreeMounts,
  root: mnt_entry,
  plugins: Plugins | undefined,
): void {
  if (
    e.masterId && !tree.groups.has(e.masterId) && !earlierMasterCarrier(tree.earlier, e) &&
    !masterCarrier(entries, e, (m) => !!m.extKey && !earlierSource(tree.parent!, m))
  ) {
    refuse(
      pid,
      what,
      `it is a slave of peer group ${e.masterId}, which is outside the tree, and no mount of the namespaces before this nested one or external mount of its own carries that group (try --external mnt[]:m)`,
    );
  }
  if (earlierSource(tree.parent!, e)) return;
  if (e === root) {
    refuse(
      pid,
      what,
      "it is the root of a nested mount namespace and no mount of its parent's namespace holds it (a nested namespace is restored from a copy of its parent's)",
    );
  }
  if (e.extKey) return;
  checkMadeMount(pid, e, what, info, entries, plugins, true);
}

/** A mount of the root's namespace that is made at restore: a bind, a plugin's, or a filesystem made anew. */
function checkMadeMount(
  pid: number,
  e: mnt_entry,
  what: string,
  info: MountInfo,
  entries: readonly mnt_entry[],
  plugins: Plugins | undefined,
  nested = false,
): void {
  if (bindSource(entries, e)) return;
  if (e.root !== "/" && askPlugins(pid, e, what, plugins)) return;
  // A mountpoint key names a mount of the root's namespace only (CRIU's rule): found by itself here.
  const nameIt = sharedHostBinds.has(e)
    ? `it is a bind of a mount of criu's namespace in peer group ${e.sharedId}, which --external mnt[] takes only with :s (--external mnt[]:s, or --enable-external-sharing)`
    : nested
    ? `it is in a nested mount namespace, where a mount from outside is found by itself with --external mnt[] (a mountpoint key names a mount of the root's namespace only, as in CRIU)`
    : `name it with --external mnt[${e.mountpoint}]:KEY`;
  if (e.fstype === FSTYPE_OVERLAY) checkOverlay(pid, e, what);
  if (e.fstype === FSTYPE_UNSUPPORTED && e.root === "/" && (e.rootDev >>> 20) !== 0) {
    const [major, minor] = [e.rootDev >>> 20, e.rootDev & 0xfffff];
    const fs = info.fstype;
    refuse(
      pid,
      what,
      `its filesystem (${fs} on device ${major}:${minor}) cannot be mounted anew (unsupported); give it back by a device with --external dev[${major}/${minor}]:KEY at dump and --external dev[KEY]:DEVPATH at restore, or mount its source again with --enable-fs ${fs}`,
    );
  }
  if (e.fstype === FSTYPE_UNSUPPORTED) {
    refuse(
      pid,
      what,
      `its source ${e.source}:${e.root} is outside the tree's view; ${nameIt}`,
    );
  }
  if (e.root !== "/") {
    refuse(
      pid,
      what,
      `only ${e.root} of the filesystem is mounted, and the filesystem's root is not in the tree; ${nameIt}`,
    );
  }
}

/** A tmpfs to archive: its entry, its line of mountinfo, and whether other mounts lie inside it. */
interface TmpfsToArchive {
  e: mnt_entry;
  info: MountInfo;
  hasChildren: boolean;
}

/**
 * Refuses a tmpfs that another mount covers: neither the tree's view nor a copy of it reaches it.
 * The refusal names the mount on top, and says what to do when the tree's namespace is a copy of
 * the host's mount tree (a rootless tree made by `unshare -U -m`, no pivot_root), where the
 * overmount is the host's own: CRIU 4.2 cannot dump it either (in a user namespace's copy the
 * mounts are locked together and the one on top cannot be unmounted), nor restore such a tree.
 */
function checkNotCovered(pid: number, m: TmpfsToArchive, infos: readonly MountInfo[]): void {
  const dev = visibleDev(`/proc/${pid}/root${m.e.mountpoint}`);
  if (dev === userDev(m.info)) return;
  const top = infos.findLast((i) => i.mountpoint === m.info.mountpoint && userDev(i) === dev) ??
    infos.findLast((i) => userDev(i) === dev);
  const by = top
    ? `mount ${top.id} (${top.fstype} at ${top.mountpoint})`
    : dev === undefined
    ? "a mount above it (its mountpoint is not in the tree's view)"
    : "another mount";
  refuse(
    pid,
    describe(m.e, "tmpfs"),
    `it is covered by ${by}, so its files cannot be read${hostCopyHint(pid)}`,
  );
}

/** The device of what `path` shows; undefined when nothing is there (a mount above hides the name). */
function visibleDev(path: string): number | undefined {
  try {
    return Deno.statSync(path).dev;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** Why a covered mount of a tree without a rootfs of its own cannot be had, and what to do; else nothing. */
function hostCopyHint(pid: number): string {
  const [theirs, ours] = [Deno.statSync(`/proc/${pid}/root`), Deno.statSync("/")];
  if (theirs.dev !== ours.dev || theirs.ino !== ours.ino) return "";
  const userns = (p: number | "self") => Deno.readLinkSync(`/proc/${p}/ns/user`);
  const locked = userns(pid) !== userns("self")
    ? ", and a user namespace's copy locks its mounts together, so the one on top cannot be unmounted to reach it (CRIU 4.2 fails there too)"
    : "";
  return `; the tree's mount namespace is a copy of the host's mount tree (its root is criu's /, with no pivot_root into a rootfs), overmount included${locked}; give the tree a mount namespace with a rootfs of its own (pivot_root), as container runtimes do, or take the overmount off the host's tree before the namespace is made`;
}

/** The device number of a mountinfo line as stat() reports it (new_encode_dev). */
function userDev(info: MountInfo): number {
  return (info.major << 8) | (info.minor & 0xff) | ((info.minor & ~0xff) << 12);
}

function archiveAll(
  pid: number,
  dir: ImageDir,
  mounts: readonly TmpfsToArchive[],
  infos: readonly MountInfo[],
  log: Log,
  idsView: number | undefined,
): void {
  mounts.forEach((m) => checkNotCovered(pid, m, infos));
  const started = performance.now();
  const userNs = idsView === undefined ? undefined : userNamespaceRootOf(idsView);
  const outcomes = withBareViews(pid, mounts, log, (views) => {
    const jobs = mounts.map((m, i) => ({
      directory: views[i] ?? `/proc/${pid}/root${m.e.mountpoint}`,
      image: dir.pathFor(KINDS.TMPFS_DEV, m.e.rootDev),
    }));
    const outcomes = archiveTmpfs(jobs, userNs?.path);
    jobs.forEach((j) => dir.noteWritten(j.image));
    return outcomes;
  });
  log.debug(`Archived ${mounts.length} tmpfs mount(s) in ${(performance.now() - started).toFixed(1)} ms`);
  outcomes.forEach((error, i) => {
    if (error !== undefined) {
      throw new DumpError(`Cannot archive the tmpfs at ${mounts[i]!.e.mountpoint}: tar said ${error}`);
    }
  });
}

/**
 * Runs `work` with, for each tmpfs that has mounts inside it, a path to that tmpfs alone (undefined
 * for the others, whose view through the tree's root is already whole). As CRIU archives such a
 * tmpfs through a copy without its children, so that files under a child's mountpoint and the
 * mountpoint directory itself are saved rather than the child's: a helper process (coreutils'
 * sleep, seized and driven by remote syscalls) joins the tree's mount namespace and holds a
 * detached copy of each (open_tree OPEN_TREE_CLONE, not recursive), which tar reaches through
 * /proc/HELPER/fd/N. open_tree only copies a mount of the caller's own namespace, hence the helper:
 * criu runs threads, and a threaded process cannot join another mount namespace.
 */
function withBareViews<T>(
  pid: number,
  mounts: readonly TmpfsToArchive[],
  log: Log,
  work: (views: readonly (string | undefined)[]) => T,
): T {
  if (!mounts.some((m) => m.hasChildren)) return work(mounts.map(() => undefined));
  return withSleepHelper("Archiving a tmpfs with mounts inside", {}, (helper, syscallAt) => {
    const agent = Agent.enter(helper, helper, syscallAt);
    joinMountNamespace(agent, pid);
    return work(mounts.map((m) => m.hasChildren ? bareCopy(agent, helper, m, log) : undefined));
  });
}

/** setns(CLONE_NEWNS) of the helper into the mount namespace of `pid`; its root and cwd become that namespace's. */
function joinMountNamespace(agent: Agent, pid: number): void {
  agent.reset();
  const ns = agent.call(
    `open(/proc/${pid}/ns/mnt)`,
    NR.open,
    agent.string(`/proc/${pid}/ns/mnt`),
    O.RDONLY | O.CLOEXEC,
    0,
  );
  const res = agent.attempt("setns(CLONE_NEWNS)", NR.setns, Number(ns), CLONE.NEWNS);
  agent.call("close", NR.close, Number(ns));
  if (isSyscallError(res)) {
    throw new DumpError(
      `Cannot enter the mount namespace of task ${pid} to archive its tmpfs mounts: ${res.message}`,
      0,
      {
        cause: res,
      },
    );
  }
}

/**
 * A detached copy of the tmpfs alone, held by the helper: its path in /proc, or undefined (with a
 * warning) when the kernel refuses the copy, e.g. for children locked by a user namespace; the
 * tmpfs is then archived as the tree sees it, its children's contents in place of what they cover.
 */
function bareCopy(agent: Agent, helper: number, m: TmpfsToArchive, log: Log): string | undefined {
  agent.reset();
  const fd = agent.attempt(
    `open_tree(${m.e.mountpoint}, OPEN_TREE_CLONE)`,
    NR.open_tree,
    AT_FDCWD,
    agent.string(m.e.mountpoint),
    OPEN_TREE.CLONE | OPEN_TREE.CLOEXEC,
  );
  if (isSyscallError(fd)) {
    log.warn(
      `Cannot copy the tmpfs at ${m.e.mountpoint} without the mounts inside it (${fd.message}); archiving it as the tree sees it, so what those mounts cover is not saved`,
    );
    return undefined;
  }
  const view = `/proc/${helper}/fd/${fd}`;
  if (Deno.statSync(view).dev !== userDev(m.info)) {
    throw new DumpError(`The copy of the tmpfs at ${m.e.mountpoint} is not that tmpfs`);
  }
  return view;
}

/**
 * The mount of criu's own namespace that `e` is a bind of, as CRIU picks it: the last of the same
 * filesystem whose root holds e's, unless one is in e's peer group or is its master.
 */
function hostMatch(host: readonly MountInfo[], e: mnt_entry): MountInfo | undefined {
  let candidate: MountInfo | undefined;
  for (const h of host) {
    if (kernelDev(h.major, h.minor) !== e.rootDev || !within(e.root, h.root)) continue;
    candidate = h;
    const shared = peerGroup(h, "shared:");
    if ((e.sharedId && e.sharedId === shared) || (e.masterId && e.masterId === shared)) return h;
  }
  return candidate;
}

function peerGroup(m: MountInfo, tag: "shared:" | "master:"): number {
  const o = m.optional.find((o) => o.startsWith(tag));
  return o ? Number(o.slice(tag.length)) : 0;
}

/** Binds of a mount of criu's namespace that --external mnt[] left out for being shared (the hint: mnt[]:s). */
const sharedHostBinds = new WeakSet<mnt_entry>();

/** --external mnt[]: each mount that is a bind of one of criu's becomes external, its source that path. */
function autodetectExternal(entries: readonly mnt_entry[], ext: ExternalOptions, log: Log): void {
  const host = parseMountinfo(Deno.readTextFileSync("/proc/self/mountinfo"));
  for (const e of entries) {
    if (isRootMount(entries, e) || e.extKey) continue;
    const match = hostMatch(host, e);
    if (!match) continue;
    if (e.sharedId && !ext.sharing) {
      sharedHostBinds.add(e);
      continue;
    }
    if (e.masterId) {
      if (!ext.masters) continue;
      if (e.masterId !== peerGroup(match, "shared:") && e.masterId !== peerGroup(match, "master:")) continue;
    }
    const rest = match.root === "/" ? e.root : e.root.slice(match.root.length);
    e.extKey = AUTODETECTED;
    e.source = match.mountpoint === "/" ? rest || "/" : `${match.mountpoint}${rest === "/" ? "" : rest}`;
    log.info(`Mount ${e.mntId} (${e.mountpoint}) is external: a bind of ${e.source}`);
  }
}

/**
 * An external mount in a peer group of criu's namespace (its source mount's group) stays in it with
 * --enable-external-sharing (or mnt[]:s); otherwise, as any other shared external mount, its group
 * is the tree's own (internal_sharing, as CRIU writes it) and comes back as a new group.
 */
function markExternalSharing(entries: readonly mnt_entry[], ext: ExternalOptions, log: Log): void {
  let host: MountInfo[] | undefined;
  for (const e of entries) {
    if (!e.extKey || !e.sharedId) continue;
    host ??= parseMountinfo(Deno.readTextFileSync("/proc/self/mountinfo"));
    const match = hostMatch(host, e);
    if (ext.sharing && match && peerGroup(match, "shared:") === e.sharedId) {
      log.info(`Mount ${e.mntId} (${e.mountpoint}) shares peer group ${e.sharedId} with ${match.mountpoint}`);
    } else {
      e.internalSharing = true;
    }
  }
}

/**
 * Refuses a bind of one pty slave of a devpts (its root `/N`) whose master no task of the tree
 * holds, as CRIU does ("Unable to find a master"): a restore makes the pty anew in the new devpts
 * and nobody would hold its other end. LXC's ttys (lxc.tty.max) are such binds, their masters in
 * its monitor. An RPC client's orphan_pts_master takes the master (runc's console).
 */
function ptySlaveBindCheck(
  pid: number,
  treePids: readonly number[],
  opts: RunOptions | undefined,
): (e: mnt_entry, what: string) => void {
  let masters: Set<number> | undefined;
  return (e, what) => {
    const index = boundPtsIndex(e.root);
    if (index === undefined || opts?.orphanPtsMaster) return;
    masters ??= new Set(treePids.flatMap((p) => {
      try {
        return ptyMastersOf(p);
      } catch {
        return []; // a zombie has no fds
      }
    }));
    if (masters.has(index)) return;
    refuse(
      pid,
      what,
      `it is pty ${index} of a devpts of the tree, whose master no task of the tree holds (CRIU: "Unable to find a master for ${e.root}"); with LXC, set lxc.tty.max = 0`,
    );
  };
}

/** One mount namespace of the tree as read at dump: its id, a task in it, its mounts. */
interface NamespaceMounts {
  id: number;
  pid: number;
  infos: MountInfo[];
  entries: mnt_entry[];
}

/**
 * The task whose user namespace a tree's mount ids (`uid=` options, tmpfs archives) are saved as
 * seen from: the root's, where every mount namespace of the tree is built again at restore (nested
 * user namespaces are entered later). None (criu's view) when the tree joins its user namespace
 * only once forked (several tasks whose PID namespace is not their own, userns.ts): its root
 * builds the mounts while still in criu's.
 */
function idsViewOf(tree: FrozenTree): number | undefined {
  const root = tree.root.pid;
  const nsPids = /^NSpid:\s+(.*)$/m.exec(Deno.readTextFileSync(`/proc/${root}/status`))?.[1]?.trim().split(
    /\s+/,
  );
  const joinsAfterForking = tree.tasks.length > 1 && nsPids?.at(-1) !== "1";
  return joinsAfterForking ? undefined : root;
}

/**
 * A namespace's mounts as read at dump. A key given by mountpoint (`--external mnt[MP]:KEY`) names a
 * mount of the root's namespace only, as in CRIU: a nested namespace may hold another mount at the
 * same place; its mounts from outside are found by themselves (--external mnt[]). `idsView`: as
 * idsViewOf gives it.
 */
function readMounts(
  id: number,
  pid: number,
  ofRoot: boolean,
  external: ExternalOptions,
  log: Log,
  idsView: number | undefined,
): NamespaceMounts {
  const infos = parseMountinfo(Deno.readTextFileSync(`/proc/${pid}/mountinfo`));
  const ids = idsView === undefined ? undefined : idsInUserNamespaceOf(idsView);
  const entries = infos.map((m) => {
    const e = toEntry(m);
    if (ids) e.options = optionIdsInside(e.options, ids);
    const key = ofRoot ? external.byKey.get(m.mountpoint) : undefined;
    if (key !== undefined) e.extKey = key;
    return e;
  });
  entries.forEach((e, i) => diskMount(e, infos[i]!, external, log));
  if (external.auto) autodetectExternal(entries, external, log);
  markExternalSharing(entries, external, log);
  return { id, pid, infos, entries };
}

/**
 * What the dump of one tree knows across its mount namespaces, which are saved one by one, the
 * root's first, then the nested ones in the order of the tree (the order the restore makes them).
 */
interface TreeDump {
  /** Every peer group of the tree's namespaces: a slave's master may be in another namespace. */
  groups: Set<number>;
  /** The mounts of each namespace saved so far, by its /proc/PID/ns/mnt link. */
  saved: Map<string, mnt_entry[]>;
  /** The tmpfs archived so far, by device: one archive each, whichever namespaces show it. */
  archived: Set<number>;
}

const treeDumps = new WeakMap<FrozenTree, TreeDump>();

function treeDumpOf(tree: FrozenTree): TreeDump {
  let d = treeDumps.get(tree);
  if (!d) treeDumps.set(tree, d = { groups: peerGroupsOf(tree), saved: new Map(), archived: new Set() });
  return d;
}

/**
 * The mounts of the namespace a nested one starts as a copy of: that of the parent of its first
 * task (which unshared, or was cloned with CLONE_NEWNS, there); none when it is not saved.
 */
function parentNamespaceMounts(ctx: NsDumpContext, tree: TreeDump): mnt_entry[] {
  const ppid = ctx.tree.tasks.find((t) => t.pid === ctx.pid)?.ppid;
  const link = ppid === undefined ? undefined : Deno.readLinkSync(`/proc/${ppid}/ns/mnt`);
  return (link !== undefined && tree.saved.get(link)) || [];
}

/** The peer groups of every mount namespace of the tree's live tasks but criu's. */
function peerGroupsOf(tree: FrozenTree): Set<number> {
  const ours = Deno.readLinkSync("/proc/self/ns/mnt");
  const seen = new Set<string>([ours]);
  const groups = new Set<number>();
  for (const t of tree.tasks) {
    if (t.state === "zombie") continue;
    const link = Deno.readLinkSync(`/proc/${t.pid}/ns/mnt`);
    if (seen.has(link)) continue;
    seen.add(link);
    for (const m of parseMountinfo(Deno.readTextFileSync(`/proc/${t.pid}/mountinfo`))) {
      const group = peerGroup(m, "shared:");
      if (group) groups.add(group);
    }
  }
  return groups;
}

/**
 * Saves one mount namespace of the tree, as CRIU 4.2 does: its mountpoints-ID.img (mount ids and
 * peer groups are the kernel's, so they hold across namespaces), and an archive of each tmpfs no
 * namespace saved before has shown whole.
 */
function dumpMounts(ctx: NsDumpContext): void {
  const { dir, log } = ctx;
  const tree = treeDumpOf(ctx.tree);
  const idsView = idsViewOf(ctx.tree);
  const n = readMounts(ctx.id, ctx.pid, ctx.ofRoot, externalOptions(ctx.options), log, idsView);
  const parent = ctx.ofRoot ? undefined : parentNamespaceMounts(ctx, tree);
  const earlier = [...tree.saved.values()].flat();
  const ptySlaveBinds = ptySlaveBindCheck(n.pid, ctx.tree.tasks.map((t) => t.pid), ctx.options);
  checkMounts(
    n.pid,
    n.infos,
    n.entries,
    { groups: tree.groups, parent, earlier },
    ctx.plugins,
    ptySlaveBinds,
  );
  const tmpfs: TmpfsToArchive[] = [];
  n.entries.forEach((e, i) => {
    if (
      e.fstype !== FSTYPE_TMPFS || e.root !== "/" || tree.archived.has(e.rootDev) || e.extKey || e.withPlugin
    ) {
      return;
    }
    tree.archived.add(e.rootDev);
    const info = n.infos[i]!;
    tmpfs.push({ e, info, hasChildren: n.infos.some((c) => c.parentId === info.id && c.id !== info.id) });
  });
  archiveAll(n.pid, dir, tmpfs, n.infos, log, idsView);
  dir.write(KINDS.MNTS, n.id, n.entries);
  tree.saved.set(Deno.readLinkSync(`/proc/${ctx.pid}/ns/mnt`), n.entries);
  log.info(
    `Saved ${n.entries.length} mount(s) of the mount namespace ${n.id} (process ${n.pid}), ${tmpfs.length} tmpfs archive(s)`,
  );
}

// ---------------------------------------------------------------------------------------------
// Restore

interface MountPlan {
  entries: mnt_entry[];
  /** The entries in the order they are made (see buildOrder). */
  order: mnt_entry[];
  rootDir: string;
  /** Each external mount's source path, by mnt_id. */
  externalPaths: Map<number, string>;
  /** The source each disk filesystem is mounted from again (a device path), by mnt_id. */
  devices: Map<number, string>;
  dir: ImageDir;
  /** For the mounts a plugin took at dump (RESTORE_EXT_MOUNT). */
  plugins: Plugins | undefined;
  /**
   * Mounts that are slaves of a peer group outside the tree, by mnt_id: the path in criu's
   * namespace whose mount carries that group (an external mount's source, or --root), as CRIU
   * takes it.
   */
  masterSources: Map<number, string>;
  /** External mounts that stay in a peer group of criu's namespace: their source path, by mnt_id. */
  sharingSources: Map<number, string>;
  /**
   * For a nested namespace (made from a copy of its parent's tree): the mount of an earlier
   * namespace each of its mounts is bound from, by mnt_id (see earlierSource); empty for the root's.
   */
  fromEarlier: Map<number, mnt_entry>;
  /** The namespaces of the tree restored so far (their peer groups), and where this one goes when built. */
  tree: TreeRestore;
  nested: boolean;
  log: Log;
}

/** A mount namespace built: its mounts, and the task holding an O_PATH fd to each, by mnt_id. */
interface BuiltNamespace {
  entries: readonly mnt_entry[];
  /** The helper binds peer groups were founded on (their fds in `fds` too), see TreeBuilder.#helperFor. */
  helpers: readonly mnt_entry[];
  pid: number;
  fds: ReadonlyMap<number, number>;
}

/** What the restore of one tree knows across its mount namespaces, planned and built in fork order. */
interface TreeRestore {
  /** The mounts of each namespace planned so far, by id. */
  planned: Map<number, mnt_entry[]>;
  built: BuiltNamespace[];
  /** Every peer group of the tree's namespaces (a slave's master may be in any of them). */
  groups: ReadonlySet<number>;
  /** The mounts of every namespace of the tree, as the images hold them (a group's slaves anywhere). */
  all: readonly mnt_entry[];
  /**
   * Slaves of a group that only a namespace built later holds, left private until that one is
   * built (see TreeBuilder.#lateMasters).
   */
  lateSlaves: mnt_entry[];
}

const treeRestores = new WeakMap<readonly RestoreTaskImages[], TreeRestore>();

function treeRestoreOf(tasks: readonly RestoreTaskImages[], dir: ImageDir): TreeRestore {
  let r = treeRestores.get(tasks);
  if (!r) {
    const all = treeMounts(tasks, dir);
    const groups = new Set(all.filter((e) => e.sharedId).map((e) => e.sharedId));
    treeRestores.set(tasks, r = { planned: new Map(), built: [], groups, all, lateSlaves: [] });
  }
  return r;
}

/** The mounts of every mount namespace the tree's tasks are in, from their images. */
function treeMounts(tasks: readonly RestoreTaskImages[], dir: ImageDir): mnt_entry[] {
  const ids = new Set(
    tasks.map((t) => t.ids?.mntNsId).filter((id) => id !== undefined && dir.has(KINDS.MNTS, id)),
  );
  return [...ids].flatMap((id) => dir.read<mnt_entry>(KINDS.MNTS, id!));
}

/**
 * The slaves of peer group `group`, in any namespace of the tree, whose root no member's root
 * holds: none can join the group from a member (the kernel's rule for MOVE_MOUNT_SET_GROUP), so
 * the group is founded on a helper bind whose root holds them all (see TreeBuilder.#helperFor).
 */
function uncoveredSlaves(all: readonly mnt_entry[], group: number): mnt_entry[] {
  const members = all.filter((x) => x.sharedId === group);
  return all.filter((s) =>
    s.masterId === group && !members.some((m) => m.rootDev === s.rootDev && within(s.root, m.root))
  );
}

/**
 * The source a disk filesystem is mounted from again, as CRIU resolves it: the device that
 * `--external dev[KEY]:DEVPATH` gives for its "dev[KEY]" source, else its source itself when that
 * is still the block device it was (or it had none: an anonymous device).
 */
function deviceFor(e: mnt_entry, ext: ExternalOptions): string {
  const [major, minor] = [e.rootDev >>> 20, e.rootDev & 0xfffff];
  if (major === 0 && e.extKey !== EXTERNAL_DEV) return e.source;
  const key = /^dev\[(.+)\]$/s.exec(e.source)?.[1];
  const given = key === undefined ? undefined : ext.devices.get(key);
  if (given !== undefined) return given;
  try {
    const st = Deno.statSync(e.source);
    const rdev = st.rdev ?? 0;
    const [maj, min] = [(rdev >>> 8) & 0xfff, (rdev & 0xff) | ((rdev >>> 12) & 0xfff00)];
    if (st.isBlockDevice && maj === major && min === minor) return e.source;
  } catch { /* not there: said below */ }
  const what = `the mount ${e.mountpoint} (${e.fsname}, mount ${e.mntId}, device ${major}:${minor})`;
  throw new RestoreError(
    key === undefined
      ? `No device for ${what}: its source ${e.source} is not that block device`
      : `No device for ${what}; give it with --external dev[${key}]:DEVPATH`,
  );
}

function readPlanned(dir: ImageDir, id: number): { entries: mnt_entry[]; root: mnt_entry } {
  const entries = dir.read<mnt_entry>(KINDS.MNTS, id).sort((a, b) => a.mntId - b.mntId);
  const roots = entries.filter((e) => isRootMount(entries, e));
  if (roots.length !== 1) {
    throw new RestoreError(`mountpoints-${id}.img holds ${roots.length} root mounts; expected one`);
  }
  return { entries, root: roots[0]! };
}

function planRestore(
  dir: ImageDir,
  id: number,
  tree: TreeRestore,
  opts: RunOptions | undefined,
  plugins: Plugins | undefined,
  log: Log,
): MountPlan {
  const { entries, root } = readPlanned(dir, id);
  const image = `mountpoints-${id}.img`;
  const roots = [root];
  if (!opts?.root) throw new RestoreError("The --root option is required to restore a mount namespace");
  let rootDir: string;
  try {
    rootDir = Deno.realPathSync(opts.root);
  } catch {
    throw new RestoreError(`The --root directory ${opts.root} does not exist`);
  }
  const external = externalOptions(opts);
  const externalPaths = new Map<number, string>();
  const devices = new Map<number, string>();
  for (const e of entries) {
    if (e !== roots[0]) planMadeMount(e, entries, { external, externalPaths, devices, plugins, dir, image });
  }
  const { masterSources, sharingSources } = hostSources(entries, externalPaths, tree, roots[0]!, rootDir);
  tree.planned.set(id, entries);
  return {
    entries,
    order: buildOrder(entries, new Map()),
    rootDir,
    externalPaths,
    devices,
    dir,
    plugins,
    masterSources,
    sharingSources,
    fromEarlier: new Map(),
    tree,
    nested: false,
    log,
  };
}

/**
 * The paths of criu's namespace whose mounts carry the host's groups: for each slave of a group
 * outside the tree, an external mount's source (or, for the root's namespace, --root) carrying it
 * (CRIU's external masters); for each external mount that stays in a host group, its source.
 */
function hostSources(
  entries: readonly mnt_entry[],
  externalPaths: ReadonlyMap<number, string>,
  tree: TreeRestore,
  root: mnt_entry | undefined,
  rootDir: string,
): { masterSources: Map<number, string>; sharingSources: Map<number, string> } {
  const masterSources = new Map<number, string>();
  const groups = new Set(entries.filter((e) => e.sharedId).map((e) => e.sharedId));
  for (const e of entries) {
    // A master in another namespace of the tree is taken there (see TreeBuilder.#slaveOf).
    if (!e.masterId || groups.has(e.masterId) || tree.groups.has(e.masterId)) continue;
    const x = masterCarrier(entries, e, (m) => m === root || externalPaths.has(m.mntId));
    if (x) masterSources.set(e.mntId, x === root ? rootDir : externalPaths.get(x.mntId)!);
  }
  const sharingSources = new Map<number, string>();
  for (const [id, path] of externalPaths) {
    const e = entries.find((x) => x.mntId === id)!;
    if (e.sharedId && !e.internalSharing) sharingSources.set(id, path);
  }
  return { masterSources, sharingSources };
}

/** Where the made mounts of a namespace come from: filled in by planMadeMount. */
interface MadeMounts {
  external: ExternalOptions;
  /** Each external mount's source path, by mnt_id. */
  externalPaths: Map<number, string>;
  /** The source each disk filesystem is mounted from again, by mnt_id. */
  devices: Map<number, string>;
  plugins: Plugins | undefined;
  dir: ImageDir;
  image: string;
}

/**
 * How a mount that is neither the root nor a copy of an earlier namespace's comes back: from a
 * plugin, an external path, a device, a bind of another of its namespace, or made anew; refused
 * when the options or images it needs are missing.
 */
function planMadeMount(e: mnt_entry, entries: readonly mnt_entry[], made: MadeMounts): void {
  const { external, externalPaths, devices, plugins, dir, image } = made;
  if (e.withPlugin) {
    if (!plugins?.has("RESTORE_EXT_MOUNT")) {
      throw new RestoreError(
        `A plugin took the mount ${e.mountpoint} (mount ${e.mntId}) at dump; load one that restores it with -L`,
      );
    }
  } else if (e.extKey === AUTODETECTED) {
    if (!external.auto) {
      throw new RestoreError(
        `The mount ${e.mountpoint} (mount ${e.mntId}) was found external by itself at dump (a bind of ${e.source}); restore it with --ext-mount-map auto or --external mnt[]`,
      );
    }
    externalPaths.set(e.mntId, e.source);
  } else if (
    e.extKey === EXTERNAL_DEV || (e.fstype === FSTYPE_AUTO && !e.extKey && !bindSource(entries, e))
  ) {
    devices.set(e.mntId, deviceFor(e, external));
  } else if (e.extKey) {
    const path = external.byKey.get(e.extKey);
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

/** The mount namespace of the parent of the first task in namespace `id` (which makes it from a copy of that one). */
function parentNamespaceOf(tasks: readonly RestoreTaskImages[], id: number): number | undefined {
  const first = tasks.find((t) => !t.zombie && !t.helper && t.ids?.mntNsId === id);
  return tasks.find((t) => t.entry.pid === first?.entry.ppid)?.ids?.mntNsId;
}

/**
 * The plan of a nested namespace: its first task is cloned with CLONE_NEWNS from a task of an
 * earlier namespace, so it starts with a copy of that tree, whose mounts its own are bound from
 * (its root too); what no earlier mount holds is made anew (a tmpfs filled from its archive, proc...)
 * or bound from a mount of its own.
 */
function planNested(
  dir: ImageDir,
  id: number,
  tasks: readonly RestoreTaskImages[],
  tree: TreeRestore,
  opts: RunOptions | undefined,
  plugins: Plugins | undefined,
  log: Log,
): MountPlan {
  const { entries, root } = readPlanned(dir, id);
  const made: MadeMounts = {
    external: externalOptions(opts),
    externalPaths: new Map(),
    devices: new Map(),
    plugins,
    dir,
    image: `mountpoints-${id}.img`,
  };
  const parent = tree.planned.get(parentNamespaceOf(tasks, id) ?? -1);
  if (!parent) {
    throw new RestoreError(
      `The nested mount namespace ${id} was made from one the images do not hold (criu's own); it cannot be restored`,
    );
  }
  const fromEarlier = new Map<number, mnt_entry>();
  for (const e of entries) {
    const src = earlierSource(parent, e);
    if (src) {
      fromEarlier.set(e.mntId, src);
      continue;
    }
    const what = `The mount ${e.mountpoint} (mount ${e.mntId}) of the nested mount namespace ${id}`;
    if (e === root) {
      throw new RestoreError(`${what} is its root, and no mount of an earlier namespace holds it`);
    }
    planMadeMount(e, entries, made);
  }
  tree.planned.set(id, entries);
  // A nested namespace's own external mounts carry host groups as the root namespace's do (not its root).
  const own = entries.filter((e) => !fromEarlier.has(e.mntId));
  const { masterSources, sharingSources } = hostSources(own, made.externalPaths, tree, undefined, "");
  return {
    entries,
    order: buildOrder(entries, fromEarlier),
    rootDir: ".",
    externalPaths: made.externalPaths,
    devices: made.devices,
    dir,
    plugins,
    masterSources,
    sharingSources,
    fromEarlier,
    tree,
    nested: true,
    log,
  };
}

/**
 * A detached copy (an fd of criu's) of what `mount` puts on a scratch directory (or file) of criu's
 * namespace; the scratch mount and its place go at once.
 */
function madeInScratch(isDir: boolean, mount: (place: string) => void): number {
  const scratch = Deno.makeTempDirSync({ prefix: "criu-ts-mnt-" });
  const place = isDir ? `${scratch}/mnt` : `${scratch}/file`;
  try {
    if (isDir) Deno.mkdirSync(place);
    else Deno.writeTextFileSync(place, "");
    mount(place);
    return cloneMountTree(place);
  } finally {
    while (detachMount(place));
    Deno.removeSync(scratch, { recursive: true });
  }
}

/** Builds the tree in the root task (see the top of this file). */
class TreeBuilder {
  /** An O_PATH fd in the root task to each mount made (and, nested, each earlier one reached), by mnt_id. */
  #fds = new Map<number, number>();
  /** An fd in the root task to a mount of an earlier namespace itself (its peer group), by mnt_id. */
  #foreign = new Map<number, number>();
  /** Nested: the detached copies of the parent's mounts not attached yet, by the mnt_id they become. */
  #clones = new Map<number, number>();
  /** An O_PATH fd in the root task to a mount of criu's namespace carrying an outside group, by path. */
  #hostMasters = new Map<string, number>();
  #root: Agent;
  #plan: MountPlan;
  /** Tmpfs mounts made and not filled yet, by mnt_id: their archives are extracted together. */
  #unfilled = new Map<number, { e: mnt_entry; target: string }>();
  #byId: Map<number, mnt_entry>;
  /** Helper binds made here that peer groups are founded on, their fds in #fds (by a negative id). */
  #helpers: mnt_entry[] = [];

  constructor(root: Agent, plan: MountPlan) {
    this.#root = root;
    this.#plan = plan;
    this.#byId = new Map(plan.entries.map((e) => [e.mntId, e]));
  }

  /** Builds the tree; returns what later namespaces take groups from (the fds stay open until fill). */
  build(): BuiltNamespace {
    const { entries, rootDir, nested } = this.#plan;
    const r = this.#root;
    r.reset();
    r.call("mount(/, rslave)", NR.mount, 0, r.string("/"), 0, MS.REC | MS.SLAVE, 0);
    const root = entries.find((e) => isRootMount(entries, e))!;
    if (nested) {
      this.#cloneEarlierSources();
      this.#attachNestedRoot(root);
    } else {
      this.#mount(root, `mount(${rootDir}, bind)`, rootDir, rootDir, 0, MS.BIND, "");
    }
    for (const e of this.#plan.order) {
      if (e === root) continue;
      if (this.#waitsOnFill(e)) this.#fill();
      this.#make(e);
    }
    this.#fill();
    for (const e of entries) this.#setFlags(e);
    this.#reachHostMasters();
    this.#pivot(rootDir);
    for (const e of entries) this.#setAttr(e, 0, 0, MS.PRIVATE);
    this.#peerGroups();
    this.#lateMasters();
    const own = new Map([...entries, ...this.#helpers].map((e) => [e.mntId, this.#fds.get(e.mntId)!]));
    for (const [id, fd] of this.#fds) if (!own.has(id)) r.call("close", NR.close, fd);
    for (const fd of [...this.#hostMasters.values(), ...this.#foreign.values(), ...this.#clones.values()]) {
      r.call("close", NR.close, fd);
    }
    const built = { entries, helpers: this.#helpers, pid: r.pid, fds: own };
    this.#plan.tree.built.push(built);
    return built;
  }

  /**
   * The copies of the parent namespace's mounts that the nested one's are bound from, made by its
   * first task from inside the parent namespace itself (setns there and back): open_tree only
   * copies a mount of the caller's namespace, and the copy of the parent's tree the task starts
   * with may have them covered (PrivateTmp='s bind over /tmp). Each is a detached mount (an fd),
   * attached at its place later; the task comes back at its own namespace's root, the copy's.
   */
  #cloneEarlierSources(): void {
    const { fromEarlier, tree } = this.#plan;
    if (fromEarlier.size === 0) return;
    const r = this.#root;
    const parent = tree.built.find((b) => b.fds.has(fromEarlier.values().next().value!.mntId))!;
    const own = this.#nsFdInTask(r.pid);
    try {
      this.#setns(this.#nsFdInTask(parent.pid), "its parent's");
    } catch (e) {
      r.call("close", NR.close, own);
      throw e;
    }
    try {
      for (const [id, src] of fromEarlier) {
        const e = this.#byId.get(id)!;
        const clone = this.#cloneMount(e, src, this.#foreignFd(src));
        this.#clones.set(id, clone);
        // A copy of a shared mount is its peer: private at once, so that nothing made in the
        // namespace being built reaches the parent's (its groups come back at the end).
        this.#setAttr(e, 0, 0, MS.PRIVATE, clone);
      }
    } finally {
      this.#setns(own, "its own");
    }
  }

  /** An fd in the building task on the mount namespace of task `pid` (criu's copy handed in). */
  #nsFdInTask(pid: number): number {
    const ours = openFd(`/proc/${pid}/ns/mnt`, OPEN.RDONLY | OPEN.CLOEXEC);
    try {
      return takeFromCriu({ agent: this.#root }, ours);
    } finally {
      closeFd(ours);
    }
  }

  /** setns(CLONE_NEWNS) of the building task onto `fd`, which it closes. */
  #setns(fd: number, whose: string): void {
    enterNamespaceFd(
      this.#root,
      fd,
      CLONE.NEWNS,
      `A nested mount namespace's first task cannot enter ${whose} namespace`,
    );
  }

  /**
   * The root of a nested namespace: a copy of its source (open_tree) attached on top of the task's
   * root, its cwd moved into it first: the mounts below are made by paths relative to it (rootDir
   * "."), and the pivot then drops the copy of the parent's tree from under it.
   */
  #attachNestedRoot(root: mnt_entry): void {
    const r = this.#root;
    const tree = this.#clones.get(root.mntId)!;
    this.#clones.delete(root.mntId);
    r.call("fchdir(new root)", NR.fchdir, tree);
    r.reset();
    const res = r.attempt(
      "move_mount(new root, /)",
      NR.move_mount,
      tree,
      r.string(""),
      AT_FDCWD,
      r.string("/"),
      MOVE_MOUNT.F_EMPTY_PATH,
    );
    if (isSyscallError(res)) {
      throw new RestoreError(`Cannot attach the root of a nested mount namespace: ${res.message}`, 0, {
        cause: res,
      });
    }
    this.#fds.set(root.mntId, tree);
  }

  /** A detached copy (open_tree OPEN_TREE_CLONE) of `e`'s part of the mount `src` (through `fd`): its fd. */
  #cloneMount(e: mnt_entry, src: mnt_entry, fd = this.#fds.get(src.mntId)!): number {
    const r = this.#root;
    const sub = e.root.slice(src.root === "/" ? 0 : src.root.length).replace(/^\/+/, "");
    r.reset();
    const tree = r.attempt(
      `open_tree(${src.mountpoint}, ${sub || "."})`,
      NR.open_tree,
      fd,
      r.string(sub),
      OPEN_TREE.CLONE | OPEN_TREE.CLOEXEC | (sub ? 0 : AT_EMPTY_PATH),
    );
    if (isSyscallError(tree)) {
      throw new RestoreError(
        `Cannot restore the mount ${e.mountpoint} (bind from mount ${src.mntId}): ${tree.message}`,
        0,
        {
          cause: tree,
        },
      );
    }
    return Number(tree);
  }

  /**
   * A bind of `src` at e's place: its copy attached there (move_mount), the one made in the parent
   * namespace for a mount of a nested one (see #cloneEarlierSources).
   */
  #bindFrom(e: mnt_entry, src: mnt_entry, target: string): void {
    const r = this.#root;
    const tree = this.#clones.get(e.mntId) ?? this.#cloneMount(e, src);
    this.#clones.delete(e.mntId);
    r.reset();
    const res = r.attempt(
      `move_mount(${target})`,
      NR.move_mount,
      tree,
      r.string(""),
      AT_FDCWD,
      r.string(target),
      MOVE_MOUNT.F_EMPTY_PATH,
    );
    if (isSyscallError(res)) {
      r.call("close", NR.close, tree);
      throw new RestoreError(
        `Cannot restore the mount ${e.mountpoint} (bind from mount ${src.mntId}): ${res.message}`,
        0,
        {
          cause: res,
        },
      );
    }
    this.#fds.set(e.mntId, tree);
  }

  /** Where criu reaches a path of the tree being built: under --root, or (nested) under the task's cwd. */
  #fromCriu(target: string): string {
    const pid = this.#root.pid;
    return this.#plan.nested ? `/proc/${pid}/cwd/${target}` : `/proc/${pid}/root${target}`;
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
    const res = r.attempt(
      `mount(${target})`,
      NR.mount,
      r.string(source),
      r.string(target),
      fs,
      flags,
      data ? r.string(data) : 0,
    );
    if (isSyscallError(res)) {
      throw new RestoreError(`Cannot restore the mount ${e.mountpoint} (${what}): ${res.message}`, 0, {
        cause: res,
      });
    }
    this.#keep(e, target);
  }

  /** Keeps an O_PATH fd on the mount just made at `target`. */
  #keep(e: mnt_entry, target: string): void {
    const r = this.#root;
    r.reset();
    const fd = r.attempt(`open(${target})`, NR.open, r.string(target), O.PATH | O.CLOEXEC | O.NOFOLLOW, 0);
    if (isSyscallError(fd)) {
      throw new RestoreError(`Cannot open the new mount ${e.mountpoint}: ${fd.message}`, 0, { cause: fd });
    }
    this.#fds.set(e.mntId, Number(fd));
  }

  #make(e: mnt_entry): void {
    const target = this.#target(e);
    if (e.withPlugin) return this.#fromPlugin(e, target);
    const { nested } = this.#plan;
    const ext = this.#plan.externalPaths.get(e.mntId);
    // A root in a user namespace of its own cannot bind it either: its copy of criu's mounts is
    // locked (the kernel refuses a bind of a mount with locked mounts inside).
    if (ext !== undefined && (nested || idsInUserNamespaceOf(this.#root.pid) !== undefined)) {
      return this.#attachFromCriu(e, target, `bind from ${ext}`, () => cloneMountTree(ext));
    }
    if (ext !== undefined) return this.#mount(e, `bind from ${ext}`, ext, target, 0, MS.BIND, "");
    const src = this.#plan.fromEarlier.get(e.mntId) ?? bindSource(this.#plan.entries, e);
    if (src) return this.#bindFrom(e, src, target);
    const fstype = e.fstype === FSTYPE_AUTO ? e.fsname : FSTYPE_NAMES.get(e.fstype)!;
    // Read-only from the start but for what is filled or layered after it is mounted: a remount
    // would change a superblock shared with criu's (a sysfs of criu's network namespace), and the
    // kernel refuses it for a sysfs or proc made in a user namespace (EPERM).
    const later = e.fstype === FSTYPE_TMPFS || e.fstype === FSTYPE_OVERLAY;
    const sbFlags = later ? e.sbFlags & ~MS.RDONLY : e.sbFlags;
    const device = this.#plan.devices.get(e.mntId);
    const source = device ?? e.source;
    if (e.fstype === FSTYPE_OVERLAY) {
      this.#mountInView(e, fstype, sbFlags);
    } else if (device !== undefined && nested) {
      this.#attachFromCriu(
        e,
        target,
        `${fstype} from ${device}`,
        () => madeInScratch(true, (place) => mountInCriu(device, place, fstype, sbFlags, e.options)),
      );
    } else {
      this.#mount(e, `${fstype} from ${source}`, source, target, fstype, sbFlags, e.options);
    }
    if (e.fstype === FSTYPE_TMPFS) this.#unfilled.set(e.mntId, { e, target });
    if (e.fstype === FSTYPE_DEVPTS) this.#makeBoundSlaves(e);
    if (later && (e.sbFlags & MS.RDONLY)) {
      this.#fill();
      const r = this.#root;
      r.reset();
      // A remount sets the mount's flags too, and in a user namespace a new mount may inherit the
      // locks of criu's (nosuid, nodev, noexec): asked without them, EPERM.
      const kept = e.flags & (MS.NOSUID | MS.NODEV | MS.NOEXEC);
      r.call(
        `remount ${e.mountpoint} ro`,
        NR.mount,
        0,
        r.string(`/proc/self/fd/${this.#fds.get(e.mntId)}`),
        0,
        MS.REMOUNT | e.sbFlags | kept,
        e.options ? r.string(e.options) : 0,
      );
    }
  }

  /**
   * A new devpts has no slaves yet, so a bind of one (runc's /dev/console) would have no source: its
   * pty is made now, through the devpts's own ptmx, as CRIU's devpts_restore does (devpts_bind.ts).
   */
  #makeBoundSlaves(devpts: mnt_entry): void {
    const here = `/proc/${this.#root.pid}/fd/${this.#fds.get(devpts.mntId)}`;
    for (const e of this.#plan.entries) {
      const index = boundPtsIndex(e.root);
      if (index === undefined || bindSource(this.#plan.entries, e) !== devpts) continue;
      try {
        Deno.statSync(`${here}/${index}`);
        continue; // already there
      } catch {
        makeBoundPty(index, `${here}/ptmx`, e.mountpoint);
      }
    }
  }

  /**
   * A mount a plugin took at dump. The plugin mounts it in criu's namespace, on a path of ours of
   * the kind of the target (directory or file) as CRIU's yard would be; criu takes a detached copy
   * of it (open_tree) and the root task attaches that copy at the target (move_mount), reaching it
   * through /proc/CRIU/fd/N, since a bind by path cannot cross mount namespaces.
   */
  #fromPlugin(e: mnt_entry, target: string): void {
    const { plugins } = this.#plan;
    const isDir = Deno.statSync(this.#fromCriu(target)).isDirectory;
    this.#attachFromCriu(e, target, "a plugin's mount", () =>
      madeInScratch(isDir, (place) => {
        const ret = plugins!.run("RESTORE_EXT_MOUNT", (p) => p.restoreExtMount(e.mntId, place, "/"));
        if (ret !== 0) {
          throw new RestoreError(
            ret === -ENOTSUP
              ? `No plugin restores the mount ${e.mountpoint} (mount ${e.mntId}); load the one that dumped it with -L`
              : `A plugin failed to restore the mount ${e.mountpoint} (mount ${e.mntId}): ${ret}`,
            ret === -ENOTSUP ? 0 : -ret,
          );
        }
      }));
  }

  /**
   * A mount criu makes in its own namespace (`make` returns a detached copy of it, an fd of
   * criu's), attached at `target` by the building task, which takes the fd (takeFromCriu): what a
   * plugin mounts, and for a nested namespace an external bind or a device, whose paths are of
   * criu's view, not of the namespace's. A detached mount crosses namespaces.
   */
  #attachFromCriu(e: mnt_entry, target: string, what: string, make: () => number): void {
    let ours: number;
    try {
      ours = make();
    } catch (err) {
      if (!isSyscallError(err)) throw err;
      throw new RestoreError(`Cannot restore the mount ${e.mountpoint} (${what}): ${err.message}`, 0, {
        cause: err,
      });
    }
    let fd: number;
    try {
      fd = takeFromCriu({ agent: this.#root }, ours);
    } finally {
      closeFd(ours);
    }
    const r = this.#root;
    r.reset();
    const res = r.attempt(
      `move_mount(${target})`,
      NR.move_mount,
      fd,
      r.string(""),
      AT_FDCWD,
      r.string(target),
      MOVE_MOUNT.F_EMPTY_PATH,
    );
    if (isSyscallError(res)) {
      r.call("close", NR.close, fd);
      throw new RestoreError(`Cannot attach the mount ${e.mountpoint} (${what}): ${res.message}`, 0, {
        cause: res,
      });
    }
    this.#fds.set(e.mntId, fd);
  }

  /**
   * A mount whose options name paths of the tree's view (an overlayfs's layers): made with the root
   * task chrooted into --root, so that the kernel resolves them there and shows them as they were.
   */
  #mountInView(e: mnt_entry, fstype: string, flags: number): void {
    const r = this.#root;
    r.reset();
    const home = r.attempt("open(/)", NR.open, r.string("/"), O.PATH | O.DIRECTORY | O.CLOEXEC, 0);
    if (isSyscallError(home)) {
      throw new RestoreError(`Cannot open the root directory of the restored root: ${home.message}`, 0, {
        cause: home,
      });
    }
    // A nested namespace's mounts are made relative to the cwd, its new root: kept to come back to.
    r.reset();
    const here = r.call("open(.)", NR.open, r.string("."), O.PATH | O.DIRECTORY | O.CLOEXEC, 0);
    try {
      r.reset();
      r.call(`chroot(${this.#plan.rootDir})`, NR.chroot, r.string(this.#plan.rootDir));
      r.reset();
      const res = r.attempt(
        `mount(${e.mountpoint})`,
        NR.mount,
        r.string(e.source),
        r.string(e.mountpoint),
        r.string(fstype),
        flags,
        r.string(e.options),
      );
      if (isSyscallError(res)) {
        throw new RestoreError(`Cannot restore the mount ${e.mountpoint} (${fstype}): ${res.message}`, 0, {
          cause: res,
        });
      }
    } finally {
      r.call("fchdir(/)", NR.fchdir, Number(home));
      r.reset();
      r.call("chroot(.)", NR.chroot, r.string("."));
      r.call("fchdir(cwd)", NR.fchdir, Number(here));
      r.call("close", NR.close, Number(home));
      r.call("close", NR.close, Number(here));
    }
    this.#keep(e, this.#target(e));
  }

  /**
   * Whether `e` needs the files of a tmpfs not filled yet: its mountpoint lies in one (a directory
   * of the archive), it binds a directory of one, or it is a mount whose options name paths.
   */
  #waitsOnFill(e: mnt_entry): boolean {
    if (this.#unfilled.size === 0) return false;
    if (e.fstype === FSTYPE_OVERLAY || e.withPlugin) return true;
    const seen = new Set<number>();
    for (let p = this.#byId.get(e.parentMntId); p && !seen.has(p.mntId); p = this.#byId.get(p.parentMntId)) {
      if (this.#unfilled.has(p.mntId)) return true;
      seen.add(p.mntId);
    }
    const elsewhere = this.#plan.externalPaths.has(e.mntId) || this.#plan.fromEarlier.has(e.mntId);
    const src = elsewhere ? undefined : bindSource(this.#plan.entries, e);
    return !!src && this.#unfilled.has(src.mntId) && src.root !== e.root;
  }

  /** Fills every tmpfs made since the last time from its archive (the tar runs go together). */
  #fill(): void {
    const pending = [...this.#unfilled.values()];
    this.#unfilled.clear();
    const jobs = pending.map(({ e, target }) => ({
      image: this.#plan.dir.pathFor(KINDS.TMPFS_DEV, e.rootDev),
      directory: this.#fromCriu(target),
    }));
    if (jobs.length === 0) return;
    const started = performance.now();
    const outcomes = extractTmpfs(jobs, userNamespaceRootOf(this.#root.pid)?.path);
    this.#plan.log.debug(
      `Filled ${jobs.length} tmpfs mount(s) from their archives in ${
        (performance.now() - started).toFixed(1)
      } ms`,
    );
    outcomes.forEach((error, i) => {
      if (error !== undefined) {
        throw new RestoreError(
          `Cannot fill the tmpfs at ${pending[i]!.e.mountpoint} from ${jobs[i]!.image}: ${error}`,
        );
      }
    });
  }

  #setAttr(
    e: mnt_entry,
    set: number,
    clear: number,
    propagation: number,
    fd = this.#fds.get(e.mntId)!,
  ): void {
    const r = this.#root;
    r.reset();
    const attr = mountAttr(set, clear, propagation);
    const res = r.attempt(
      `mount_setattr(${e.mountpoint})`,
      NR.mount_setattr,
      fd,
      r.string(""),
      AT_EMPTY_PATH,
      r.alloc(attr.length, attr),
      attr.length,
    );
    if (isSyscallError(res)) {
      throw new RestoreError(`Cannot set the flags of the mount ${e.mountpoint}: ${res.message}`, 0, {
        cause: res,
      });
    }
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

  /**
   * For each path that carries an outside master: the mount of criu's namespace it is on, opened
   * by the root task through /proc/CRIU/fd/N while criu's /proc is still in its view (before the
   * pivot).
   */
  #reachHostMasters(): void {
    const host = parseMountinfo(Deno.readTextFileSync("/proc/self/mountinfo"));
    const { masterSources, sharingSources } = this.#plan;
    for (const path of new Set([...masterSources.values(), ...sharingSources.values()])) {
      const real = Deno.realPathSync(path);
      const mount = host.filter((m) => within(real, m.mountpoint)).reduce<MountInfo | undefined>(
        (best, m) => (!best || m.mountpoint.length >= best.mountpoint.length ? m : best),
        undefined,
      );
      if (!mount) continue;
      const ours = openPathFd(mount.mountpoint);
      try {
        if (this.#plan.nested) {
          // A nested namespace's builder sees criu's /proc no more (the parent's tree is pivoted).
          this.#hostMasters.set(path, takeFromCriu({ agent: this.#root }, ours));
          continue;
        }
        const r = this.#root;
        r.reset();
        const fd = r.attempt(
          `open(${mount.mountpoint} of criu)`,
          NR.open,
          r.string(`/proc/${Deno.pid}/fd/${ours}`),
          O.PATH | O.CLOEXEC,
          0,
        );
        if (isSyscallError(fd)) {
          throw new RestoreError(`Cannot reach the mount ${mount.mountpoint} of criu: ${fd.message}`, 0, {
            cause: fd,
          });
        }
        this.#hostMasters.set(path, Number(fd));
      } finally {
        closeFd(ours);
      }
    }
  }

  /**
   * Peer groups and masters, each group's first member made shared before the others join it; a
   * group with a slave whose root none of its members' holds is founded on a helper bind instead.
   */
  #peerGroups(): void {
    const { entries } = this.#plan;
    const done = new Set<number>();
    const heads = new Map<number, mnt_entry>();
    const ensureGroup = (group: number): mnt_entry | undefined => {
      const members = entries.filter((e) => e.sharedId === group).sort((a, b) =>
        a.root.length - b.root.length
      );
      const first = members[0];
      if (!first || done.has(group)) return heads.get(group) ?? first;
      done.add(group);
      const earlier = this.#earlierMounts().filter((x) => x.sharedId === group);
      if (earlier.length) {
        // A group an earlier namespace holds already (a copy's peers): every member joins it there.
        for (const m of members) {
          this.#joinEarlier(earlier.find((x) => within(m.root, x.root)) ?? earlier[0]!, m);
        }
        return first;
      }
      const joined = members.filter((m) => this.#joinHostGroup(m));
      if (joined.length) {
        // The others join from a member whose root holds theirs (the kernel's rule for SET_GROUP).
        for (const m of members) {
          if (!joined.includes(m)) {
            this.#setGroup(joined.find((j) => within(m.root, j.root)) ?? joined[0]!, m);
          }
        }
        return joined[0];
      }
      const head = this.#helperFor(group, first) ?? first;
      heads.set(group, head);
      if (head.masterId) this.#slaveOf(head, ensureGroup(head.masterId));
      this.#setAttr(head, 0, 0, MS.SHARED);
      for (const m of members) if (m !== head) this.#setGroup(head, m);
      return head;
    };
    for (const e of entries) {
      if (e.sharedId) ensureGroup(e.sharedId);
      else if (e.masterId) this.#slaveOf(e, ensureGroup(e.masterId));
    }
  }

  /**
   * The slaves of earlier namespaces whose master is a group of this one (a root mount made a slave
   * after a nested namespace copied it): each joins the group of a member here whose root holds
   * its own (SET_GROUP works across namespaces), then is made a slave of it. One that is shared too
   * heads a group of its own, which is made again under the master: every member private, the
   * first a slave then shared, the others joining it.
   */
  #lateMasters(): void {
    const { tree, entries, log } = this.#plan;
    const ready = tree.lateSlaves.flatMap((p) => {
      const m = [...this.#helpers, ...entries].find((x) =>
        x.sharedId === p.masterId && x.rootDev === p.rootDev && within(p.root, x.root)
      );
      return m ? [{ p, m }] : [];
    });
    if (ready.length === 0) return;
    tree.lateSlaves = tree.lateSlaves.filter((p) => !ready.some((x) => x.p === p));
    for (const { p, m } of ready) {
      const peers = p.sharedId
        ? [...tree.built.flatMap((b) => b.entries), ...entries].filter((x) => x.sharedId === p.sharedId)
        : [];
      for (const q of peers) this.#propagationOf(q, MS.PRIVATE);
      const where = `${p.mountpoint} (mount ${p.mntId}) of an earlier namespace`;
      this.#moveSetGroup(this.#fdOf(m), this.#fdOf(p), `${m.mountpoint} (mount ${m.mntId})`, where);
      this.#propagationOf(p, MS.SLAVE);
      if (p.sharedId) this.#propagationOf(p, MS.SHARED);
      for (const q of peers) {
        if (q !== p) {
          this.#moveSetGroup(this.#fdOf(p), this.#fdOf(q), where, `${q.mountpoint} (mount ${q.mntId})`);
        }
      }
      log.info(
        `Mount ${p.mntId} (${p.mountpoint}) of an earlier namespace is a slave of the peer group of ${
          m.mntId < 0 ? m.mountpoint : `mount ${m.mntId}`
        } again${peers.length ? `, with its ${peers.length - 1} peer(s)` : ""}`,
      );
    }
  }

  /** An fd in the building task on mount `x`, of its namespace or of an earlier one. */
  #fdOf(x: mnt_entry): number {
    return this.#fds.get(x.mntId) ?? this.#foreignFd(x);
  }

  /**
   * Sets the propagation of mount `x`; for a mount of an earlier namespace the task enters that
   * namespace for it and comes back (mount_setattr changes only the caller's mounts).
   */
  #propagationOf(x: mnt_entry, propagation: number): void {
    if (this.#byId.has(x.mntId)) return this.#setAttr(x, 0, 0, propagation);
    const b = this.#plan.tree.built.find((b) => b.fds.has(x.mntId))!;
    const fd = this.#foreignFd(x);
    const own = this.#nsFdInTask(this.#root.pid);
    try {
      this.#setns(this.#nsFdInTask(b.pid), "an earlier");
      this.#setAttr(x, 0, 0, propagation, fd);
    } finally {
      this.#setns(own, "its own");
    }
  }

  /** An fd in the building task on mount `x` of a namespace built before (its builder's, copied in by criu). */
  #foreignFd(x: mnt_entry): number {
    let fd = this.#foreign.get(x.mntId);
    if (fd !== undefined) return fd;
    const b = this.#plan.tree.built.find((b) => b.fds.has(x.mntId))!;
    const copy = copyFdOf(b.pid, b.fds.get(x.mntId)!);
    try {
      fd = takeFromCriu({ agent: this.#root }, copy);
    } finally {
      closeFd(copy);
    }
    this.#foreign.set(x.mntId, fd);
    return fd;
  }

  /** The mounts of the namespaces built before this one (a nested one takes their groups). */
  #earlierMounts(): mnt_entry[] {
    return this.#plan.nested ? this.#plan.tree.built.flatMap((b) => [...b.entries, ...b.helpers]) : [];
  }

  /**
   * The helper bind peer group `group` (whose first member here is `first`) is founded on when a
   * slave of it, in any namespace of the tree, has a root that none of its members' holds (a slave
   * made wider than the group it stayed with: `mount --bind pt/in pin` with pt a slave, then pt
   * made private). The kernel lets a mount join a group only from a member whose root holds its
   * own, and a group's roots never grow, so such a slave can only come back if the group starts
   * from a mount that holds them all: a copy (open_tree) of the narrowest mount of this namespace,
   * or of an earlier one, whose root holds every member's and slave's, made shared. The members
   * and the slaves join it; it is kept (an fd) until every namespace is built, then closed, and the
   * group and its slaves go on without it. Undefined when no slave needs one, or no mount holds
   * them all (those slaves then stay private, said at fill).
   */
  #helperFor(group: number, first: mnt_entry): mnt_entry | undefined {
    const { tree, log } = this.#plan;
    const wide = uncoveredSlaves(tree.all, group);
    if (wide.length === 0) return undefined;
    const roots = [...tree.all.filter((x) => x.sharedId === group), ...wide].map((x) => x.root);
    const holds = (x: mnt_entry) => x.rootDev === first.rootDev && roots.every((r) => within(r, x.root));
    const narrowest = (list: mnt_entry[]) =>
      list.filter(holds).sort((a, b) => b.root.length - a.root.length)[0];
    const src = narrowest(this.#plan.entries) ?? narrowest(this.#earlierMounts());
    if (!src) {
      log.warn(
        `Peer group ${group} has slaves whose root none of its members' holds (${
          wide.map((s) => `mount ${s.mntId}`).join(", ")
        }), and no mount of its filesystem holds them all`,
      );
      return undefined;
    }
    const fd = this.#copyOf(src);
    const helper = create(mnt_entrySchema, {
      mntId: -group,
      rootDev: src.rootDev,
      root: src.root,
      mountpoint: `a helper bind of ${src.mountpoint}`,
      sharedId: group,
      masterId: first.masterId,
    });
    this.#fds.set(helper.mntId, fd);
    this.#setAttr(helper, 0, 0, MS.PRIVATE);
    this.#helpers.push(helper);
    log.info(
      `Peer group ${group} is founded on ${helper.mountpoint} (mount ${src.mntId}, root ${src.root}): the root of none of its members holds that of its slave(s) ${
        wide.map((s) => `${s.mntId} (${s.mountpoint})`).join(", ")
      }`,
    );
    return helper;
  }

  /**
   * A detached copy (open_tree) of mount `x` of this namespace or of an earlier one, whose
   * namespace the task enters for it and leaves (open_tree copies only a mount of the caller's).
   */
  #copyOf(x: mnt_entry): number {
    if (this.#byId.has(x.mntId)) return this.#cloneMount(x, x);
    const b = this.#plan.tree.built.find((b) => b.fds.has(x.mntId))!;
    const fd = this.#foreignFd(x);
    const own = this.#nsFdInTask(this.#root.pid);
    try {
      this.#setns(this.#nsFdInTask(b.pid), "an earlier");
      return this.#cloneMount(x, x, fd);
    } finally {
      this.#setns(own, "its own");
    }
  }

  /**
   * `e` takes the peer group and master of `x`, a mount of an earlier namespace, reached through
   * an fd its builder holds (copied into this task by criu: SET_GROUP works across namespaces).
   */
  #joinEarlier(x: mnt_entry, e: mnt_entry): void {
    const fd = this.#foreignFd(x);
    this.#moveSetGroup(fd, this.#fds.get(e.mntId)!, `${x.mountpoint} (mount ${x.mntId})`, e.mountpoint);
    this.#plan.log.info(
      `Mount ${e.mntId} (${e.mountpoint}) takes the peer group of mount ${x.mntId} of an earlier namespace`,
    );
  }

  /** An external mount that shares its group with criu's namespace joins it again; false for others. */
  #joinHostGroup(e: mnt_entry): boolean {
    const path = this.#plan.sharingSources.get(e.mntId);
    const hostFd = path === undefined ? undefined : this.#hostMasters.get(path);
    if (hostFd === undefined) return false;
    this.#moveSetGroup(hostFd, this.#fds.get(e.mntId)!, `${path}'s mount`, e.mountpoint);
    this.#plan.log.info(`Mount ${e.mntId} (${e.mountpoint}) is in the peer group of ${path} again`);
    return true;
  }

  /**
   * Makes `e` a slave of `master`'s peer group. A master outside the tree is taken from the mount
   * of criu's namespace that carries it (see masterSources); without one, `e` stays private.
   */
  #slaveOf(e: mnt_entry, master: mnt_entry | undefined): void {
    // A member here whose root holds e's (the kernel's rule for SET_GROUP), the group's head first.
    const cover = [...(master ? [master] : []), ...this.#plan.entries].find((x) =>
      x.sharedId === e.masterId && x.rootDev === e.rootDev && within(e.root, x.root)
    );
    const carrier = cover ? undefined : earlierMasterCarrier(this.#earlierMounts(), e);
    if (cover) {
      this.#setGroup(cover, e);
    } else if (master && !carrier) {
      this.#plan.log.warn(
        `Mount ${e.mntId} (${e.mountpoint}) stays private: no mount of peer group ${e.masterId} holds its root`,
      );
      return;
    } else if (carrier) {
      this.#joinEarlier(carrier, e);
    } else if (this.#plan.tree.groups.has(e.masterId)) {
      this.#plan.tree.lateSlaves.push(e);
      this.#plan.log.info(
        `Mount ${e.mntId} (${e.mountpoint}) is a slave of peer group ${e.masterId}, which a namespace built later holds; it becomes one then`,
      );
      return;
    } else {
      const path = this.#plan.masterSources.get(e.mntId);
      const hostFd = path === undefined ? undefined : this.#hostMasters.get(path);
      if (hostFd === undefined) {
        this.#plan.log.info(
          `The master of mount ${e.mntId} (${e.mountpoint}) is outside the tree; it stays private`,
        );
        return;
      }
      this.#moveSetGroup(hostFd, this.#fds.get(e.mntId)!, `${path}'s mount`, e.mountpoint);
      this.#plan.log.info(`Mount ${e.mntId} (${e.mountpoint}) is a slave of the peer group of ${path} again`);
    }
    this.#setAttr(e, 0, 0, MS.SLAVE);
  }

  #setGroup(from: mnt_entry, to: mnt_entry): void {
    this.#moveSetGroup(this.#fds.get(from.mntId)!, this.#fds.get(to.mntId)!, from.mountpoint, to.mountpoint);
  }

  /** move_mount(MOVE_MOUNT_SET_GROUP): `to` joins the peer group and master of `from`. */
  #moveSetGroup(from: number, to: number, fromName: string, toName: string): void {
    const r = this.#root;
    r.reset();
    const empty = r.string("");
    const res = r.attempt(
      "move_mount(MOVE_MOUNT_SET_GROUP)",
      NR.move_mount,
      from,
      empty,
      to,
      empty,
      MOVE_MOUNT.SET_GROUP | MOVE_MOUNT.F_EMPTY_PATH | MOVE_MOUNT.T_EMPTY_PATH,
    );
    if (isSyscallError(res)) {
      throw new RestoreError(
        `Cannot put the mount ${toName} into the peer group of ${fromName}: ${res.message}`,
        0,
        {
          cause: res,
        },
      );
    }
  }
}

registerNamespaceKind({
  name: "mnt",
  words: "mount",
  cloneFlag: CLONE.NEWNS,
  nested: true,
  check(tree, nsIds) {
    const root = nsIds.linksOf(tree.root.pid).get("mnt");
    if (root !== nsIds.linksOf(Deno.pid).get("mnt")) return;
    for (const t of tree.tasks) {
      const theirs = nsIds.linksOf(t.pid).get("mnt");
      if (t.state === "zombie" || theirs === root) continue;
      refuse(
        t.pid,
        `mount namespace ${theirs}`,
        `it differs from the root's, which is criu's own (${root}); a task's mount namespace of its own is saved only when the tree's root is in one too (CRIU does not restore it either)`,
      );
    }
  },
  dump(ctx) {
    dumpMounts(ctx);
  },
  prepareRestore(ctx) {
    const id = ctx.id;
    if (id === undefined || !ctx.dir.has(KINDS.MNTS, id)) return undefined;
    const tree = treeRestoreOf(ctx.tasks, ctx.dir);
    const plan = ctx.ofRoot
      ? planRestore(ctx.dir, id, tree, ctx.options, ctx.plugins, ctx.log)
      : planNested(ctx.dir, id, ctx.tasks, tree, ctx.options, ctx.plugins, ctx.log);
    let built: BuiltNamespace | undefined;
    return {
      beforeMemory: (creator) => {
        built = new TreeBuilder(creator, plan).build();
      },
      // Every namespace is built by now: the fds its later ones took groups from go.
      fill: (creator) => {
        for (const fd of built?.fds.values() ?? []) creator.call("close", NR.close, fd);
        // A master no later namespace gave (no member whose root holds the slave's): said once.
        for (const e of tree.lateSlaves.splice(0)) {
          ctx.log.warn(
            `Mount ${e.mntId} (${e.mountpoint}) stays private: no mount of peer group ${e.masterId} holds its root`,
          );
        }
      },
    };
  },
});
