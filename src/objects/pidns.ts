/**
 * PID namespaces. A tree whose root is the init (pid 1) of a PID namespace of its own comes back
 * as the init of a new one; the pids the tasks see there are what pstree.img records, so nothing
 * else is saved. Tasks in a PID namespace nested below the root's are refused, as in CRIU.
 */
import { CLONE } from "../../ffi/syscalls.ts";
import { DumpError } from "../errors.ts";
import { registerNamespaceKind } from "./namespaces.ts";

registerNamespaceKind({
  name: "pid",
  words: "PID",
  cloneFlag: CLONE.NEWPID,
  check(tree, nsIds) {
    const root = tree.root;
    if (root.ns.pid !== root.pid && root.ns.pid !== 1) {
      throw new DumpError(
        `Process ${root.pid} lives in a PID namespace of which it is not the init (it is ${root.ns.pid} there); dump the namespace's init instead`,
      );
    }
    const rootNs = nsIds.linksOf(root.pid).get("pid");
    for (const t of tree.tasks.slice(1)) {
      if (t.state !== "zombie" && nsIds.linksOf(t.pid).get("pid") !== rootNs) {
        throw new DumpError(
          `Process ${t.pid} is in a PID namespace nested below the dump root's; dump that namespace's init on its own (nested PID namespaces are not supported)`,
        );
      }
    }
  },
  dump() {
    // pstree.img holds the pids the tasks see in their namespace: nothing more to save.
  },
  prepareRestore(ctx) {
    return ctx.tasks[0]!.entry.pid === 1 ? {} : undefined;
  },
});
