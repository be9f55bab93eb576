/**
 * Ptys whose slave is bind-mounted elsewhere (runc binds its console's slave onto /dev/console).
 * A new devpts at restore has no slaves, so the bind would have no source: as CRIU does
 * (devpts_restore), the mount tree opens the devpts's ptmx until it gets the slave's index and keeps
 * that master here. The terminal fds (tty.ts) then use it as the job's pty: with orphan_pts_master
 * its master goes to the RPC client and the tasks open the very slave the bind shows.
 */
import { closeFd } from "../../ffi/fd.ts";
import { openPtyAt, setPtyLocked } from "../../ffi/pty.ts";
import { RestoreError } from "../errors.ts";

/** The masters made for bound slaves, by pts index (one restore runs at a time in a process). */
const masters = new Map<number, number>();

/** The pts index a bind of a devpts shows (its root `/N`), or undefined for any other root. */
export function boundPtsIndex(root: string): number | undefined {
  const m = /^\/(\d+)$/.exec(root);
  return m ? Number(m[1]) : undefined;
}

/** Makes pty `index` in the devpts whose ptmx is `ptmx` (a path criu can open), unlocked, and keeps its master. */
export function makeBoundPty(index: number, ptmx: string, mountpoint: string): void {
  if (masters.has(index)) return;
  let fd: number;
  try {
    fd = openPtyAt(index, 3000, ptmx);
  } catch (e) {
    throw new RestoreError(
      `Cannot make pty ${index} of the devpts for the bind at ${mountpoint}: ${(e as Error).message}`,
      0,
      { cause: e },
    );
  }
  masters.set(index, fd);
  setPtyLocked(fd, false);
}

/** The kept master of pty `index`, now the caller's to close; undefined when none was made. */
export function takeBoundPty(index: number): number | undefined {
  const fd = masters.get(index);
  masters.delete(index);
  return fd;
}

/** Closes the masters no terminal took (end of a restore, or its failure). */
export function dropBoundPtys(): void {
  for (const fd of masters.values()) closeFd(fd);
  masters.clear();
}
