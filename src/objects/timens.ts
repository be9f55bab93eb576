/**
 * Time namespaces. A tree in a time namespace of its own gets a new one on restore in which its
 * monotonic and boot-time clocks go on from where they stood at the dump, as CRIU does:
 * timens-ID.img holds the namespace's two clock readings at the dump (not its offsets), and the
 * restore sets the new namespace's offsets to the reading minus the host's clock at that moment.
 *
 * A namespace's offsets can only be written before any task enters it. The root therefore is not
 * cloned with CLONE_NEWTIME (that would put it in a namespace with offsets frozen at zero):
 * instead the restore helper the root is cloned from unshares CLONE_NEWTIME, which makes the
 * namespace for its children only, criu writes the helper's /proc/PID/timens_offsets, and the
 * root's clone then enters that namespace (see NsRestorePlan.inCreator). Every other task is cloned
 * from the root or its descendants and inherits it.
 */
import { create } from "@bufbuild/protobuf";
import { type timens_entry, timens_entrySchema } from "../images/gen/timens_pb.ts";
import { KINDS } from "../images/kinds.ts";
import { CLOCK_BOOTTIME, clockNs } from "../../ffi/process.ts";
import { writeSmallFile } from "../../ffi/nsenter.ts";
import { CLONE, NR } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import { refuse } from "./refusal.ts";
import { registerNamespaceKind } from "./namespaces.ts";
import type { Agent } from "../agent.ts";

const CLOCK_MONOTONIC = 1;
const NS_PER_SEC = 1_000_000_000n;

interface Offsets {
  monotonic: bigint;
  boottime: bigint;
}

/** The offsets of the time namespace `pid`'s children are born in (ns), from /proc/PID/timens_offsets. */
function offsetsOf(pid: number): Offsets {
  const path = `/proc/${pid}/timens_offsets`;
  const out: Partial<Offsets> = {};
  for (const line of Deno.readTextFileSync(path).split("\n")) {
    const m = /^(monotonic|boottime)\s+(-?\d+)\s+(\d+)$/.exec(line.trim());
    if (m) out[m[1] as keyof Offsets] = BigInt(m[2]!) * NS_PER_SEC + BigInt(m[3]!);
  }
  if (out.monotonic === undefined || out.boottime === undefined) {
    throw new Error(`${path} does not hold a monotonic and a boottime offset`);
  }
  return out as Offsets;
}

/** The host's clocks (those of the initial time namespace), in ns: ours minus our namespace's offsets. */
function hostClocks(): Offsets {
  const ours = offsetsOf(Deno.pid);
  return {
    monotonic: clockNs(CLOCK_MONOTONIC) - ours.monotonic,
    boottime: clockNs(CLOCK_BOOTTIME) - ours.boottime,
  };
}

function timespec(ns: bigint): { tvSec: bigint; tvNsec: bigint } {
  return { tvSec: ns / NS_PER_SEC, tvNsec: ns % NS_PER_SEC };
}

function nanoseconds(ts: { tvSec: bigint; tvNsec: bigint } | undefined, what: string): bigint {
  if (!ts) throw new RestoreError(`The time namespace image has no ${what} clock`);
  return ts.tvSec * NS_PER_SEC + ts.tvNsec;
}

/** "CLOCK SECONDS NANOSECONDS" with the nanoseconds in [0, 1e9), as the kernel takes an offset. */
function offsetLine(clockId: number, ns: bigint): string {
  let sec = ns / NS_PER_SEC;
  let nsec = ns % NS_PER_SEC;
  if (nsec < 0n) {
    nsec += NS_PER_SEC;
    sec -= 1n;
  }
  return `${clockId} ${sec} ${nsec}\n`;
}

/** Makes the namespace in `creator` (for its children) with clocks going on from `saved`. */
function makeNamespace(creator: Agent, saved: timens_entry): void {
  creator.call("unshare(CLONE_NEWTIME)", NR.unshare, CLONE.NEWTIME);
  const host = hostClocks();
  const monotonic = nanoseconds(saved.monotonic, "monotonic") - host.monotonic;
  const boottime = nanoseconds(saved.boottime, "boottime") - host.boottime;
  writeSmallFile(
    `/proc/${creator.pid}/timens_offsets`,
    offsetLine(CLOCK_MONOTONIC, monotonic) + offsetLine(CLOCK_BOOTTIME, boottime),
  );
}

registerNamespaceKind({
  name: "time",
  words: "time",
  cloneFlag: CLONE.NEWTIME,
  check(tree, nsIds) {
    // Every live task shares the root's time namespace.
    const root = nsIds.linksOf(tree.root.pid).get("time");
    for (const t of tree.tasks) {
      const theirs = nsIds.linksOf(t.pid).get("time");
      if (t.state === "zombie" || theirs === root) continue;
      refuse(
        t.pid,
        `time namespace ${theirs}`,
        `it differs from the root's (${root}); nested time namespaces are not supported`,
      );
    }
  },
  dump(ctx) {
    // /proc/PID/timens_offsets shows the namespace of the root's children: it must be its own.
    const rootPid = ctx.tree.root.pid;
    const own = Deno.readLinkSync(`/proc/${rootPid}/ns/time`);
    const forChildren = Deno.readLinkSync(`/proc/${rootPid}/ns/time_for_children`);
    if (forChildren !== own) {
      refuse(
        rootPid,
        `time namespace for children ${forChildren}`,
        `it differs from its own (${own}); nested time namespaces are not supported`,
      );
    }
    const theirs = offsetsOf(rootPid);
    const host = hostClocks();
    ctx.dir.write(KINDS.TIMENS, ctx.id, [
      create(timens_entrySchema, {
        monotonic: timespec(host.monotonic + theirs.monotonic),
        boottime: timespec(host.boottime + theirs.boottime),
      }),
    ]);
  },
  prepareRestore(ctx) {
    const id = ctx.tasks[0]!.ids?.timeNsId;
    if (id === undefined || !ctx.dir.has(KINDS.TIMENS, id)) return undefined;
    const [saved] = ctx.dir.read<timens_entry>(KINDS.TIMENS, id);
    if (!saved) throw new RestoreError(`timens-${id}.img is empty`);
    return { inCreator: (creator) => makeNamespace(creator, saved) };
  },
});
