/**
 * The network namespace a socket is made in at restore. A socket belongs for good to the namespace
 * it was made in, which its entry records (CRIU's ns_id: inet, unix, netlink and packet sockets), and that
 * need not be the namespace of the task restoring it: a task may make a socket, then move to
 * another namespace with setns (or a child that moved inherits it). Such a socket is opened with
 * the task moved into the socket's namespace for the time of its open (setns there, then back),
 * as CRIU's restore switches namespaces around each socket it makes.
 */
import type { file_entry } from "../images/gen/fdinfo_pb.ts";
import { closeFd, OPEN, openFd } from "../../ffi/fd.ts";
import { CLONE, NR } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import { type RestoreFilesContext, takeFromCriu } from "./files.ts";
import { restoredNamespacePath } from "./namespaces.ts";

/** The ns_id a socket entry records; undefined for other files and entries without one. */
function socketNsId(e: file_entry): number | undefined {
  return e.isk?.nsId || e.usk?.nsId || e.nlsk?.nsId || e.psk?.nsId || undefined;
}

/** Runs `open` (which makes the file of `entry` in the task) in the socket's network namespace. */
export function openInSocketNetns(ctx: RestoreFilesContext, entry: file_entry, open: () => number): number {
  const nsId = socketNsId(entry);
  const path = nsId === undefined ? undefined : restoredNamespacePath("net", nsId);
  const own = `/proc/${ctx.agent.pid}/ns/net`;
  if (!path || Deno.readLinkSync(path) === Deno.readLinkSync(own)) return open();
  ctx.log.debug(`File ${entry.id} is a socket of network namespace ${nsId}: made there by task ${ctx.nsPid}`);
  const there = namespaceFdInTask(ctx, path);
  try {
    const back = namespaceFdInTask(ctx, own);
    try {
      enter(ctx, there, `network namespace ${nsId}`);
      try {
        return open();
      } finally {
        enter(ctx, back, "its own network namespace again");
      }
    } finally {
      ctx.agent.call("close", NR.close, back);
    }
  } finally {
    ctx.agent.call("close", NR.close, there);
  }
}

/** An fd of the namespace at `path` (criu's view) in the task. */
function namespaceFdInTask(ctx: RestoreFilesContext, path: string): number {
  const ours = openFd(path, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    return takeFromCriu(ctx, ours);
  } finally {
    closeFd(ours);
  }
}

function enter(ctx: RestoreFilesContext, fd: number, what: string): void {
  const r = ctx.agent.attempt("setns(net)", NR.setns, fd, CLONE.NEWNET);
  if (typeof r !== "bigint") {
    throw new RestoreError(`Task ${ctx.nsPid} cannot enter ${what}: ${r.message}`, r.errno);
  }
}
