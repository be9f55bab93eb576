/**
 * Cgroup namespaces. A tree in a cgroup namespace of its own gets a new one on restore, rooted
 * where it was, as CRIU does: nothing is saved apart from cgroup.img, whose sets say, for each
 * hierarchy, how much of a task's path lies above the namespace's root (cgns_prefix). Before the
 * root is cloned, the task it is cloned from enters the cgroups at those prefixes and unshares a
 * cgroup namespace there (a namespace is rooted at the cgroups of the task that makes it); the
 * root is born in it and then moved on into its own cgroups below (cgroups_restore.ts). With
 * `--manage-cgroups ignore` the tree stays in criu's cgroup namespace, as in CRIU.
 *
 * A task below the root in a cgroup namespace of its own (it unshared one in another cgroup; CRIU
 * 4.2 refuses to dump it, "Can't dump nested cgroup namespace") has its own prefixes in its set.
 * Right after its clone it is moved into the cgroups at those prefixes (the root of a hierarchy
 * where it had none), unshares a cgroup namespace there and is moved on into its own cgroups; a
 * task in a namespace an earlier task made (or the root's, left and joined again) enters it by
 * setns. Refused by name: a task in criu's cgroup namespace below a root that is not in it.
 *
 * A cgroup namespace is owned by the user namespace of the task that makes it. In a tree with a user
 * namespace of its own, the root's is made inside it (restore/ns_holder.ts, makeInside: by the
 * holder or by the root, not by the helper in criu's); and where the tasks join their user
 * namespace only once the tree is forked (the holder's path), each task's own is made or entered
 * only then (TaskCgroupNamespaces.inUserNamespace): memory is charged to the cgroups a task was
 * placed in before it, whatever cgroups it passes through later.
 */
import { CLONE, NR } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import type { Agent } from "../agent.ts";
import type { RestoreTaskImages } from "../restore/images.ts";
import type { CgroupsRestore } from "./cgroups_restore.ts";
import { refuse } from "./refusal.ts";
import { enterNamespaceFd, registerNamespaceKind } from "./namespaces.ts";

registerNamespaceKind({
  name: "cgroup",
  words: "cgroup",
  cloneFlag: CLONE.NEWCGROUP,
  // A task in a cgroup namespace other than its parent's makes it itself, in its own cgroups
  // (TaskCgroupNamespaces): a clone flag would root it in its parent's.
  nestsByItself: true,
  check(tree, nsIds) {
    // A task's set saves the prefixes of its own namespace; criu's own has none to tell it by.
    const root = nsIds.linksOf(tree.root.pid).get("cgroup");
    const criu = nsIds.linksOf(Deno.pid).get("cgroup");
    if (root === criu) return;
    for (const t of tree.tasks) {
      const theirs = nsIds.linksOf(t.pid).get("cgroup");
      if (t.state === "zombie" || theirs !== criu) continue;
      refuse(
        t.pid,
        `cgroup namespace ${theirs}`,
        `it is criu's, below a root in another (${root}); a task cannot be put back into criu's cgroup namespace`,
      );
    }
  },
  dump() {
    // The namespace's root is in cgroup.img (cgns_prefix of the sets), written with the cgroups.
  },
  prepareRestore(ctx) {
    const set = ctx.cgroups?.rootSetOf(ctx.tasks[0]!);
    const prefixes = (set?.ctls ?? []).filter((m) => m.cgnsPrefix).map((m) => ({
      name: m.name,
      path: m.path.slice(0, m.cgnsPrefix) || "/",
    }));
    if (prefixes.length === 0) return undefined;
    return {
      inCreator(creator) {
        ctx.cgroups!.moveInto(creator.pid, prefixes);
        creator.call("unshare(CLONE_NEWCGROUP)", NR.unshare, CLONE.NEWCGROUP);
      },
      inCreatorTakesItself: true,
    };
  },
});

/**
 * The cgroup namespaces of tasks below the root that differ from their parent's, made or entered
 * right after each such task's clone (before its memory, so that it is charged where it ends).
 */
export class TaskCgroupNamespaces {
  /**
   * A live task in each cgroup namespace of the images made so far, by ids image id (its pid in
   * the tree's PID namespace is what the tasks that join it open).
   */
  readonly #holders = new Map<number, RestoreTaskImages>();

  /**
   * `untilInUserNamespace`: the tasks are cloned in criu's user namespace and join the tree's once
   * forked (ns_holder.ts); a cgroup namespace made before would be owned by criu's, so every one is
   * made or entered only then (inUserNamespace). A task in a user namespace nested below the root's
   * enters that one only before its state (userns_nested.ts): its cgroup namespace waits until
   * then (inOwnUserNamespace), and so do its children's, which are in it or below.
   */
  constructor(
    private readonly tasks: readonly RestoreTaskImages[],
    private readonly cgroups: CgroupsRestore,
    private readonly untilInUserNamespace = false,
  ) {}

  /** The tasks left for inUserNamespace, in the order they were forked. */
  readonly #later: [RestoreTaskImages, Agent][] = [];
  /** The tasks left for inOwnUserNamespace. */
  readonly #inNestedUserNs = new Set<RestoreTaskImages>();

  /** Task `t`, just cloned (driven by `agent`), gets its cgroup namespace when it is not its parent's. */
  enter(t: RestoreTaskImages, agent: Agent): void {
    const id = t.ids?.cgroupNsId;
    if (id === undefined || t.zombie || t.helper || !this.cgroups.managed) return;
    if (t.ids?.userNsId !== this.tasks[0]?.ids?.userNsId) {
      this.#inNestedUserNs.add(t);
      return;
    }
    if (this.untilInUserNamespace) {
      this.#later.push([t, agent]);
      return;
    }
    const parent = t === this.tasks[0]
      ? undefined
      : this.tasks.find((p) => p.entry.pid === t.entry.ppid && p !== t);
    const parentsId = parent?.ids?.cgroupNsId;
    const holder = this.#holders.get(id);
    if (parent && parentsId !== undefined && parentsId !== id) {
      if (holder !== undefined) this.#join(agent, t, holder);
      else this.#make(agent, t);
    }
    if (holder === undefined) this.#holders.set(id, t);
  }

  /**
   * With untilInUserNamespace, once every task is in the tree's user namespace: each task forked
   * in the root's cgroup namespace (none made its own yet, so every one did) makes or enters its own.
   */
  inUserNamespace(): void {
    const rootsId = this.tasks[0]?.ids?.cgroupNsId;
    for (const [t, agent] of this.#later.splice(0)) {
      const id = t.ids!.cgroupNsId!;
      const holder = this.#holders.get(id);
      if (t !== this.tasks[0] && id !== rootsId) {
        agent.reset();
        if (holder !== undefined) this.#join(agent, t, holder);
        else this.#make(agent, t);
      }
      if (holder === undefined) this.#holders.set(id, t);
    }
  }

  /**
   * Task `t`, in a nested user namespace it has just entered (before its state; tasks come in
   * the order they were forked): it enters its cgroup namespace where a task made it already and
   * it is not there, else it makes it.
   */
  inOwnUserNamespace(t: RestoreTaskImages, agent: Agent): void {
    if (!this.#inNestedUserNs.delete(t)) return;
    const id = t.ids!.cgroupNsId!;
    const holder = this.#holders.get(id);
    agent.reset();
    if (holder === undefined) this.#make(agent, t);
    else if (cgroupNsOf(holder.hostPid) !== cgroupNsOf(t.hostPid)) this.#join(agent, t, holder);
    if (holder === undefined) this.#holders.set(id, t);
  }

  /** Into the cgroups at its prefixes, a new namespace there, then on into its own cgroups. */
  #make(agent: Agent, t: RestoreTaskImages): void {
    const set = this.cgroups.setOf(t);
    if (!set) {
      throw new RestoreError(
        `Process ${t.entry.pid} is in a cgroup namespace of its own, but cgroup.img holds no cgroups for it`,
      );
    }
    const roots = set.ctls.map((m) => ({ name: m.name, path: m.path.slice(0, m.cgnsPrefix ?? 0) || "/" }));
    this.cgroups.moveInto(t.hostPid, roots);
    agent.call("unshare(CLONE_NEWCGROUP)", NR.unshare, CLONE.NEWCGROUP);
    this.cgroups.moveInto(t.hostPid, set.ctls);
  }

  /** Enters the cgroup namespace that task `holder` is in. */
  #join(agent: Agent, t: RestoreTaskImages, holder: RestoreTaskImages): void {
    const fd = agent.call("pidfd_open(cgroup namespace)", NR.pidfd_open, holder.entry.pid, 0);
    enterNamespaceFd(agent, fd, CLONE.NEWCGROUP, `Process ${t.entry.pid} cannot enter its cgroup namespace`);
  }
}

function cgroupNsOf(hostPid: number): string {
  return Deno.readLinkSync(`/proc/${hostPid}/ns/cgroup`);
}
