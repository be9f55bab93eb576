/**
 * Namespaces: the registry of namespace kinds, one module each (`pidns.ts`, `netns.ts`, `utsns.ts`,
 * `timens.ts`, `ipcns.ts`, `mntns.ts`, `cgroupns.ts`, `userns.ts`). A kind says:
 *   - its name in /proc/PID/ns and in words, and its CLONE_NEW* flag;
 *   - `dump`: saves the tree's namespace of this kind when it is not criu's own (its images, the
 *     action scripts around it such as network-lock), or refuses it. A kind without `dump` is not
 *     saved yet: a tree in such a namespace other than criu's is refused by name, since its restore
 *     would land in criu's (other files behind the same paths, another hostname);
 *   - `prepareRestore`: at PREPARE, reads its images and says whether the root is created in a new
 *     namespace of this kind, and what to do in it before the root is cloned (from the task it is
 *     cloned from), once the root exists and after the restore.
 * The dump and the restore loop over the kinds and know none of them by name.
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
import type { PuppetMaster } from "../restore/puppet.ts";

/** The names of /proc/PID/ns/ that a task's ids image records, in CRIU's order of fields. */
export const NS_NAMES = ["pid", "net", "ipc", "uts", "mnt", "user", "cgroup", "time"] as const;
export type NsName = typeof NS_NAMES[number];

export interface NsDumpContext {
  tree: FrozenTree;
  /** The namespace's id in the ids images. */
  id: number;
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

/** A namespace the restore creates for the root. */
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
   * caller, unlike a time namespace's): then a root made first (--restore-sibling) runs it itself.
   */
  inCreatorTakesItself?: boolean;
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
  /** Every dump, before anything is written: may refuse how the tree's tasks sit in namespaces of this kind (nesting). */
  check?(tree: FrozenTree, nsIds: NamespaceIds): void;
  dump?(ctx: NsDumpContext): NsDumped | void;
  /**
   * When the root's namespace of this kind is criu's: saves the namespaces of this kind that tasks
   * below it are in (user namespaces a task made), which check() let through. `ctx.id` is criu's.
   */
  dumpBelow?(ctx: NsDumpContext): void;
  /** The plan for the root's namespace of this kind; undefined when the root stays in criu's. */
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
    for (const [ns, link] of this.linksOf(pid)) {
      let id = this.#ids.get(link);
      if (id === undefined) this.#ids.set(link, id = this.#ids.size + 1);
      out[ns] = id;
    }
    return out;
  }
}

/** How the tasks sit in namespaces, each kind asked (nesting); the first refusal is thrown. */
export function checkNamespaces(tree: FrozenTree, nsIds: NamespaceIds): void {
  for (const kind of kinds) kind.check?.(tree, nsIds);
}

/**
 * Saves every namespace of the tree's root that is not criu's own, kind by kind, or refuses it.
 * (checkNamespaces has run first.) A live task in a namespace of a kind that is not saved yet is
 * refused here. Returns what the
 * dumped kinds must do when the dump ends; on failure, what was done is undone first.
 */
export function dumpNamespaces(
  tree: FrozenTree,
  nsIds: NamespaceIds,
  base: Omit<NsDumpContext, "tree" | "id">,
): NsDumped {
  const ours = nsIds.linksOf(Deno.pid);
  const done: NsDumped[] = [];
  const all: NsDumped = {
    release: (leaveRunning) => done.forEach((d) => d.release(leaveRunning)),
    undo: () => done.forEach((d) => d.undo()),
  };
  try {
    for (const kind of kinds) {
      const theirs = nsIds.linksOf(tree.root.pid).get(kind.name);
      if (theirs === ours.get(kind.name)) {
        kind.dumpBelow?.({ ...base, tree, nsIds, id: nsIds.idsOf(tree.root.pid)[kind.name]! });
        continue;
      }
      if (!kind.dump) {
        refuse(
          tree.root.pid,
          `the ${kind.words} namespace ${theirs}`,
          `it is not criu's, and ${kind.words} namespaces are not saved yet`,
        );
      }
      const d = kind.dump({ ...base, tree, nsIds, id: nsIds.idsOf(tree.root.pid)[kind.name]! });
      if (d) done.push(d);
    }
    checkTasksInRootNamespaces(tree, nsIds, ours);
  } catch (e) {
    all.undo();
    throw e;
  }
  return all;
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

/**
 * The namespaces the restore makes for the root (PREPARE): the CLONE_NEW* flags of those its clone
 * makes, and the plans of all (none when the root stays in criu's every namespace); `holder` when
 * those flags go to a holder task instead (NsRestorePlan.joinedAfterForking); `made` when the root
 * gets a namespace of its own (the namespace scripts run then).
 */
export function prepareNamespaces(
  ctx: NsRestoreContext,
): { flags: bigint; plans: NsRestorePlan[]; holder: boolean; made: boolean } {
  let flags = 0n;
  const plans: NsRestorePlan[] = [];
  for (const kind of kinds) {
    const plan = kind.prepareRestore?.(ctx);
    if (!plan) continue;
    if (!plan.inCreator && !plan.onlyBelowRoot) flags |= BigInt(kind.cloneFlag);
    plans.push(plan);
  }
  return {
    flags,
    plans,
    holder: plans.some((p) => p.joinedAfterForking),
    made: plans.some((p) => !p.onlyBelowRoot),
  };
}
