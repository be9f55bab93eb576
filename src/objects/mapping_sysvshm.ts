/**
 * SysV shared memory attached to a task (shmat): the kernel shows the area as "/SYSV<key>
 * (deleted)", whose inode number is the segment's id. Recorded as CRIU records it: status
 * VMA_AREA_SYSVIPC and VMA_ANON_SHARED, shmid the segment's id, MAP_SHARED|MAP_ANONYMOUS, no pages of the task's own (the segment's
 * contents are in the IPC namespace's images, ipcns.ts).
 *
 * The segments only exist again once the IPC namespace is rebuilt, after every task has its
 * memory: the area is first mapped as a placeholder of plain memory, and the task attaches the
 * segment over it (shmat with SHM_REMAP at the same address) when its namespace is rebuilt
 * (ipcns.ts calls attachSysvSegments for each). A segment is saved only with an IPC namespace of the tree's
 * own (the root's or one nested in it), and only attached whole (an area that is part of a segment is refused by name).
 */
import { refuse } from "./refusal.ts";
import type { vma_entry } from "../images/gen/vma_pb.ts";
import { inNamespaceOf, readSmallFile } from "../../ffi/nsenter.ts";
import { MAP, NR, PROT } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import type { Agent } from "../agent.ts";
import { type MappingBacking, registerMappingBacking } from "./mappings.ts";
import { PAGE_SIZE, VMA } from "./memory.ts";

const SHM_RDONLY = 0o10000;
const SHM_REMAP = 0o40000;
const SHM_EXEC = 0o100000;

/** The size in bytes of segment `id` of the IPC namespace of `pid`, or undefined when it is not listed. */
function segmentSize(pid: number, id: number): bigint | undefined {
  const rows = inNamespaceOf(pid, "ipc", () => readSmallFile("/proc/sysvipc/shm")).split("\n").slice(1);
  for (const row of rows) {
    const cols = row.trim().split(/\s+/);
    if (Number(cols[1]) === id) return BigInt(cols[3]!);
  }
  return undefined;
}

interface PendingAttach {
  agent: Agent;
  entry: vma_entry;
}

/** The restore in progress: whether an IPC namespace will be rebuilt, and the areas waiting for it. */
const pending = { expected: false, areas: [] as PendingAttach[] };

/**
 * At PREPARE, by the IPC namespace kind, for each namespace it plans: whether that one is rebuilt
 * (`first`: the root's, which starts a new restore).
 */
export function expectSysvSegments(rebuilt: boolean, first: boolean): void {
  if (first) {
    pending.expected = false;
    pending.areas = [];
  }
  pending.expected ||= rebuilt;
}

/**
 * Once the IPC namespace that task `inside` is in holds its segments again: every area waiting in
 * a task of that namespace attaches its segment.
 */
export function attachSysvSegments(inside: number): void {
  const ns = (pid: number) => Deno.readLinkSync(`/proc/${pid}/ns/ipc`);
  const here = ns(inside);
  const areas = pending.areas.filter((a) => ns(a.agent.pid) === here);
  pending.areas = pending.areas.filter((a) => !areas.includes(a));
  for (const { agent, entry: e } of areas) {
    const flags = SHM_REMAP | (e.prot & PROT.WRITE ? 0 : SHM_RDONLY) | (e.prot & PROT.EXEC ? SHM_EXEC : 0);
    agent.reset();
    const at = agent.call(
      `shmat(${e.shmid} at 0x${e.start.toString(16)})`,
      NR.shmat,
      e.shmid,
      e.start,
      flags,
    );
    if (at !== e.start) {
      throw new RestoreError(
        `SysV segment ${e.shmid} came back at 0x${at.toString(16)}, not 0x${e.start.toString(16)}`,
      );
    }
    // shmat gives read (and write, and exec) access; a task may have changed it since.
    const given = PROT.READ | (e.prot & PROT.WRITE) | (e.prot & PROT.EXEC);
    if (given !== e.prot) agent.call("mprotect", NR.mprotect, e.start, e.end - e.start, e.prot);
  }
}

export const sysvShmMapping: MappingBacking = {
  name: "SysV shared memory",
  detect(m) {
    return m.path.startsWith("/SYSV") && m.perms[3] === "s";
  },
  dump(ctx, m, entry) {
    const where = `SysV shared memory segment ${m.inode} at 0x${m.start.toString(16)}-0x${
      m.end.toString(16)
    }`;
    if (Deno.readLinkSync(`/proc/${ctx.pid}/ns/ipc`) === Deno.readLinkSync("/proc/self/ns/ipc")) {
      refuse(ctx.pid, where, "SysV shared memory is saved only with an IPC namespace of the tree's own");
    }
    const size = segmentSize(ctx.pid, m.inode);
    const pages = (s: bigint) => (s + BigInt(PAGE_SIZE) - 1n) / BigInt(PAGE_SIZE);
    if (size === undefined || m.offset !== 0n || pages(m.end - m.start) !== pages(size)) {
      refuse(
        ctx.pid,
        where,
        `only a whole segment attached at once can be saved (the segment has ${size ?? "?"} bytes)`,
      );
    }
    // CRIU's restore attaches only an area that is also anonymous shared memory.
    entry.status |= VMA.SYSVIPC | VMA.ANON_SHARED;
    entry.flags |= MAP.ANONYMOUS;
    entry.shmid = BigInt(m.inode);
    entry.pgoff = 0n;
  },
  ownPages() {
    return "none";
  },
  owns(entry) {
    return (entry.status & VMA.SYSVIPC) !== 0;
  },
  sameObject() {
    return false; // each task attaches its segment itself, once the namespace holds it
  },
  open(ctx, e) {
    if (!pending.expected) {
      throw new RestoreError(
        `Process ${ctx.agent.pid} maps SysV shared memory segment ${e.shmid}, but the checkpoint has no IPC namespace to hold it`,
      );
    }
    return -1n; // a placeholder of plain memory until the segment exists
  },
  finish(ctx, vmas) {
    for (const e of vmas) if (e.status & VMA.SYSVIPC) pending.areas.push({ agent: ctx.agent, entry: e });
  },
};

registerMappingBacking(sysvShmMapping);
