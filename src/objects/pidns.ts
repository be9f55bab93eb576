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
 * pid_for_children is each thread's own (unshare(CLONE_NEWPID) changes the caller's only), and
 * setns(CLONE_NEWPID) moves it to the caller's namespace or any below it: a parent may go back to
 * its own namespace after an unshare, or into one another task made, and fork there.
 *
 * Images. pstree.img keeps CRIU's fields as the tree's namespace sees the tasks (they name every
 * other image, so they are unique); `nested` adds, for a task below it, its pid, group, session and
 * thread ids in each namespace from the tree's child down to its own, with the namespace's id. The
 * ids image of a task says where its leader's children are born (`pid_for_children_ns_id`), the
 * core image of any other thread where its own are, when not the task's namespace (thread_core's
 * `pid_for_children_ns_id`). CRIU ignores them (numbers ≥ 1000); its own images have none, which
 * reads as "no nesting".
 *
 * Restore, in the order the kernel needs (PidNesting, restorePidForChildren):
 *   1. every task is cloned from its parent with clone3's set_tid giving its pid in each namespace
 *      from its own up to the tree's, innermost first (the kernel wants 1 first in a namespace
 *      without an init, and set_tid_size at most the depth of the new task's namespace);
 *   2. a parent clones its children of its own namespace, and those born by CLONE_NEWPID, while
 *      its pid_for_children is its own namespace (a clone with CLONE_NEWPID fails otherwise);
 *   3. then its children in nested namespaces, namespace by namespace, the init first: for the
 *      init of the namespace its children are born in at the dump, unshare(CLONE_NEWPID) (so the
 *      namespace is owned by the parent's user namespace, as an unshare made it); for a member,
 *      setns into the namespace of its init, which exists by then (wherever it was cloned);
 *   4. once every task exists, a parent with threads goes back to its own namespace (setns): the
 *      kernel refuses CLONE_THREAD to a caller whose pid_for_children is not its own namespace
 *      (copy_process), so its threads are created there;
 *   5. once a task's threads exist, before its credentials drop, each thread makes its children
 *      where it did: setns into a namespace a task of the tree is in, unshare for one that had
 *      none yet (its next child will be the init of a new one). The leader does so at once, each
 *      other thread in its own batch (task.ts).
 * Inside, a task then sees the pids, groups and sessions it saw; its queued signals are re-sent
 * and its group joined by the ids of its own namespace. A group whose leader is not seen there
 * (0 inside) is joined by its parent's hand (setpgid on the child, named as the parent's namespace
 * sees both): the group it inherited at its fork was its parent's then, which may have changed since.
 * A child a thread forked comes back as a child of the leader (the kernel shows its parent as the
 * process), as with CRIU.
 *
 * Not restored (refused at dump): a member of a nested namespace whose init is not dumped; a
 * pid_for_children whose namespace has no task of the tree left (its init ended and was reaped);
 * a zombie init of a nested namespace that ended by a signal other than SIGKILL (the kernel lets
 * no other signal end a namespace's init from outside, so a puppet cannot end that way); more than
 * one level between a task and its parent (setns into a deeper namespace, then fork).
 */
import { CLONE, NR, SIG } from "../../ffi/syscalls.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { enterNamespaceFd, type NamespaceIds, registerNamespaceKind } from "./namespaces.ts";
import type { FrozenTask, FrozenTree } from "../dump/freeze.ts";
import type { RestoreTaskImages } from "../restore/images.ts";
import type { Agent, BatchCall } from "../agent.ts";
import { openPidfd } from "../../ffi/pidfd.ts";
import { closeFd, OPEN, openFd } from "../../ffi/fd.ts";
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
 * The link of the namespace the next children of thread `tid` (a task's leader: the task's pid) are
 * born in; "pending:TID" when it unshared and has no child there yet (the kernel shows no link until
 * the namespace has an init); undefined for a zombie (it has no namespaces left but its own PID one).
 */
function pidForChildrenLink(tid: number, zombie = false): string | undefined {
  if (zombie) return undefined;
  try {
    return Deno.readLinkSync(`/proc/${tid}/ns/pid_for_children`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return `pending:${tid}`;
    return undefined; // ended meanwhile: its parent is frozen, so it waits as a zombie
  }
}

/** Refuses the ways of sitting in nested PID namespaces that the restore cannot repeat. */
function checkNesting(tree: FrozenTree, nsIds: NamespaceIds): void {
  const byPid = new Map(tree.tasks.map((t) => [t.pid, t]));
  const nsOf = (t: FrozenTask) => nsIds.linksOf(t.pid).get("pid");
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
    // A member is cloned once its namespace's init exists, its parent in that namespace by setns.
    if (innermostOf(t) !== 1 && !tree.tasks.some((m) => nsOf(m) === nsOf(t) && innermostOf(m) === 1)) {
      throw new DumpError(
        `Process ${t.pid} (${innermostOf(t)} in PID namespace ${
          nsOf(t)
        }) is in a namespace whose init is not being dumped; it cannot be restored`,
      );
    }
    if (t.state === "zombie" && innermostOf(t) === 1) checkZombieInit(t);
  }
  for (const t of tree.tasks) {
    if (t.state === "zombie") continue;
    for (const tid of t.threads) checkPidForChildren(t, tid, nsOf(t), tree, nsOf);
  }
}

/**
 * A thread's pid_for_children other than its task's namespace must be one the restore can enter
 * again (setns to a process of the tree in it) or make again (unshare: no process there yet).
 */
function checkPidForChildren(
  t: FrozenTask,
  tid: number,
  own: string | undefined,
  tree: FrozenTree,
  nsOf: (t: FrozenTask) => string | undefined,
): void {
  const link = pidForChildrenLink(tid);
  if (link === undefined || link === own || link.startsWith("pending:")) return;
  if (!tree.tasks.some((m) => nsOf(m) === link)) {
    const who = tid === t.pid ? `Process ${t.pid}` : `Thread ${tid} of process ${t.pid}`;
    throw new DumpError(
      `${who} makes its children in PID namespace ${link}, which has no process left in the tree (its init ended, or is not being dumped); it cannot be restored`,
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
  const link = pidForChildrenLink(t.pid, t.state === "zombie");
  return link === undefined ? undefined : nsIds.idOfLink(link);
}

/**
 * For the core image of thread `tid` (not a leader): the id of the namespace its next children are
 * born in, when that is not its task's own (it called unshare or setns itself); else undefined.
 */
export function threadPidForChildrenId(nsIds: NamespaceIds, tid: number): number | undefined {
  const link = pidForChildrenLink(tid);
  let own: string;
  try {
    own = Deno.readLinkSync(`/proc/${tid}/ns/pid`);
  } catch {
    return undefined;
  }
  return link === undefined || link === own ? undefined : nsIds.idOfLink(link);
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

/**
 * How a task comes into being from its parent: "newpid", the init of a namespace cloned with
 * CLONE_NEWPID; "unshared", the init of the namespace its parent makes its children in, cloned
 * after the parent's unshare; "member", not the init of its nested namespace, cloned once its
 * parent entered that namespace (setns).
 */
type Birth = "plain" | "newpid" | "unshared" | "member";

/**
 * The restore's side of nested PID namespaces for forkTree: the order the tasks are cloned in,
 * and the clone flag, unshare or setns each needs from its parent.
 */
export class PidNesting {
  readonly #byPid: Map<number, RestoreTaskImages>;
  readonly #nested: boolean;
  /** Where a parent's next children are born now, when it is not its own namespace (an id). */
  readonly #childrenNs = new Map<number, number>();

  constructor(private readonly tasks: readonly RestoreTaskImages[]) {
    this.#byPid = new Map(tasks.map((t) => [t.entry.pid, t]));
    this.#nested = tasks.some((t) => t.entry.nested.length > 0) || tasks.some(childrenElsewhere);
  }

  /**
   * Parents before children. A parent's children: those of its own namespace and the inits it
   * clones with CLONE_NEWPID first (the flag wants its pid_for_children to be its own namespace),
   * then those of nested namespaces it enters, one namespace after the other (the one it makes its
   * children in at the dump last, so that it need not leave it), each init before its members; a
   * member waits for its namespace's init, wherever that is cloned. Without nesting, the images'
   * order.
   */
  order(): RestoreTaskImages[] {
    if (!this.#nested) return [...this.tasks];
    const children = new Map<number, RestoreTaskImages[]>();
    for (const t of this.tasks.slice(1)) {
      children.set(t.entry.ppid, [...children.get(t.entry.ppid) ?? [], t]);
    }
    const rank = (k: RestoreTaskImages): [number, number, number] => {
      const birth = this.#birth(k);
      if (birth === "plain" || birth === "newpid") return [0, 0, 0];
      const ns = ownNsOf(k);
      const last = this.#byPid.get(k.entry.ppid)?.ids?.pidForChildrenNsId === ns;
      return [1, last ? Number.MAX_SAFE_INTEGER : ns, ownIds(k.entry).pid];
    };
    const parentsFirst: RestoreTaskImages[] = [];
    const queue = [this.tasks[0]!];
    while (queue.length) {
      const t = queue.shift()!;
      parentsFirst.push(t);
      const kids = (children.get(t.entry.pid) ?? []).map((k) => ({ k, r: rank(k) }));
      kids.sort((a, b) => a.r[0] - b.r[0] || a.r[1] - b.r[1] || a.r[2] - b.r[2]);
      queue.push(...kids.map(({ k }) => k));
    }
    return this.#initsBeforeMembers(parentsFirst);
  }

  /** `tasks` (parents first) again, each member moved after its namespace's init. */
  #initsBeforeMembers(tasks: RestoreTaskImages[]): RestoreTaskImages[] {
    const out: RestoreTaskImages[] = [];
    const made = new Set<number>();
    let left = tasks;
    while (left.length) {
      const later: RestoreTaskImages[] = [];
      for (const t of left) {
        const init = this.#birth(t) === "member" ? this.#initOf(t, ownNsOf(t)) : undefined;
        const ready = (t === this.tasks[0] || made.has(t.entry.ppid)) && (!init || made.has(init.entry.pid));
        if (ready) {
          out.push(t);
          made.add(t.entry.pid);
        } else {
          later.push(t);
        }
      }
      if (later.length === left.length) {
        throw new RestoreError(
          `Process ${
            later[0]!.entry.pid
          } (pstree.img) cannot be cloned: its parent or the init of its PID namespace never is`,
        );
      }
      left = later;
    }
    return out;
  }

  /**
   * Before `t` is cloned from its parent (whose agent is `parent`): the parent's pid_for_children
   * is made the one `t` is born in (unshare for the init of the namespace it unshared, setns for
   * a member, its own namespace for the rest). Answers the clone flag `t` needs (CLONE_NEWPID).
   */
  beforeClone(t: RestoreTaskImages, parent: Agent | null): bigint {
    if (!parent || t === this.tasks[0]) return 0n;
    const p = this.#byPid.get(t.entry.ppid)!;
    const birth = this.#birth(t);
    if (birth === "member") {
      this.#enter(p, parent, ownNsOf(t));
      return 0n;
    }
    this.#enter(p, parent, undefined);
    if (birth === "newpid") return BigInt(CLONE.NEWPID);
    if (birth === "unshared") {
      parent.call("unshare(CLONE_NEWPID)", NR.unshare, CLONE.NEWPID);
      this.#childrenNs.set(p.entry.pid, ownNsOf(t));
    }
    return 0n;
  }

  /**
   * Once every task is cloned: a parent with threads makes its children in its own namespace
   * again, for the kernel refuses CLONE_THREAD otherwise (copy_process); its pid_for_children
   * comes back once its threads exist (restorePidForChildren).
   */
  afterForking(agents: ReadonlyMap<number, Agent>): void {
    for (const pid of this.#childrenNs.keys()) {
      const p = this.#byPid.get(pid)!;
      if (p.cores.length > 1) this.#enter(p, agents.get(pid)!, undefined);
    }
  }

  /** Makes `p` (its agent `agent`) make its next children in namespace `nsId` (undefined: its own). */
  #enter(p: RestoreTaskImages, agent: Agent, nsId: number | undefined): void {
    if (this.#childrenNs.get(p.entry.pid) === nsId) return;
    const holder = nsId === undefined ? p : this.#initOf(p, nsId);
    enterPidNamespaceOf(
      agent,
      holder,
      `Cannot make process ${p.entry.pid}'s children in PID namespace ${nsId ?? "(its own)"}`,
    );
    if (nsId === undefined) this.#childrenNs.delete(p.entry.pid);
    else this.#childrenNs.set(p.entry.pid, nsId);
  }

  /** The init of nested namespace `nsId`, which `t` needs (refused when the images have none). */
  #initOf(t: RestoreTaskImages, nsId: number): RestoreTaskImages {
    const init = this.tasks.find((m) => m.entry.nested.at(-1)?.nsId === nsId && ownIds(m.entry).pid === 1);
    if (!init) {
      throw new RestoreError(
        `Process ${t.entry.pid} needs PID namespace ${nsId} (pstree.img), whose init (pid 1 there) is not in the images`,
      );
    }
    return init;
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
    if (own.pid !== 1) return "member";
    return parent.ids?.pidForChildrenNsId === own.nsId ? "unshared" : "newpid";
  }
}

/** The id of a task's own PID namespace, for a task in a nested one. */
const ownNsOf = (t: RestoreTaskImages) => t.entry.nested.at(-1)!.nsId;

/**
 * The link of a PID namespace file of a created task, as criu's /proc shows it; "pending" for a
 * pid_for_children without an init yet (which no task of the tree is in).
 */
function hostLink(t: RestoreTaskImages, file: "pid" | "pid_for_children"): string {
  try {
    return Deno.readLinkSync(`/proc/${t.hostPid}/ns/${file}`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "pending";
    throw e;
  }
}

/** The fd, in the task of `agent`, of the PID namespace task `holder` is in (criu opens it, hands it over). */
function pidNamespaceFdOf(agent: Agent, holder: RestoreTaskImages): number {
  const ours = openFd(`/proc/${holder.hostPid}/ns/pid`, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    return takeFromCriu({ agent }, ours);
  } finally {
    closeFd(ours);
  }
}

/** The task of `agent` makes its next children in the PID namespace `holder` is in (setns). */
function enterPidNamespaceOf(agent: Agent, holder: RestoreTaskImages, failure: string): void {
  enterNamespaceFd(agent, pidNamespaceFdOf(agent, holder), CLONE.NEWPID, failure);
}

/** Where each thread of a task makes its children: what restorePidForChildren leaves to the threads. */
export interface ThreadsPidForChildren {
  /** The calls thread `i` (the leader 0) makes in its own batch, before its credentials. */
  callsOf(i: number): BatchCall[];
  /** Closes the namespace fds the threads' calls used, once they ran. */
  close(): void;
}

/**
 * Once a task's threads exist, before its credentials (task.ts): each thread makes its children
 * where it did at the dump. The leader now (from forkTree it may be in any namespace it cloned
 * children in), the other threads in their batches (callsOf): setns to a namespace that has a
 * process of the tree, unshare for one that had none yet (the thread's next child is its init).
 */
export function restorePidForChildren(
  tasks: readonly RestoreTaskImages[],
  t: RestoreTaskImages,
  agent: Agent,
): ThreadsPidForChildren {
  const own = t.ids?.pidNsId;
  if (t.zombie || !own) return { callsOf: () => [], close() {} };
  const holderOf = (nsId: number) =>
    tasks.find((m) => m.entry.nested.at(-1)?.nsId === nsId && !m.zombie && !m.helper) ??
      tasks.find((m) => m.entry.nested.at(-1)?.nsId === nsId && !m.helper);
  const leaderNs = t.ids?.pidForChildrenNsId || own;
  const leaderHolder = leaderNs === own ? t : holderOf(leaderNs);
  const now = hostLink(t, "pid_for_children");
  const failure = `Cannot make process ${t.entry.pid}'s children in PID namespace ${leaderNs}`;
  if (leaderHolder) {
    if (now !== hostLink(leaderHolder, "pid")) enterPidNamespaceOf(agent, leaderHolder, failure);
  } else {
    // None of the tree there: it unshared and forked nothing since.
    if (now !== hostLink(t, "pid")) enterPidNamespaceOf(agent, t, failure);
    agent.call("unshare(CLONE_NEWPID)", NR.unshare, CLONE.NEWPID);
  }
  const fds = new Map<number, number>();
  const calls: BatchCall[][] = t.cores.map((c, i) => {
    const nsId = c.core.threadCore?.pidForChildrenNsId; // 0: not set, the task's own
    if (i === 0 || !nsId || nsId === own) return [];
    const holder = holderOf(nsId);
    if (!holder) {
      return [{ name: `unshare(CLONE_NEWPID) in thread ${c.tid}`, nr: NR.unshare, args: [CLONE.NEWPID] }];
    }
    if (!fds.has(nsId)) fds.set(nsId, pidNamespaceFdOf(agent, holder));
    return [{
      name: `setns(PID namespace ${nsId}) in thread ${c.tid}`,
      nr: NR.setns,
      args: [fds.get(nsId)!, CLONE.NEWPID],
    }];
  });
  return {
    callsOf: (i) => calls[i] ?? [],
    close: () => fds.forEach((fd) => agent.call("close", NR.close, fd)),
  };
}

/** Whether a task's next children are born in a PID namespace other than its own (it unshared). */
function childrenElsewhere(t: RestoreTaskImages): boolean {
  const ids = t.ids;
  if (t.zombie || !ids?.pidForChildrenNsId || !ids.pidNsId) return false;
  return ids.pidForChildrenNsId !== ids.pidNsId;
}
