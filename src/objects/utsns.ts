/**
 * UTS namespaces. A tree in a UTS namespace of its own (`unshare --uts`, a container) gets a new
 * one on restore with the same host and domain names, as CRIU does: utsns-ID.img holds the two
 * names (ID is the namespace's id in the ids images). The names are read with criu's thread inside
 * the namespace, and set again by the task that makes the new one, once it exists in it.
 *
 * Nested: each UTS namespace a live task of the tree is in, other than criu's, is saved the same
 * way (utsns-ID.img per id) and made again by the first task in it (namespaces.ts). CRIU 4.2
 * refuses to dump a nested UTS namespace ("Can't dump nested uts namespace") and to restore one.
 */
import { create } from "@bufbuild/protobuf";
import { type utsns_entry, utsns_entrySchema } from "../images/gen/utsns_pb.ts";
import { KINDS } from "../images/kinds.ts";
import { inNamespaceOf, readSmallFile } from "../../ffi/nsenter.ts";
import { CLONE, NR } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
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
  nested: true,
  dump(ctx) {
    ctx.dir.write(KINDS.UTSNS, ctx.id, [create(utsns_entrySchema, readNames(ctx.pid))]);
  },
  prepareRestore(ctx) {
    const id = ctx.id;
    if (id === undefined || !ctx.dir.has(KINDS.UTSNS, id)) return undefined;
    const [names] = ctx.dir.read<utsns_entry>(KINDS.UTSNS, id);
    if (!names) throw new RestoreError(`utsns-${id}.img is empty`);
    return { fill: (creator) => setNames(creator, names) };
  },
});
