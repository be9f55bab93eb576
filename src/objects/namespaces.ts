/**
 * Namespaces: the registry of namespace kinds, one module each (`pidns.ts`, `netns.ts`, `utsns.ts`,
 * `timens.ts`, `ipcns.ts`, `mntns.ts`, `cgroupns.ts`, `userns.ts`). A kind says:
 *   - its name in /proc/PID/ns and in words, and its CLONE_NEW* flag;
 *   - `dump`: saves the tree's namespace of this kind when it is not criu's own (its images, the
 *     action scripts around it such as network-lock), or refuses it. A kind without `dump` is not
 *     saved yet: a tree in such a namespace other than criu's is refused by name, since its restore
 *     would land in criu's (other files behind the same paths, another hostname);
 *   - `nested`: whether it also saves the namespaces of this kind that tasks below the root entered
 *     (unshare, setns): then `dump` runs once for each namespace of the kind the live tasks are in
 *     (other than criu's own), told its id and a task inside it;
 *   - `prepareRestore`: at PREPARE, reads its images and says whether the root is created in a new
 *     namespace of this kind, and what to do in it before the root is cloned (from the task it is
 *     cloned from), once the root exists and after the restore. A nested kind is asked once more
 *     for each other namespace of its kind in the images.
 * The dump and the restore loop over the kinds and know none of them by name.
 *
 * Where the restore puts each task (RestoreNamespaces): the root is cloned with the flags of the
 * kinds that make it a namespace, as before. A task whose namespace of a kind is not its parent's
 * either creates it (the first such task in the order tasks are forked: it is cloned with the
 * kind's CLONE_NEW* flag, and that namespace's plan runs for it as the root's does for the root)
 * or joins it once it exists: before its memory, it enters the namespace with setns(2) on an fd of
 * the creator's /proc/PID/ns/KIND (or of criu's own namespace, which the dump's inventory names:
 * a task may have gone back to it). That covers a child that went back to an ancestor's namespace.
 */
import { refuse } from "./refusal.ts";
import type { ImageDir } from "../images/dir.ts";
import type { Hooks } from "../actions/hooks.ts";
import type { Log } from "../log.ts";
import type { Agent } from "../agent.ts";
import type { FrozenTree } from "../dump/freeze.ts";
import type { RestoreTaskImages } from "../restore/images.ts";
import type { RunOptions } from "../options/options.ts";
import type { CgroupsRestore } from "./cgroups_restore.ts";
import type { Plugins } from "../plugins/plugins.ts";
import type { task_kobj_ids_entry } from "../images/gen/core_pb.ts";
import { RestoreError } from "../errors.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { closeFd, OPEN, openFd } from "../../ffi/fd.ts";
import { NR } from "../../ffi/syscalls.ts";
import { takeFromCriu } from "./files.ts";
import type { PuppetMaster } from "../restore/puppet.ts";

/** The names of /proc/PID/ns/ that a task's ids image records, in CRIU's order of fields. */
export const NS_NAMES = ["pid", "net", "ipc", "uts", "mnt", "user", "cgroup", "time"] as const;
export type NsName = typeof NS_NAMES[number];

/** The field of a task's ids image (TaskKobjIdsEntry) that holds its namespace of each kind. */
const ID_FIELDS = {
  pid: "pidNsId",
  net: "netNsId",
  ipc: "ipcNsId",
  uts: "utsNsId",
  mnt: "mntNsId",
  user: "userNsId",
  cgroup: "cgroupNsId",
  time: "timeNsId",
} as const satisfies Record<NsName, keyof task_kobj_ids_entry>;

/** The id of a namespace kind in a task's (or criu's) ids; undefined when none is recorded (0). */
export function nsIdIn(ids: task_kobj_ids_entry | undefined, ns: NsName): number | undefined {
  return ids?.[ID_FIELDS[ns]] || undefined;
}

export interface NsDumpContext {
  tree: FrozenTree;
  /** The namespace's id in the ids images. */
  id: number;
  /** A live task inside the namespace (the root, for the root's): what it is read through. */
  pid: number;
  /** Whether this is the root's namespace (false: one that a task below it entered). */
  ofRoot: boolean;
  /** The id in the ids images of the namespace with link `link` (another one a device leads to). */
  idOfLink(link: string): number;
  dir: ImageDir;
  hooks: Hooks;
  /** Asked about objects of the namespace criu-ts does not save itself (DUMP_EXT_LINK, DUMP_EXT_MOUNT). */
  plugins: Plugins;
  log: Log;
  /** The run's options (--external mnt[...], for one); absent where a caller has none. */
  options?: RunOptions;
  /** The ids of every task's namespaces (those below the root's, nested user namespaces). */
  nsIds?: NamespaceIds;
}

/** What a dumped namespace still has to do when the dump ends (the network lock, for one). */
export interface NsDumped {
  /** The dump worked and the tree is released: `leaveRunning` says whether it runs on here. */
  release(leaveRunning: boolean): void;
  /** The dump failed or was cancelled: put everything back. */
  undo(): void;
}

export interface NsRestoreContext {
  /**
   * The namespace planned: its id in the ids images (the root's, for a kind that is not nested;
   * undefined when the root's ids have none) and whether it is the root's.
   */
  id: number | undefined;
  ofRoot: boolean;
  dir: ImageDir;
  tasks: readonly RestoreTaskImages[];
  /** --empty-ns: kinds whose new namespace is left as the kernel makes it, for the scripts to fill. */
  empty: ReadonlySet<NsName>;
  /** The run's options: those that name outer objects (--root, --veth-pair, --external). */
  options: RunOptions;
  hooks: Hooks;
  log: Log;
  /** The saved cgroups, made before the root's namespaces (a cgroup namespace is rooted in them). */
  cgroups?: CgroupsRestore;
  /** The plugins of the restore (RESTORE_EXT_MOUNT); absent where a caller has none. */
  plugins?: Plugins;
}

/**
 * A namespace the restore creates, for the root or (nested kinds) for the first task in it; its
 * hooks say "root" for that task, its creator.
 */
export interface NsRestorePlan {
  /**
   * For a kind whose namespace cannot come from the root's clone flag, because what it holds can
   * only be set before any task is in it (a time namespace's clock offsets): runs in the task the
   * root is cloned from, before that clone, and makes the namespace there for its children. Such a
   * plan adds no clone flag.
   */
  inCreator?(creator: Agent): void;
  /**
   * Whether inCreator's namespace is the creator's own too (unshare(CLONE_NEWCGROUP) moves its
   * caller; a time namespace's creator enters it by setns): then a root made first
   * (--restore-sibling) runs it itself.
   */
  inCreatorTakesItself?: boolean;
  /**
   * Whether inCreator enters a namespace that exists outside the images (the caller's network
   * namespace), whose owner is its own: it runs in the task the root is cloned from even when
   * the others are made inside the tree's user namespace (restore/ns_holder.ts, makeInside).
   */
  inCreatorJoinsExisting?: boolean;
  /**
   * Right after the root is cloned in the new namespace, before its memory: what the root's files
   * and mappings are opened through (the mount tree). Children cloned later inherit it.
   */
  beforeMemory?(root: Agent): void;
  /**
   * Right after the root's clone, before it does anything (its memory comes after): what only
   * criu can give the namespace from outside (a user namespace's uid and gid maps).
   */
  rootCreated?(rootPid: number): void;
  /**
   * The root stays in criu's namespace of this kind (no clone flag; the namespace scripts do not
   * run for it): the plan is only for namespaces of tasks below it.
   */
  onlyBelowRoot?: boolean;
  /**
   * A user namespace whose tasks' pids criu's PID namespace must take (several tasks, no PID
   * namespace of their own): it is made with the root's other namespaces in a holder task, and the
   * tasks, each cloned in criu's user namespace, join it once the tree is forked
   * (restore/ns_holder.ts); rootCreated is then given the holder's pid.
   */
  joinedAfterForking?: boolean;
  /**
   * Once every task is forked (and has joined the root's user namespace, see joinedAfterForking),
   * the helper still there: namespaces nested below the root's that the tasks enter later (user
   * namespaces, made by holders). `agents` by pid in the images.
   */
  afterForking?(agents: ReadonlyMap<number, Agent>, master: PuppetMaster): void;
  /** In each task's restore, once its files are back and before its state, threads and credentials. */
  beforeTaskState?(t: RestoreTaskImages, agent: Agent): void;
  /**
   * For task `t` below the root whose own namespaces (its clone flags) belong to a user namespace
   * it is not in when it is cloned (the tree's, joined once forked; one nested below the root's,
   * entered before its state): a function that makes them inside that user namespace and has the
   * new task (`task`; its parent `parent`, criu's pid) enter them. The task is then cloned without
   * those flags. Undefined: its clone makes them.
   */
  ownsApart?(
    t: RestoreTaskImages,
    master: PuppetMaster,
  ): ((task: Agent, parent: number, flags: bigint) => void) | undefined;
  /** Once the root exists in it: what the namespace held (from inside the root). */
  fill?(root: Agent): void;
  /** After post-restore, before the tree runs (network-unlock, for one). */
  afterRestore?(rootPid: number): void;
}

export interface NamespaceKind {
  readonly name: NsName;
  /** In words, for messages ("network"). */
  readonly words: string;
  readonly cloneFlag: number;
  /** Saves and restores namespaces of this kind below the root's (see the top of this file). */
  readonly nested?: boolean;
  /**
   * Makes the namespaces of this kind below the root's itself, not through plans: PID
   * (pidns.ts: clone flags and unshare from forkTree, since a PID namespace cannot be entered by
   * setns, only made the children's).
   */
  readonly nestsByItself?: boolean;
  /** Every dump, before anything is written: may refuse how the tree's tasks sit in namespaces of this kind (nesting). */
  check?(tree: FrozenTree, nsIds: NamespaceIds): void;
  dump?(ctx: NsDumpContext): NsDumped | void;
  /**
   * When the root's namespace of this kind is criu's: saves the namespaces of this kind that tasks
   * below it are in (user namespaces a task made), which check() let through. `ctx.id` is criu's.
   */
  dumpBelow?(ctx: NsDumpContext): void;
  /**
   * The plan for the namespace ctx.id of this kind; undefined when there is nothing to make (the
   * root stays in criu's namespace).
   */
  prepareRestore?(ctx: NsRestoreContext): NsRestorePlan | undefined;
}

const kinds: NamespaceKind[] = [];

export function registerNamespaceKind(kind: NamespaceKind): void {
  kinds.push(kind);
}

/**
 * Small ids for namespaces, the way CRIU numbers them: one per distinct namespace inode. The
 * links of each task are read once.
 */
export class NamespaceIds {
  #ids = new Map<string, number>();
  #links = new Map<number, Map<NsName, string>>();

  /** A task's namespace links (`mnt:[4026531841]`). */
  linksOf(pid: number): Map<NsName, string> {
    let links = this.#links.get(pid);
    if (links) return links;
    links = new Map();
    for (const ns of NS_NAMES) {
      try {
        links.set(ns, Deno.readLinkSync(`/proc/${pid}/ns/${ns}`));
      } catch {
        // a kind this kernel does not have
      }
    }
    this.#links.set(pid, links);
    return links;
  }

  idsOf(pid: number): Partial<Record<NsName, number>> {
    const out: Partial<Record<NsName, number>> = {};
    for (const [ns, link] of this.linksOf(pid)) out[ns] = this.idOfLink(link);
    return out;
  }

  /** The id of the namespace with link `link` (a socket's, for one). */
  idOfLink(link: string): number {
    let id = this.#ids.get(link);
    if (id === undefined) this.#ids.set(link, id = this.#ids.size + 1);
    return id;
  }
}

/** How the tasks sit in namespaces, each kind asked (nesting); the first refusal is thrown. */
export function checkNamespaces(tree: FrozenTree, nsIds: NamespaceIds): void {
  for (const kind of kinds) kind.check?.(tree, nsIds);
}

/**
 * Saves every namespace of the tree that is not criu's own, kind by kind, or refuses it: the
 * root's, then (nested kinds) each other one a live task is in, in the order of the tree.
 * (checkNamespaces has run first.) A live task in a namespace of a kind that is not saved yet is
 * refused here. Returns what the dumped kinds must do when the dump ends; on failure, what was
 * done is undone first.
 */
export function dumpNamespaces(
  tree: FrozenTree,
  nsIds: NamespaceIds,
  base: Omit<NsDumpContext, "tree" | "id" | "pid" | "ofRoot" | "idOfLink">,
): NsDumped {
  const ours = nsIds.linksOf(Deno.pid);
  const done: NsDumped[] = [];
  const all: NsDumped = {
    release: (leaveRunning) => done.forEach((d) => d.release(leaveRunning)),
    undo: () => done.forEach((d) => d.undo()),
  };
  try {
    for (const kind of kinds) {
      const rootIds = nsIds.idsOf(tree.root.pid);
      if (nsIds.linksOf(tree.root.pid).get(kind.name) === ours.get(kind.name)) {
        const idOfLink = (l: string) => nsIds.idOfLink(l);
        const pid = tree.root.pid;
        kind.dumpBelow?.({ ...base, tree, nsIds, id: rootIds[kind.name]!, pid, ofRoot: true, idOfLink });
      }
      for (const { pid, link } of namespacesToSave(tree, nsIds, kind, ours.get(kind.name))) {
        if (!kind.dump) {
          refuse(
            pid,
            `the ${kind.words} namespace ${link}`,
            `it is not criu's, and ${kind.words} namespaces are not saved yet`,
          );
        }
        const id = nsIds.idsOf(pid)[kind.name]!;
        const ofRoot = pid === tree.root.pid;
        const d = kind.dump({ ...base, tree, nsIds, id, pid, ofRoot, idOfLink: (l) => nsIds.idOfLink(l) });
        if (d) done.push(d);
      }
    }
    checkTasksInRootNamespaces(tree, nsIds, ours);
  } catch (e) {
    all.undo();
    throw e;
  }
  return all;
}

/**
 * The namespaces of one kind the dump saves, each with the first live task found in it: the
 * root's unless it is criu's; for a nested kind also every other one of the live tasks but criu's
 * (a task back in criu's namespace returns to the restoring criu's).
 */
function namespacesToSave(
  tree: FrozenTree,
  nsIds: NamespaceIds,
  kind: NamespaceKind,
  ours: string | undefined,
): { pid: number; link: string }[] {
  const out = new Map<string, number>();
  const rootLink = nsIds.linksOf(tree.root.pid).get(kind.name);
  if (rootLink !== undefined && rootLink !== ours) out.set(rootLink, tree.root.pid);
  if (kind.nested) {
    for (const t of tree.tasks) {
      if (t.state === "zombie") continue;
      const link = nsIds.linksOf(t.pid).get(kind.name);
      if (link !== undefined && link !== ours && !out.has(link)) out.set(link, t.pid);
    }
  }
  return [...out].map(([link, pid]) => ({ pid, link }));
}

/**
 * A live task outside the root's namespace of a kind that is not saved yet would come back in
 * the root's: refused by name. (Kinds that are saved check their own nesting.)
 */
function checkTasksInRootNamespaces(tree: FrozenTree, nsIds: NamespaceIds, ours: Map<NsName, string>): void {
  for (const t of tree.tasks) {
    if (t.state === "zombie") continue;
    const theirs = nsIds.linksOf(t.pid);
    for (const kind of kinds) {
      if (kind.dump || theirs.get(kind.name) === ours.get(kind.name)) continue;
      refuse(
        t.pid,
        `the ${kind.words} namespace ${theirs.get(kind.name)}`,
        `it is not criu's, and ${kind.words} namespaces are not saved yet`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Restore: which task makes or joins which namespace.

/** A namespace the restore makes: its kind, id, plan, and the task that creates it. */
export interface PlannedNamespace {
  kind: NamespaceKind;
  id: number | undefined;
  plan: NsRestorePlan;
  /** The creator (the root for the root's namespaces), by its pid in the images. */
  creator: RestoreTaskImages;
}

/** A namespace a task enters by setns once it is created: criu's own, or one a task made. */
interface Join {
  kind: NamespaceKind;
  id: number;
  /** The task that made it; undefined for criu's own namespace. */
  creator: RestoreTaskImages | undefined;
}

/**
 * The namespaces a restore makes and where each task goes (see the top of this file). Made at
 * PREPARE by prepareNamespaces; forkTree asks it, for each task, for its clone flags, then tells
 * it when the task exists (created, beforeMemory).
 */
export class RestoreNamespaces {
  /** Every namespace made: the root's first, in the order of the kinds, then the nested ones. */
  readonly planned: PlannedNamespace[] = [];
  #nested: PlannedNamespace[] = [];
  #joins = new Map<RestoreTaskImages, Join[]>();
  /** Where each namespace of the images is, by "KIND:ID": its creator, or null for criu's own. */
  #where = new Map<string, RestoreTaskImages | null>();
  #root: RestoreTaskImages;
  #log: Log;
  /** The holder the root's namespaces were made in, if any (madeInHolder). */
  #holderPid: number | undefined;

  constructor(root: RestoreTaskImages, log: Log) {
    this.#root = root;
    this.#log = log;
  }

  /** The plans of the root's namespaces (the scripts around the namespaces run when there is one). */
  get rootPlans(): NsRestorePlan[] {
    return this.planned.filter((p) => p.creator === this.#root).map((p) => p.plan);
  }

  /**
   * Whether the root's namespaces are made in a holder task, not by the root's clone (a user
   * namespace the tasks join once forked: NsRestorePlan.joinedAfterForking, ns_holder.ts).
   */
  get holder(): boolean {
    return this.rootPlans.some((p) => p.joinedAfterForking);
  }

  /** Whether the root gets a namespace of its own (the namespace scripts run then). */
  get made(): boolean {
    return this.rootPlans.some((p) => !p.onlyBelowRoot);
  }

  /**
   * The root's namespaces were made in holder `pid` (see `holder`): criu gives them what it gives
   * from outside there, and the root's own clone makes none.
   */
  madeInHolder(pid: number): void {
    this.#holderPid = pid;
    for (const plan of this.rootPlans) plan.rootCreated?.(pid);
  }

  /** prepareNamespaces' bookkeeping: a namespace made. */
  addPlan(p: PlannedNamespace): void {
    if (p.creator === this.#root) this.planned.splice(this.planned.length - this.#nested.length, 0, p);
    else {
      this.planned.push(p);
      this.#nested.push(p);
    }
  }

  /** prepareNamespaces' bookkeeping: where namespace `id` of kind `ns` is (null: criu's own). */
  noteWhere(ns: NsName, id: number, creator: RestoreTaskImages | null): void {
    this.#where.set(`${ns}:${id}`, creator);
  }

  /**
   * A path of namespace `id` of kind `ns` once its creator exists (a socket's, say): under the
   * creator's /proc/PID/ns, or criu's own; undefined when the images do not place it.
   */
  pathOf(ns: NsName, id: number): string | undefined {
    const creator = this.#where.get(`${ns}:${id}`);
    if (creator === undefined || creator?.hostPid === 0) return undefined;
    return creator === null ? `/proc/self/ns/${ns}` : `/proc/${creator.hostPid}/ns/${ns}`;
  }

  /** prepareNamespaces' bookkeeping: a namespace task `t` enters once it exists. */
  addJoin(t: RestoreTaskImages, j: Join): void {
    const list = this.#joins.get(t) ?? [];
    list.push(j);
    this.#joins.set(t, list);
  }

  /** The CLONE_NEW* flags task `t` is cloned with: the kinds whose namespace it creates. */
  cloneFlags(t: RestoreTaskImages): bigint {
    let flags = 0n;
    if (t === this.#root && this.#holderPid !== undefined) return flags;
    for (const p of this.planned) {
      if (p.creator === t && !p.plan.inCreator && !p.plan.onlyBelowRoot) flags |= BigInt(p.kind.cloneFlag);
    }
    return flags;
  }

  /** Right after `t`'s clone: what criu gives its new namespaces from outside (rootCreated). */
  created(t: RestoreTaskImages): void {
    if (t === this.#root && this.#holderPid !== undefined) return;
    for (const p of this.planned) if (p.creator === t) p.plan.rootCreated?.(t.hostPid);
  }

  /** Once every task is forked, the helper still there: namespaces tasks enter later (afterForking). */
  afterForking(agents: ReadonlyMap<number, Agent>, master: PuppetMaster): void {
    for (const p of this.planned) p.plan.afterForking?.(agents, master);
  }

  /** How `t`'s own namespaces are made apart from its clone, if they are (NsRestorePlan.ownsApart). */
  ownsApart(
    t: RestoreTaskImages,
    master: PuppetMaster,
  ): ((task: Agent, parent: number, flags: bigint) => void) | undefined {
    for (const p of this.planned) {
      const apart = p.plan.ownsApart?.(t, master);
      if (apart) return apart;
    }
    return undefined;
  }

  /** In `t`'s restore, once its files are back and before its state (beforeTaskState). */
  beforeTaskState(t: RestoreTaskImages, agent: Agent): void {
    for (const p of this.planned) p.plan.beforeTaskState?.(t, agent);
  }

  /**
   * Before `t`'s memory: it enters the namespaces it shares with a task made before it but not
   * with its parent, then its own new namespaces are set up from inside it (beforeMemory).
   */
  beforeMemory(t: RestoreTaskImages, agent: Agent): void {
    for (const j of this.#joins.get(t) ?? []) this.#enter(t, agent, j);
    for (const p of this.planned) if (p.creator === t) p.plan.beforeMemory?.(agent);
  }

  #enter(t: RestoreTaskImages, agent: Agent, j: Join): void {
    const path = j.creator ? `/proc/${j.creator.hostPid}/ns/${j.kind.name}` : `/proc/self/ns/${j.kind.name}`;
    const whose = j.creator ? `that of process ${j.creator.entry.pid}` : "criu's own";
    const who = `Process ${t.entry.pid}`;
    this.#log.debug(`${who} enters the ${j.kind.words} namespace ${j.id} (${whose})`);
    let ours: number;
    try {
      ours = openFd(path, OPEN.RDONLY | OPEN.CLOEXEC);
    } catch (e) {
      throw new RestoreError(`Cannot open ${path} for process ${t.entry.pid}: ${(e as Error).message}`);
    }
    try {
      const theirs = takeFromCriu({ agent }, ours);
      enterNamespaceFd(
        agent,
        theirs,
        j.kind.cloneFlag,
        `${who} cannot enter the ${j.kind.words} namespace ${j.id} (${whose})`,
      );
    } finally {
      closeFd(ours);
    }
  }

  /** Once every task exists: each namespace is filled from inside its creator. */
  fill(agentOf: (t: RestoreTaskImages) => Agent): void {
    for (const p of this.planned) p.plan.fill?.(agentOf(p.creator));
  }

  /** After post-restore, before the tree runs. */
  afterRestore(): void {
    for (const p of this.planned) p.plan.afterRestore?.(p.creator.hostPid);
  }
}

/**
 * The namespaces the restore makes (PREPARE), kind by kind: the root's, and for nested kinds each
 * other one of the images, made by the first task in it (in the order tasks are forked) and
 * entered by the others. Images with a task in a namespace its kind does not restore (not nested,
 * or without images) are refused here, before any process exists. `criuIds` are the dump's criu's
 * ids (inventory's root_ids): a task may be in criu's own namespace.
 */
export function prepareNamespaces(
  ctx: Omit<NsRestoreContext, "id" | "ofRoot">,
  criuIds: task_kobj_ids_entry | undefined,
): RestoreNamespaces {
  const root = ctx.tasks[0]!;
  const out = new RestoreNamespaces(root, ctx.log);
  restoring = out;
  const byPid = new Map(ctx.tasks.map((t) => [t.entry.pid, t]));
  for (const kind of kinds) {
    const rootId = nsIdIn(root.ids, kind.name);
    const rootPlan = kind.prepareRestore?.({ ...ctx, id: rootId, ofRoot: true });
    if (rootPlan) out.addPlan({ kind, id: rootId, plan: rootPlan, creator: root });
    // Where each namespace of the kind is: made by a task, or criu's own.
    const where = new Map<number, RestoreTaskImages | undefined>();
    if (rootId !== undefined) where.set(rootId, rootPlan ? root : undefined);
    const criuId = nsIdIn(criuIds, kind.name);
    if (criuId !== undefined && !where.has(criuId)) where.set(criuId, undefined);
    if (kind.nestsByItself) continue;
    for (const t of ctx.tasks.slice(1)) {
      if (t.zombie || t.helper) continue; // born where its parent is; nothing of it runs
      const id = nsIdIn(t.ids, kind.name);
      const parentId = nsIdIn(byPid.get(t.entry.ppid)?.ids, kind.name);
      if (id === undefined || id === parentId) continue;
      // A kind that is not nested (PID, time: setns moves only the children) keeps every task in its parent's.
      if (!kind.nested && parentId !== undefined) refuseNested(t, kind, id, rootId);
      if (where.has(id)) {
        out.addJoin(t, { kind, id, creator: where.get(id) });
        continue;
      }
      const plan = kind.nested ? kind.prepareRestore?.({ ...ctx, id, ofRoot: false }) : undefined;
      if (!plan) refuseNested(t, kind, id, rootId);
      if (plan.inCreator) {
        throw new RestoreError(
          `Process ${t.entry.pid} is in a ${kind.words} namespace of its own (id ${id}), which can only be made for the root`,
        );
      }
      out.addPlan({ kind, id, plan, creator: t });
      where.set(id, t);
    }
    for (const [id, creator] of where) out.noteWhere(kind.name, id, creator ?? null);
  }
  return out;
}

/**
 * Has `agent`'s task enter the namespace its own fd `fd` names (setns with `flag`), then closes
 * that fd; a refusal is a RestoreError that starts with `failure` ("Process 7 cannot enter ...").
 */
export function enterNamespaceFd(agent: Agent, fd: number | bigint, flag: number, failure: string): void {
  try {
    const r = agent.attempt("setns", NR.setns, fd, flag);
    if (isSyscallError(r)) throw new RestoreError(`${failure}: ${r.message}`, r.errno, { cause: r });
  } finally {
    agent.call("close", NR.close, fd);
  }
}

/** The namespaces of the restore in progress (the last one prepared). */
let restoring: RestoreNamespaces | undefined;

/** RestoreNamespaces.pathOf of the restore in progress, for objects that live in a namespace. */
export function restoredNamespacePath(ns: NsName, id: number): string | undefined {
  return restoring?.pathOf(ns, id);
}

function refuseNested(
  t: RestoreTaskImages,
  kind: NamespaceKind,
  id: number,
  rootId: number | undefined,
): never {
  const why = kind.nested
    ? "the images hold nothing of it"
    : `nested ${kind.words} namespaces are not restored yet`;
  throw new RestoreError(
    `Cannot restore process ${t.entry.pid}: its ${kind.words} namespace (id ${id}) is not the root's (id ${
      rootId ?? "none"
    }) nor criu's; ${why}`,
  );
}
