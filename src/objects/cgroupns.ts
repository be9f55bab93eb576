/**
 * Cgroup namespaces. A tree in a cgroup namespace of its own gets a new one on restore, rooted
 * where it was, as CRIU does: nothing is saved apart from cgroup.img, whose sets say, for each
 * hierarchy, how much of a task's path lies above the namespace's root (cgns_prefix). Before the
 * root is cloned, the task it is cloned from enters the cgroups at those prefixes and unshares a
 * cgroup namespace there (a namespace is rooted at the cgroups of the task that makes it); the
 * root is born in it and then moved on into its own cgroups below (cgroups_restore.ts). With
 * `--manage-cgroups ignore` the tree stays in criu's cgroup namespace, as in CRIU.
 */
import { CLONE, NR } from "../../ffi/syscalls.ts";
import { refuse } from "./refusal.ts";
import { registerNamespaceKind } from "./namespaces.ts";

registerNamespaceKind({
  name: "cgroup",
  words: "cgroup",
  cloneFlag: CLONE.NEWCGROUP,
  check(tree, nsIds) {
    // Every live task shares the root's cgroup namespace: one prefix per hierarchy is saved.
    const root = nsIds.linksOf(tree.root.pid).get("cgroup");
    for (const t of tree.tasks) {
      const theirs = nsIds.linksOf(t.pid).get("cgroup");
      if (t.state === "zombie" || theirs === root) continue;
      refuse(
        t.pid,
        `cgroup namespace ${theirs}`,
        `it differs from the root's (${root}); nested cgroup namespaces are not supported`,
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
