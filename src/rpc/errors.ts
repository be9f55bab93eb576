/**
 * Errors of the RPC modes, and how any error becomes the `cr_errno` of a reply. CRIU answers a
 * request it cannot set up (bad or unsupported options, a missing images dir) with EBADRQC; other
 * failures carry the errno of the system call that failed, when there is one.
 */
import { DumpError, RestoreError } from "../errors.ts";
import { isSyscallError } from "../../ffi/errors.ts";

export const CR_ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  ECHILD: 10,
  EACCES: 13,
  EINVAL: 22,
  EBADRQC: 56,
  EBADMSG: 74,
  EOPNOTSUPP: 95,
} as const;

/** A request that cannot be carried out as asked; `crErrno` goes into the reply. */
export class RpcRequestError extends Error {
  override name = "RpcRequestError";
  /**
   * The log file the request named, when it could be worked out before the request was refused:
   * runc shows only the errno and the log's path, so the reason must be written there too.
   */
  requestLog: string | undefined;
  constructor(message: string, readonly crErrno: number = CR_ERRNO.EBADRQC) {
    super(message);
  }
}

/** The client answered a notification with a failure, or went away instead of answering. */
export class NotifyError extends Error {
  override name = "NotifyError";
}

/** A packet that is not a message of the protocol. */
export class RpcProtocolError extends Error {
  override name = "RpcProtocolError";
}

/** The errno to report for `e`: its own, or that of the failed system call behind it; 0 if none. */
export function crErrnoOf(e: unknown): number {
  for (let cur: unknown = e, depth = 0; cur !== undefined && depth < 8; depth++) {
    if (cur instanceof RpcRequestError) return cur.crErrno;
    if (isSyscallError(cur)) return cur.errno;
    if ((cur instanceof DumpError || cur instanceof RestoreError) && cur.errno) return cur.errno;
    if (cur instanceof Deno.errors.NotFound) return CR_ERRNO.ENOENT;
    if (cur instanceof Deno.errors.PermissionDenied) return CR_ERRNO.EACCES;
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return 0;
}

/** The message of any thrown value, for `cr_errmsg`. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
