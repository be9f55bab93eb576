/**
 * pidfds: the process a pidfd refers to, by its pid as the tree's PID namespace sees it (CRIU's
 * nspid, the pid pstree.img has), or -1 for a process that has ended. A live one must be in the
 * dumped tree, so that it exists again after the restore, where the task opens a new pidfd on it
 * (pidfd_open) by the pid it sees it by: the same for a task of the tree's namespace, its pid in
 * the task's own namespace for a task in a nested one (pidns.ts), which must see it. Pidfds of an ended process
 * (the same one when they share an inode) come back as pidfds on a short-lived process of criu's
 * own that is killed before they are handed over, as CRIU does it.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { pidfd_entrySchema } from "../images/gen/pidfd_pb.ts";
import { deadPidfds } from "../../ffi/pidfd.ts";
import { pidNamespaceChain } from "../../ffi/nsenter.ts";
import { closeFd } from "../../ffi/fd.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import {
  addFdFile,
  emptyFown,
  type FdKind,
  type FileTable,
  registerFdKind,
  type RestoreFilesContext,
} from "./files.ts";
import { takeFromCriu } from "./files.ts";
import { refuse } from "./refusal.ts";
import { RestoreError } from "../errors.ts";

/** pidfd_open's flag for a pidfd of one thread: it is O_EXCL's value. */
const PIDFD_THREAD = O.EXCL;

/** Restore: criu's own pidfds on dead processes not handed over yet, by file id. */
function deadOnes(table: FileTable): Map<number, number> {
  return table.stateOf("pidfd", () => new Map<number, number>());
}

function parentOf(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

function tgidOf(pid: number): number {
  const m = /^Tgid:\s*(\d+)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) : pid;
}

/** Where the tree's PID namespace (its root's own) sits in NSpid lines: criu's own is 0. */
function treeLevel(root: number): number {
  const m = /^NSpid:(.*)$/m.exec(Deno.readTextFileSync(`/proc/${root}/status`));
  return Math.max(0, (m?.[1] ?? "").split(/\s+/).filter((s) => s !== "").length - 1);
}

/** Is `pid` (a process, or a thread of one) the tree's root or one of its descendants? */
function inTree(pid: number, root: number): boolean {
  try {
    for (let p = tgidOf(pid); p > 0; p = parentOf(p)) {
      if (p === root) return true;
    }
  } catch {
    // gone while we looked: not one of the tree's frozen tasks
  }
  return false;
}

export const pidfdKind: FdKind = {
  name: "pidfd",
  type: fd_types.PIDFD,
  detect(fd) {
    return fd.target === "anon_inode:[pidfd]" || fd.target.startsWith("pidfd:");
  },
  dump(ctx, fd) {
    const what = `fd ${fd.fd} (pidfd)`;
    const pid = Number(fd.info.get("Pid") ?? "NaN");
    const nspids = (fd.info.get("NSpid") ?? "").split(/\s+/).filter((s) => s !== "");
    const ino = Number(fd.info.get("ino") ?? "0");
    if (!Number.isInteger(pid) || pid === 0) {
      refuse(ctx.pid, what, `the process it refers to is not visible from here (Pid: ${fd.info.get("Pid")})`);
    }
    let nspid = -1;
    if (pid !== -1) {
      const root = ctx.session.opts.tree ?? ctx.pid;
      if (!inTree(pid, root)) {
        refuse(ctx.pid, what, `it refers to process ${pid}, which is not in the dumped tree`);
      }
      const own = Deno.readLinkSync(`/proc/${ctx.pid}/ns/pid`);
      if (!pidNamespaceChain(pid).includes(own)) {
        refuse(
          ctx.pid,
          what,
          `it refers to process ${pid}, which the task's PID namespace (${own}) cannot see`,
        );
      }
      nspid = Number(nspids[treeLevel(root)] ?? pid);
    }
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.PIDFD,
        id,
        pidfd: create(pidfd_entrySchema, {
          id,
          ino: ino % 2 ** 32, // pidfs inode numbers are 64-bit; the image keeps 32
          flags: fd.flags & ~(O.ACCMODE | O.CLOEXEC),
          nspid,
          fown: emptyFown(),
        }),
      }));
  },
  open(ctx, entry) {
    const p = entry.pidfd;
    if (!p) throw new RestoreError(`File ${entry.id} has no pidfd data`);
    const flags = p.flags & (O.NONBLOCK | PIDFD_THREAD);
    if (p.nspid !== -1) {
      const seen = ctx.pidSeen ? ctx.pidSeen(p.nspid) : p.nspid;
      if (seen === undefined) {
        throw new RestoreError(
          `Process ${ctx.nsPid} holds a pidfd of process ${p.nspid}, which its PID namespace cannot see`,
        );
      }
      return Number(ctx.agent.call(`pidfd_open(${seen})`, NR.pidfd_open, seen, flags));
    }
    return handOverDead(ctx, entry.id, p.ino);
  },
  endRestore(session) {
    const dead = deadOnes(session.table);
    for (const fd of dead.values()) closeFd(fd);
    dead.clear();
  },
};

/**
 * The task's copy of criu's pidfd for dead-process pidfd `id`. The first pidfd of a dead process
 * (its inode) makes them all, each with its own flags, on one process that then ends.
 */
function handOverDead(ctx: RestoreFilesContext, id: number, ino: number): number {
  const dead = deadOnes(ctx.table);
  if (!dead.has(id)) {
    const same = ctx.table.entries.filter((e) => e.pidfd && e.pidfd.nspid === -1 && e.pidfd.ino === ino);
    const fds = deadPidfds(same.map((e) => e.pidfd!.flags & (O.NONBLOCK | PIDFD_THREAD)));
    same.forEach((e, i) => dead.set(e.id, fds[i]!));
  }
  const ours = dead.get(id)!;
  dead.delete(id);
  try {
    return takeFromCriu(ctx, ours);
  } finally {
    closeFd(ours);
  }
}

registerFdKind(pidfdKind);
