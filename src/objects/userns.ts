/**
 * User namespaces. A tree in a user namespace of its own (a rootless or id-mapped container) gets
 * a new one on restore with the same uid and gid maps, as CRIU writes them: userns-ID.img holds the
 * maps (first id inside, first id outside, count). The tasks' credentials are saved as they are
 * seen inside the namespace (criu reads them from /proc in its own, and puts them through the
 * maps), and set again from inside it.
 *
 * The root is cloned with CLONE_NEWUSER together with its other namespaces, so that the kernel
 * makes the user namespace first and the others belong to it, as in the container; criu writes
 * the maps into /proc/ROOT/uid_map and gid_map right after that clone, before the root does
 * anything (setgroups stays "allow", as a privileged writer leaves it). A tree of several tasks
 * whose PID namespace is criu's cannot be made so (a parent inside the new user namespace has no
 * right to set its children's pids in criu's PID namespace): the namespaces are then made in a
 * holder task, and the tasks, cloned in criu's user namespace, join it once the tree is forked
 * (restore/ns_holder.ts).
 *
 * User namespaces nested below the root's (also below a root that stays in criu's), which CRIU
 * 4.2 refuses to dump, are saved the same way and made again after the tree is forked
 * (userns_nested.ts). Refused by name: a nested namespace that its first task (parents first) did
 * not make below its parent process's; a network, IPC, UTS, mount or cgroup namespace of a task below
 * the root that the user namespace of its first task does not own (the restore makes it there).
 */
import { create } from "@bufbuild/protobuf";
import {
  type uid_gid_extent,
  uid_gid_extentSchema,
  type userns_entry,
  userns_entrySchema,
} from "../images/gen/userns_pb.ts";
import type { creds_entry } from "../images/gen/creds_pb.ts";
import { KINDS } from "../images/kinds.ts";
import { CLONE } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import type { RestoreTaskImages } from "../restore/images.ts";
import { refuse } from "./refusal.ts";
import {
  type NamespaceIds,
  type NsDumpContext,
  type NsRestoreContext,
  type NsRestorePlan,
  registerNamespaceKind,
} from "./namespaces.ts";
import { NestedUserNamespaces } from "./userns_nested.ts";
import { ownerUserNamespaceOf, parentUserNamespaceOf } from "../../ffi/nsenter.ts";
import type { FrozenTree } from "../dump/freeze.ts";
import { giveNamespacesOwnedBy } from "../restore/ns_holder.ts";
import type { PuppetMaster } from "../restore/puppet.ts";

/** The id a user namespace shows for one outside its maps (/proc/sys/kernel/overflowuid). */
const OVERFLOW_ID = 65534;

/** A /proc/PID/uid_map or gid_map as extents. */
export function readMap(pid: number, which: "uid_map" | "gid_map"): uid_gid_extent[] {
  const out: uid_gid_extent[] = [];
  for (const line of Deno.readTextFileSync(`/proc/${pid}/${which}`).split("\n")) {
    const f = line.trim().split(/\s+/).filter((s) => s !== "");
    if (f.length !== 3) continue;
    out.push(
      create(uid_gid_extentSchema, { first: Number(f[0]), lowerFirst: Number(f[1]), count: Number(f[2]) }),
    );
  }
  return out;
}

function mapText(extents: readonly uid_gid_extent[]): string {
  return extents.map((e) => `${e.first} ${e.lowerFirst} ${e.count}`).join("\n") + "\n";
}

/** An id seen from criu's namespace as the task's namespace sees it. */
function inside(extents: readonly uid_gid_extent[], id: number): number {
  const e = extents.find((x) => id >= x.lowerFirst && id - x.lowerFirst < x.count);
  return e ? e.first + (id - e.lowerFirst) : OVERFLOW_ID;
}

/**
 * When `pid` is in a user namespace other than criu's: a function that turns a thread's
 * credentials, read from criu's namespace, into those its namespace sees.
 */
export function credsInUserNamespaceOf(pid: number): ((c: creds_entry) => void) | undefined {
  const ids = idsInUserNamespaceOf(pid);
  if (!ids) return undefined;
  return (c) => {
    c.uid = ids.uid(c.uid);
    c.euid = ids.uid(c.euid);
    c.suid = ids.uid(c.suid);
    c.fsuid = ids.uid(c.fsuid);
    c.gid = ids.gid(c.gid);
    c.egid = ids.gid(c.egid);
    c.sgid = ids.gid(c.sgid);
    c.fsgid = ids.gid(c.fsgid);
    c.groups = c.groups.map((g) => ids.gid(g));
  };
}

/**
 * When `pid` is in a user namespace other than criu's: its uid and gid translations, ids read from
 * criu's namespace turned into those its namespace sees (overflow ids for unmapped ones).
 */
export function idsInUserNamespaceOf(
  pid: number,
): { uid(id: number): number; gid(id: number): number } | undefined {
  if (Deno.readLinkSync(`/proc/${pid}/ns/user`) === Deno.readLinkSync("/proc/self/ns/user")) return undefined;
  const uids = readMap(pid, "uid_map");
  const gids = readMap(pid, "gid_map");
  return { uid: (id) => inside(uids, id), gid: (id) => inside(gids, id) };
}

/**
 * The user namespace of `pid` when its root is another user than criu's (an id-mapped container's:
 * 0 is the host's 100000): a path to enter it by (nsenter --user), and the ids that root has in
 * criu's namespace. Undefined in criu's namespace, and in one whose root is criu's own uid 0
 * (`unshare --map-root-user` run as root), where criu's root may do all that one's may.
 */
export function userNamespaceRootOf(pid: number): { path: string; uid: number; gid: number } | undefined {
  const path = `/proc/${pid}/ns/user`;
  if (Deno.readLinkSync(path) === Deno.readLinkSync("/proc/self/ns/user")) return undefined;
  const outside = (extents: readonly uid_gid_extent[]) => extents.find((e) => e.first === 0)?.lowerFirst;
  const uid = outside(readMap(pid, "uid_map"));
  const gid = outside(readMap(pid, "gid_map"));
  if (uid === undefined || gid === undefined || uid === 0) return undefined;
  return { path, uid, gid };
}

/**
 * For each thread (our tid): the function of credsInUserNamespaceOf for its user namespace (the
 * root's, or one nested below it), read once per namespace; the root's for a thread whose
 * namespaces cannot be read (a zombie has none left).
 */
export function credsInUserNamespaces(
  rootPid: number,
): (tid: number) => ((c: creds_entry) => void) | undefined {
  const root = credsInUserNamespaceOf(rootPid);
  const byNamespace = new Map<string, ((c: creds_entry) => void) | undefined>();
  return (tid) => {
    let link: string;
    try {
      link = Deno.readLinkSync(`/proc/${tid}/ns/user`);
    } catch {
      return root;
    }
    if (!byNamespace.has(link)) byNamespace.set(link, credsInUserNamespaceOf(tid));
    return byNamespace.get(link);
  };
}

registerNamespaceKind({
  name: "user",
  words: "user",
  cloneFlag: CLONE.NEWUSER,
  // Nested user namespaces are made by holders and entered before each task's state
  // (userns_nested.ts), not by the clone that makes the task.
  nestsByItself: true,
  check(tree, nsIds) {
    const root = nsIds.linksOf(tree.root.pid).get("user");
    const seen = new Set([root]);
    for (const t of tree.tasks) {
      const theirs = nsIds.linksOf(t.pid).get("user");
      if (t.state === "zombie" || seen.has(theirs)) continue;
      const parents = tree.tasks.find((p) => p.pid === t.ppid);
      const parentsNs = parents && nsIds.linksOf(parents.pid).get("user");
      if (parentUserNamespaceOf(t.pid) !== parentsNs) {
        refuse(
          t.pid,
          `user namespace ${theirs}`,
          `it was not made below its parent process's (${parentsNs}), which is how it would be made again`,
        );
      }
      seen.add(theirs);
    }
    checkOwners(tree, nsIds);
  },
  dump(ctx) {
    writeUserNamespaces(ctx, true);
  },
  dumpBelow(ctx) {
    writeUserNamespaces(ctx, false);
  },
  prepareRestore(ctx) {
    const id = ctx.tasks[0]!.ids?.userNsId;
    if (id === undefined) return undefined;
    if (!ctx.dir.has(KINDS.USERNS, id)) return belowCriusPlan(ctx, id);
    const [maps] = ctx.dir.read<userns_entry>(KINDS.USERNS, id);
    if (!maps) throw new RestoreError(`userns-${id}.img is empty`);
    if (maps.uidMap.length === 0 || maps.gidMap.length === 0) {
      throw new RestoreError(`userns-${id}.img has no uid map or no gid map`);
    }
    const joinedAfterForking = ctx.tasks.length > 1 && ctx.tasks[0]!.entry.pid !== 1;
    const nested = NestedUserNamespaces.prepare(ctx.dir, ctx.tasks, id, maps, false);
    checkFsNotShared(ctx.tasks, (t) => joinedAfterForking || nested?.holds(t) === true);
    // A task in the new user namespace from its birth on: the holder, or the root (rootCreated).
    let inside: number | undefined;
    const hooks = nested ? nestedHooks(ctx, nested, () => inside) : {};
    return {
      joinedAfterForking,
      ...hooks,
      // A task below the root, cloned in criu's user namespace, gets the namespaces it made
      // inside the tree's made there (a nested one's: nestedHooks).
      ownsApart: (t, master) =>
        hooks.ownsApart?.(t, master) ??
          (joinedAfterForking && t !== ctx.tasks[0]
            ? (task, parent, flags) => giveNamespacesOwnedBy(master, ctx.log, task, parent, inside!, flags)
            : undefined),
      rootCreated(rootPid) {
        inside = rootPid;
        for (const [which, extents] of [["uid_map", maps.uidMap], ["gid_map", maps.gidMap]] as const) {
          try {
            Deno.writeTextFileSync(`/proc/${rootPid}/${which}`, mapText(extents));
          } catch (e) {
            throw new RestoreError(
              `Cannot write the ${which} of userns-${id}.img to process ${rootPid}: ${(e as Error).message}`,
            );
          }
        }
      },
    };
  },
});

/** The kinds of namespace a task below the root makes again itself, inside its own user namespace. */
const MADE_BY_TASKS = [["net", "network"], ["ipc", "IPC"], ["uts", "UTS"], ["mnt", "mount"], [
  "cgroup",
  "cgroup",
]] as const;

/**
 * The restore makes each namespace of those kinds that a task below the root is the first in
 * (parents first; not the root's nor criu's) inside that task's own user namespace, so that this
 * one owns it (NS_GET_USERNS) as when the task made it after entering that user namespace. One
 * with another owner (made before its maker entered its user namespace, or by a process outside
 * the tree) would come back owned by the wrong one: refused by name. (CRIU records no owner.)
 */
function checkOwners(tree: FrozenTree, nsIds: NamespaceIds): void {
  const criu = nsIds.linksOf(Deno.pid);
  const live = tree.tasks.filter((t) => t.state !== "zombie");
  for (const [kind, words] of MADE_BY_TASKS) {
    const seen = new Set([nsIds.linksOf(tree.root.pid).get(kind), criu.get(kind)]);
    for (const t of live) {
      const links = nsIds.linksOf(t.pid);
      const theirs = links.get(kind);
      const parent = live.find((p) => p.pid === t.ppid);
      if (!parent || seen.has(theirs) || theirs === nsIds.linksOf(parent.pid).get(kind)) continue;
      seen.add(theirs);
      const owner = ownerUserNamespaceOf(t.pid, kind);
      if (owner === links.get("user")) continue;
      refuse(
        t.pid,
        `the ${words} namespace ${theirs}`,
        `it is owned by user namespace ${owner ?? "(one above criu's)"}, not by the process's own (${
          links.get("user")
        }), where the restore makes it again (it was made before its maker entered its user namespace, or by a process outside it; CRIU records no owner)`,
      );
    }
  }
}

/**
 * The root's user namespace and each nested one, as its first task (parents first) sees it; with
 * `withRoot` false the root's is criu's and only those below it are written.
 */
function writeUserNamespaces(ctx: NsDumpContext, withRoot: boolean): void {
  const written = new Set<number>([ctx.id]);
  if (withRoot) writeMapsOf(ctx, ctx.id, ctx.tree.root.pid);
  for (const t of ctx.tree.tasks.filter((x) => x.state !== "zombie")) {
    const id = ctx.nsIds?.idsOf(t.pid).user;
    if (id === undefined || written.has(id)) continue;
    written.add(id);
    writeMapsOf(ctx, id, t.pid);
  }
}

function writeMapsOf(ctx: NsDumpContext, id: number, pid: number): void {
  ctx.dir.write(KINDS.USERNS, id, [
    create(userns_entrySchema, { uidMap: readMap(pid, "uid_map"), gidMap: readMap(pid, "gid_map") }),
  ]);
}

/** Every id of criu's user namespace maps to itself. */
const IDENTITY = create(userns_entrySchema, {
  uidMap: [create(uid_gid_extentSchema, { first: 0, lowerFirst: 0, count: 4294967295 })],
  gidMap: [create(uid_gid_extentSchema, { first: 0, lowerFirst: 0, count: 4294967295 })],
});

/** The root stays in criu's user namespace (`id`); tasks below it may be in their own. */
function belowCriusPlan(ctx: NsRestoreContext, id: number): NsRestorePlan | undefined {
  const nested = NestedUserNamespaces.prepare(ctx.dir, ctx.tasks, id, IDENTITY, true);
  if (!nested) return undefined;
  checkFsNotShared(ctx.tasks, (t) => nested.holds(t));
  return { onlyBelowRoot: true, ...nestedHooks(ctx, nested, () => undefined) };
}

/**
 * The plan's part for namespaces nested below the root's. Their holders are made once the tree is
 * forked, or before, when a task of one made namespaces of its own in it, which are made inside it
 * (ownsApart). `inRoots`: a task in the root's user namespace once the root exists (none when it
 * is criu's).
 */
function nestedHooks(
  ctx: NsRestoreContext,
  nested: NestedUserNamespaces,
  inRoots: () => number | undefined,
): Partial<NsRestorePlan> {
  let release = () => {};
  const make = (master: PuppetMaster, inRootsNow: number | undefined) => {
    if (nested.made) return;
    release = () => nested.release(master);
    nested.makeNamespaces(master, inRootsNow, ctx.log);
  };
  return {
    ownsApart: (t, master) => {
      if (!nested.holds(t)) return undefined;
      return (task, parent, flags) => {
        make(master, inRoots());
        giveNamespacesOwnedBy(master, ctx.log, task, parent, nested.holderOf(t), flags);
      };
    },
    afterForking: (agents, master) => make(master, agents.get(ctx.tasks[0]!.entry.pid)!.pid),
    beforeTaskState: (t, agent) => nested.enter(t, agent),
    afterRestore: () => release(),
  };
}

/**
 * A task joins or makes a user namespace by setns or unshare, which the kernel refuses to a task
 * sharing its fs_struct (CLONE_FS): such a task (`moves`: one that must, once created with its pid
 * in criu's user namespace or in a nested one) cannot come back.
 */
function checkFsNotShared(
  tasks: readonly RestoreTaskImages[],
  moves: (t: RestoreTaskImages) => boolean,
): void {
  for (const t of tasks.slice(1)) {
    if (!moves(t)) continue;
    const parent = tasks.find((p) => p.entry.pid === t.entry.ppid && p !== t);
    if (parent?.ids && t.ids && parent.ids.fsId === t.ids.fsId) {
      throw new RestoreError(
        `Process ${t.entry.pid} shares its fs (CLONE_FS) with its parent ${parent.entry.pid}: it cannot join ` +
          "its user namespace after being created with its pid (setns and unshare of a user namespace refuse it)",
      );
    }
  }
}
