/**
 * PID namespaces. A tree whose root is the init (pid 1) of a PID namespace of its own comes back
 * as the init of a new one. Tasks may also sit in PID namespaces nested below the root's ("the
 * tree's"), each made by a task of the tree in one of two ways, which the restore repeats:
 *   - clone(CLONE_NEWPID): the child is the init (pid 1) of a new namespace; its parent's
 *     /proc/PID/ns/pid_for_children stays the parent's own namespace;
 *   - unshare(CLONE_NEWPID), then fork: the caller's pid_for_children is the new namespace from
 *     then on, its next child is that namespace's init and the ones after it are members (parent
 *     0 inside). Before that child exists the link cannot be read (ENOENT); the namespace is made
 *     all the same.
 *
 * Images. pstree.img keeps CRIU's fields as the tree's namespace sees the tasks (they name every
 * other image, so they are unique); `nested` adds, for a task below it, its pid, group, session and
 * thread ids in each namespace from the tree's child down to its own, with the namespace's id. The
 * ids image of a task says where its children are born (`pid_for_children_ns_id`). CRIU ignores
 * both (numbers ≥ 1000); its own images have neither, which reads as "no nesting".
 *
 * Restore, in the order the kernel needs:
 *   1. every task is cloned from its parent with clone3's set_tid giving its pid in each namespace
 *      from its own up to the tree's, innermost first (the kernel wants 1 first in a namespace
 *      without an init, and set_tid_size at most the depth of the new task's namespace);
 *   2. a child born by CLONE_NEWPID is cloned with it, before its parent does any unshare (a
 *      clone with CLONE_NEWPID fails once pid_for_children is not the caller's own namespace);
 *   3. a parent whose children were born after an unshare makes its other children first, then
 *      calls unshare(CLONE_NEWPID), then clones the namespace's init (set_tid [1, ...]), then the
 *      rest of them. Such a parent must have one thread: the kernel refuses CLONE_THREAD once
 *      pid_for_children differs from the caller's own namespace, so its threads could not come
 *      back after;
 *   4. a task that had unshared but has no child there unshares once its threads exist and before
 *      it drops its credentials (task.ts calls unshareLate).
 * Inside, a task then sees the pids, groups and sessions it saw; its queued signals are re-sent
 * and its group joined by the ids of its own namespace. A group whose leader is not seen there
 * (0 inside) is joined by its parent's hand (setpgid on the child, named as the parent's namespace
 * sees both): the group it inherited at its fork was its parent's then, which may have changed since.
 *
 * Not restored (refused at dump): a child in a nested namespace that is not its init and that its
 * parent no longer makes its children in (the parent went back with setns); a pid_for_children
 * whose namespace has no task left (its init ended and was reaped); a zombie init of a nested
 * namespace that ended by a signal other than SIGKILL (the kernel lets no other signal end a
 * namespace's init from outside, so a puppet cannot end that way); more than one level between a
 * task and its parent (setns into a deeper namespace).
 */
import { CLONE, NR, SIG } from "../../ffi/syscalls.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { type NamespaceIds, registerNamespaceKind } from "./namespaces.ts";
import type { FrozenTask, FrozenTree } from "../dump/freeze.ts";
import type { RestoreTaskImages } from "../restore/images.ts";
import type { Agent } from "../agent.ts";
import { openPidfd } from "../../ffi/pidfd.ts";
import { closeFd } from "../../ffi/fd.ts";
import { takeFromCriu } from "./files.ts";
import type { pstree_entry } from "../images/gen/pstree_pb.ts";

registerNamespaceKind({
  name: "pid",
  words: "PID",
  cloneFlag: CLONE.NEWPID,
  nestsByItself: true,
  check(tree, nsIds) {
    const root = tree.root;
    if (root.ns.pid !== root.pid && root.ns.pid !== 1) {
      throw new DumpError(
        `Process ${root.pid} lives in a PID namespace of which it is not the init (it is ${root.ns.pid} there); dump the namespace's init instead`,
      );
    }
    checkNesting(tree, nsIds);
  },
  dump() {
    // pstree.img holds the pids; dump.ts adds the nested levels (nestedPidsOf) and the ids image
    // pid_for_children (pidForChildrenId).
  },
  prepareRestore(ctx) {
    return ctx.tasks[0]!.entry.pid === 1 ? {} : undefined;
  },
});

/** How deep below the tree's PID namespace a task sits. */
const depthOf = (t: FrozenTask) => t.ns.nested.length;

/** The pid a task has in its own PID namespace. */
const innermostOf = (t: FrozenTask) => t.ns.nested.at(-1)?.pid ?? t.ns.pid;

/**
 * The link of the namespace a task's next children are born in; "pending:PID" when it unshared
 * and has no child there yet (the kernel shows no link until the namespace has an init);
 * undefined for a zombie (it has no namespaces left but its own PID one).
 */
function pidForChildrenLink(t: FrozenTask): string | undefined {
  if (t.state === "zombie") return undefined;
  try {
    return Deno.readLinkSync(`/proc/${t.pid}/ns/pid_for_children`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return `pending:${t.pid}`;
    return undefined; // ended meanwhile: its parent is frozen, so it waits as a zombie
  }
}

/** Refuses the ways of sitting in nested PID namespaces that the restore cannot repeat. */
function checkNesting(tree: FrozenTree, nsIds: NamespaceIds): void {
  const byPid = new Map(tree.tasks.map((t) => [t.pid, t]));
  const nsOf = (t: FrozenTask) => nsIds.linksOf(t.pid).get("pid");
  const bornAfterUnshare = new Set<number>();
  for (const t of tree.tasks.slice(1)) {
    const parent = byPid.get(t.ppid)!;
    const depth = depthOf(t);
    const parentDepth = depthOf(parent);
    if (depth === parentDepth) {
      if (nsOf(t) === nsOf(parent)) continue;
      throw new DumpError(
        `Process ${t.pid} is in PID namespace ${nsOf(t)}, beside its parent ${parent.pid}'s ${
          nsOf(parent)
        }; only namespaces a parent made for its children can be restored`,
      );
    }
    if (depth !== parentDepth + 1) {
      throw new DumpError(
        `Process ${t.pid} is ${
          depth - parentDepth
        } PID namespaces below its parent ${parent.pid}; only one level per generation (clone or unshare with CLONE_NEWPID) can be restored`,
      );
    }
    if (nsOf(t) === pidForChildrenLink(parent)) {
      bornAfterUnshare.add(parent.pid);
    } else if (innermostOf(t) !== 1) {
      throw new DumpError(
        `Process ${t.pid} (${innermostOf(t)} in PID namespace ${
          nsOf(t)
        }) was born in a namespace its parent ${parent.pid} has left (setns); it cannot be restored`,
      );
    }
    if (t.state === "zombie" && innermostOf(t) === 1) checkZombieInit(t);
  }
  for (const t of tree.tasks) checkPidForChildren(t, nsOf(t), tree, nsOf, bornAfterUnshare.has(t.pid));
}

/** A task's pid_for_children other than its own namespace must be one unshare can make again. */
function checkPidForChildren(
  t: FrozenTask,
  own: string | undefined,
  tree: FrozenTree,
  nsOf: (t: FrozenTask) => string | undefined,
  hasChildrenThere: boolean,
): void {
  const link = pidForChildrenLink(t);
  if (link === undefined || link === own || link.startsWith("pending:")) return;
  if (!tree.tasks.some((m) => nsOf(m) === link)) {
    throw new DumpError(
      `Process ${t.pid} makes its children in PID namespace ${link}, which has no process left (its init ended); it cannot be restored`,
    );
  }
  if (!hasChildrenThere) {
    throw new DumpError(
      `Process ${t.pid} makes its children in PID namespace ${link}, which another process made (setns); it cannot be restored`,
    );
  }
  if (t.threads.length > 1) {
    throw new DumpError(
      `Process ${t.pid} has ${t.threads.length} threads and children born in PID namespace ${link} after an unshare; only a single-threaded process can be restored so (its threads would have to be made after the unshare, which the kernel refuses)`,
    );
  }
}

/** A nested init that is a zombie: only an exit or SIGKILL can end a puppet in its place. */
function checkZombieInit(t: FrozenTask): void {
  const signal = t.exitCode & 0x7f;
  if (signal !== 0 && signal !== SIG.KILL) {
    throw new DumpError(
      `Process ${t.pid} is the zombie init of a nested PID namespace, killed by signal ${signal}; only an init that exited or was killed by SIGKILL can be restored`,
    );
  }
}

/** The nested levels of a task for pstree.img, each with its namespace's id in the ids images. */
export function nestedPidsOf(tree: FrozenTree, nsIds: NamespaceIds, t: FrozenTask) {
  if (t.ns.nested.length === 0) return [];
  const byPid = new Map(tree.tasks.map((x) => [x.pid, x]));
  return t.ns.nested.map((ids, i) => {
    // The namespace at depth i+1 is that of the nearest of t and its ancestors at that depth:
    // each generation goes at most one level down (checkNesting).
    let holder = t;
    while (depthOf(holder) > i + 1) holder = byPid.get(holder.ppid)!;
    return { nsId: nsIds.idOfLink(nsIds.linksOf(holder.pid).get("pid") ?? ""), ...ids };
  });
}

/** The id of the namespace a task's next children are born in (the ids image), none for a zombie. */
export function pidForChildrenId(nsIds: NamespaceIds, t: FrozenTask): number | undefined {
  const link = pidForChildrenLink(t);
  return link === undefined ? undefined : nsIds.idOfLink(link);
}

// ---- restore ----

/** The ids a task sees in its own PID namespace (the innermost nested level, or the tree's). */
export function ownIds(entry: pstree_entry): { pid: number; pgid: number; sid: number; threads: number[] } {
  return entry.nested.at(-1) ?? entry;
}

/** The id thread `tid` (as the tree's namespace sees it) has in its own namespace. */
export function ownTid(entry: pstree_entry, tid: number): number {
  return tidChain(entry, tid)[0]!;
}

/** clone3's set_tid for a task: its pid in its own namespace, then each one up to the tree's. */
export function pidChain(entry: pstree_entry): number[] {
  return [...entry.nested.map((n) => n.pid).reverse(), entry.pid];
}

/** clone3's set_tid for thread `tid` (as the tree's namespace sees it) of a task. */
export function tidChain(entry: pstree_entry, tid: number): number[] {
  const i = entry.threads.indexOf(tid);
  if (i < 0 || entry.nested.length === 0) return [tid];
  return [...entry.nested.map((n) => n.threads[i] ?? 0).reverse(), tid];
}

/** The pid by which task `t` sees task `other` from its own PID namespace; undefined if it cannot. */
export function pidSeenBy(t: pstree_entry, other: pstree_entry): number | undefined {
  const depth = t.nested.length;
  if (other.nested.length < depth || t.nested.some((n, i) => other.nested[i]!.nsId !== n.nsId)) {
    return undefined;
  }
  return depth === 0 ? other.pid : other.nested[depth - 1]!.pid;
}

/**
 * For a task in a nested PID namespace, what its files restore needs to take fds from other
 * tasks (files.ts): the pids by which it sees them, and pidfds on its ancestors outside its
 * namespace, which it cannot open itself: criu opens them and hands them over, parked (`park`).
 * Nothing for a task of the tree's own namespace.
 */
export function pidfdsForNested(
  tasks: readonly RestoreTaskImages[],
  t: RestoreTaskImages,
  agent: Agent,
  park: (fd: number) => number,
): { pidfds?: Map<number, bigint>; pidSeen?(pid: number): number | undefined } {
  if (t.entry.nested.length === 0) return {};
  const byPid = new Map(tasks.map((x) => [x.entry.pid, x]));
  const pidfds = new Map<number, bigint>();
  for (let a = byPid.get(t.entry.ppid); a; a = byPid.get(a.entry.ppid)) {
    if (a.zombie || a.helper || !a.hostPid || pidSeenBy(t.entry, a.entry) !== undefined) continue;
    const ours = openPidfd(a.hostPid);
    try {
      pidfds.set(a.entry.pid, BigInt(park(takeFromCriu({ agent }, ours))));
    } finally {
      closeFd(ours);
    }
  }
  return {
    pidfds,
    pidSeen: (pid) => {
      const other = byPid.get(pid);
      return other ? pidSeenBy(t.entry, other.entry) : undefined;
    },
  };
}

/**
 * For a task whose process group its own namespace cannot see (a group of its parent's
 * namespace, pgid 0 inside): its parent puts it there, naming both as its own namespace sees them
 * (setpgid on a child that has not exec'd). Its group at fork was its parent's then, which the
 * GROUPS stage may have changed since. Nothing when the parent cannot see the group either.
 */
export function joinGroupFromParent(
  parentAgent: Agent,
  parent: RestoreTaskImages,
  t: RestoreTaskImages,
): void {
  const depth = parent.entry.nested.length;
  const pgid = depth === 0 ? t.entry.pgid : t.entry.nested[depth - 1]?.pgid ?? 0;
  const pid = pidSeenBy(parent.entry, t.entry);
  if (!pgid || pid === undefined) return;
  const r = parentAgent.attempt(`setpgid(${pid}, ${pgid})`, NR.setpgid, pid, pgid);
  if (isSyscallError(r)) {
    throw new RestoreError(
      `Cannot put ${t.entry.pid} into process group ${t.entry.pgid} (pstree.img) from its parent ${parent.entry.pid}: ${r.message}`,
      0,
      { cause: r },
    );
  }
}

/** How a task comes into being from its parent. */
type Birth = "plain" | "newpid" | "unshared";

/**
 * The restore's side of nested PID namespaces for forkTree: the order the tasks are cloned in,
 * and the clone flag or parent's unshare each needs.
 */
export class PidNesting {
  readonly #byPid: Map<number, RestoreTaskImages>;
  readonly #unshared = new Set<number>();
  readonly #nested: boolean;

  constructor(private readonly tasks: readonly RestoreTaskImages[]) {
    this.#byPid = new Map(tasks.map((t) => [t.entry.pid, t]));
    this.#nested = tasks.some((t) => t.entry.nested.length > 0) || tasks.some(childrenElsewhere);
  }

  /**
   * Parents before children; a parent's children born after its unshare after its others, the
   * namespace's init first. Without nesting, the images' order.
   */
  order(): RestoreTaskImages[] {
    if (!this.#nested) return [...this.tasks];
    const children = new Map<number, RestoreTaskImages[]>();
    for (const t of this.tasks.slice(1)) {
      children.set(t.entry.ppid, [...children.get(t.entry.ppid) ?? [], t]);
    }
    const out: RestoreTaskImages[] = [];
    const queue = [this.tasks[0]!];
    while (queue.length) {
      const t = queue.shift()!;
      out.push(t);
      const kids = children.get(t.entry.pid) ?? [];
      const late = kids.filter((k) => this.#birth(k) === "unshared");
      late.sort((a, b) => ownIds(a.entry).pid - ownIds(b.entry).pid);
      queue.push(...kids.filter((k) => !late.includes(k)), ...late);
    }
    return out;
  }

  /**
   * Before `t` is cloned from its parent (whose agent is `parent`): the parent unshares if `t` is
   * the first child born in its new namespace. Answers the clone flag `t` needs (CLONE_NEWPID).
   */
  beforeClone(t: RestoreTaskImages, parent: Agent | null): bigint {
    if (!parent || t === this.tasks[0]) return 0n;
    const birth = this.#birth(t);
    if (birth === "newpid") return BigInt(CLONE.NEWPID);
    if (birth === "unshared" && !this.#unshared.has(t.entry.ppid)) {
      const p = this.#byPid.get(t.entry.ppid)!;
      if (p.cores.length > 1) {
        throw new RestoreError(
          `Process ${p.entry.pid} has threads and children born in a nested PID namespace after an unshare, which cannot be restored`,
        );
      }
      parent.call("unshare(CLONE_NEWPID)", NR.unshare, CLONE.NEWPID);
      this.#unshared.add(t.entry.ppid);
    }
    return 0n;
  }

  #birth(t: RestoreTaskImages): Birth {
    const parent = this.#byPid.get(t.entry.ppid);
    if (!parent || t.helper) return "plain";
    const depth = t.entry.nested.length;
    const parentDepth = parent.entry.nested.length;
    if (depth === parentDepth) return "plain";
    const own = t.entry.nested.at(-1);
    if (depth !== parentDepth + 1 || !own) {
      throw new RestoreError(
        `Process ${t.entry.pid} is ${
          depth - parentDepth
        } PID namespaces below its parent ${parent.entry.pid} (pstree.img); one level per generation is expected`,
      );
    }
    if (parent.ids?.pidForChildrenNsId === own.nsId) return "unshared";
    if (own.pid !== 1) {
      throw new RestoreError(
        `Process ${t.entry.pid} is ${own.pid} in nested PID namespace ${own.nsId}, which is neither its parent ${parent.entry.pid}'s pid_for_children (ids-${parent.entry.pid}.img) nor one it is the init of`,
      );
    }
    return "newpid";
  }
}

/**
 * Once a task's threads exist, before its credentials (task.ts): a task that had unshared its
 * PID namespace but has no child there unshares now. (One with children there did before they were
 * cloned, PidNesting.beforeClone; it has no other thread.)
 */
export function unshareLate(tasks: readonly RestoreTaskImages[], t: RestoreTaskImages, agent: Agent): void {
  if (!childrenElsewhere(t)) return;
  const there = t.ids!.pidForChildrenNsId;
  if (tasks.some((c) => c.entry.ppid === t.entry.pid && c.entry.nested.at(-1)?.nsId === there)) return;
  agent.call("unshare(CLONE_NEWPID)", NR.unshare, CLONE.NEWPID);
}

/** Whether a task's next children are born in a PID namespace other than its own (it unshared). */
function childrenElsewhere(t: RestoreTaskImages): boolean {
  const ids = t.ids;
  if (t.zombie || !ids?.pidForChildrenNsId || !ids.pidNsId) return false;
  return ids.pidForChildrenNsId !== ids.pidNsId;
}
