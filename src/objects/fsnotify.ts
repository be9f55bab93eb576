/**
 * What inotify and fanotify share: the file a watch or mark is on, named by its file handle as
 * fdinfo shows it (`fhandle-bytes`, `fhandle-type`, `f_handle` in hex) on the filesystem of its
 * device, kept in an `fh_entry` as CRIU keeps it (the bytes in u64 words) with the path it opens
 * to at dump as a hint; and at restore that file reopened by its handle in criu and handed to the
 * task, which reaches it as /proc/self/fd/N.
 */
import { create } from "@bufbuild/protobuf";
import { type fh_entry, fh_entrySchema } from "../images/gen/fh_pb.ts";
import { kernelDev, mountOfDev, openByHandle } from "../../ffi/fhandle.ts";
import { closeFd } from "../../ffi/fd.ts";
import { errnoName, isSyscallError } from "../../ffi/errors.ts";
import type { RestoreFilesContext } from "./files.ts";
import { takeFromCriu } from "./files.ts";
import { refuse } from "./refusal.ts";
import { RestoreError } from "../errors.ts";

/** A handle is stored as at least this many u64 words (fh_entry_sizes.min_entries). */
const HANDLE_WORDS = 16;

/** A file handle as fdinfo shows it, on device `sdev` (the kernel's encoding). */
export interface Handle {
  sdev: number;
  type: number;
  bytes: Uint8Array;
}

/** The handle of an fdinfo line's `fhandle-bytes:N fhandle-type:T f_handle:HEX` fields. */
export function parseHandle(sdev: number, bytesHex: string, typeHex: string, hex: string): Handle {
  const bytes = new Uint8Array(parseInt(bytesHex, 16));
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2) || "0", 16);
  return { sdev, type: parseInt(typeHex, 16), bytes };
}

/** Opens a handle's file in criu, O_PATH; returns our fd. Throws a SyscallError or an Error. */
function openHandle(sdev: number, type: number, bytes: Uint8Array): number {
  const { major, minor } = kernelDev(sdev);
  const mount = mountOfDev(major, minor);
  if (mount === undefined) throw new Error(`no mount of device ${major}:${minor}`);
  return openByHandle(mount, type, bytes);
}

/**
 * The handle as fh_entry keeps it, with the path it opens to now as the hint. A file that cannot
 * be opened by its handle, or was removed, is refused (`what` names the watch or mark).
 */
export function handleEntry(pid: number, what: string, h: Handle): fh_entry {
  let ours: number;
  try {
    ours = openHandle(h.sdev, h.type, h.bytes);
  } catch (e) {
    const why = isSyscallError(e) ? errnoName(e.errno) : (e as Error).message;
    refuse(pid, what, `its file cannot be opened by its handle (${why})`);
  }
  let path: string;
  try {
    path = Deno.readLinkSync(`/proc/self/fd/${ours}`);
  } finally {
    closeFd(ours);
  }
  if (path.endsWith(" (deleted)")) refuse(pid, what, `it is on a removed file (${path})`);
  const padded = new Uint8Array(Math.max(HANDLE_WORDS, Math.ceil(h.bytes.length / 8)) * 8);
  padded.set(h.bytes);
  const v = new DataView(padded.buffer);
  const handle = Array.from({ length: padded.length / 8 }, (_, i) => v.getBigUint64(8 * i, true));
  return create(fh_entrySchema, { bytes: h.bytes.length, type: h.type, handle, path });
}

function handleBytes(fh: fh_entry): Uint8Array {
  const out = new Uint8Array(fh.handle.length * 8);
  const v = new DataView(out.buffer);
  fh.handle.forEach((w, i) => v.setBigUint64(8 * i, w, true));
  return out.slice(0, fh.bytes);
}

/**
 * Where the task reaches a watched file: /proc/self/fd/N of a copy of criu's open of its handle
 * (`taken`, for the caller to close), or the path hint when the handle cannot be used here (no
 * such mount, a task in a PID namespace of its own).
 */
export function reachWatched(
  ctx: RestoreFilesContext,
  sdev: number,
  fh: fh_entry | undefined,
  what: string,
): { path: string; taken: number } {
  try {
    const ours = openHandle(sdev, fh?.type ?? 0, fh ? handleBytes(fh) : new Uint8Array(0));
    try {
      const taken = takeFromCriu(ctx, ours);
      return { path: `/proc/self/fd/${taken}`, taken };
    } finally {
      closeFd(ours);
    }
  } catch (e) {
    if (!fh?.path) {
      throw new RestoreError(`Cannot open the file of ${what}: ${(e as Error).message}`, 0, { cause: e });
    }
    ctx.log.debug(`${what}: by its path ${fh.path} (${(e as Error).message})`);
    return { path: fh.path, taken: -1 };
  }
}
