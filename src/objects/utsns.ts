/**
 * UTS namespaces. A tree in a UTS namespace of its own (`unshare --uts`, a container) gets a new
 * one on restore with the same host and domain names, as CRIU does: utsns-ID.img holds the two
 * names (ID is the namespace's id in the ids images). The names are read with criu's thread inside
 * the tree's namespace, and set again by the root task itself once it exists in the new one.
 */
import { create } from "@bufbuild/protobuf";
import { type utsns_entry, utsns_entrySchema } from "../images/gen/utsns_pb.ts";
import { KINDS } from "../images/kinds.ts";
import { inNamespaceOf, readSmallFile } from "../../ffi/nsenter.ts";
import { CLONE, NR } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import { refuse } from "./refusal.ts";
import { registerNamespaceKind } from "./namespaces.ts";
import type { Agent } from "../agent.ts";

/** The kernel's limit on either name (__NEW_UTS_LEN). */
const UTS_NAME_MAX = 64;

function readNames(pid: number): { nodename: string; domainname: string } {
  return inNamespaceOf(pid, "uts", () => ({
    nodename: readSmallFile("/proc/sys/kernel/hostname").replace(/\n$/, ""),
    domainname: readSmallFile("/proc/sys/kernel/domainname").replace(/\n$/, ""),
  }));
}

function setNames(root: Agent, names: utsns_entry): void {
  root.reset();
  for (
    const [what, nr, value] of [
      ["sethostname", NR.sethostname, names.nodename],
      ["setdomainname", NR.setdomainname, names.domainname],
    ] as const
  ) {
    const bytes = new TextEncoder().encode(value);
    if (bytes.length > UTS_NAME_MAX) {
      throw new RestoreError(
        `The saved ${what.slice(3)} is ${bytes.length} bytes long, more than ${UTS_NAME_MAX}`,
      );
    }
    root.call(`${what}(${value})`, nr, root.alloc(bytes.length, bytes), bytes.length);
  }
}

registerNamespaceKind({
  name: "uts",
  words: "UTS",
  cloneFlag: CLONE.NEWUTS,
  check(tree, nsIds) {
    // Every live task shares the root's UTS namespace: nested ones are not saved.
    const root = nsIds.linksOf(tree.root.pid).get("uts");
    for (const t of tree.tasks) {
      const theirs = nsIds.linksOf(t.pid).get("uts");
      if (t.state === "zombie" || theirs === root) continue;
      refuse(
        t.pid,
        `UTS namespace ${theirs}`,
        `it differs from the root's (${root}); nested UTS namespaces are not supported`,
      );
    }
  },
  dump(ctx) {
    ctx.dir.write(KINDS.UTSNS, ctx.id, [create(utsns_entrySchema, readNames(ctx.tree.root.pid))]);
  },
  prepareRestore(ctx) {
    const id = ctx.tasks[0]!.ids?.utsNsId;
    if (id === undefined || !ctx.dir.has(KINDS.UTSNS, id)) return undefined;
    const [names] = ctx.dir.read<utsns_entry>(KINDS.UTSNS, id);
    if (!names) throw new RestoreError(`utsns-${id}.img is empty`);
    return { fill: (root) => setNames(root, names) };
  },
});
