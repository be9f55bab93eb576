/**
 * The access mode of the file behind a file-backed area, for regular files and memfds alike
 * (its own module so that importing it registers no backing out of order).
 */
import type { MapsEntry } from "../../ffi/proc.ts";
import { O } from "../../ffi/syscalls.ts";
import { mapFilesPath } from "./memory.ts";

/** The mode bits of a /proc/PID/map_files link: the read and write rights of its open file. */
const LINK_READ = 0o400;
const LINK_WRITE = 0o200;

/**
 * The access mode of the file the task mapped, as CRIU records it in fdflags: the kernel gives a
 * map_files link the rights of the open file behind the area. When the link cannot be read, the
 * least the area needs.
 */
export function fdflagsOf(pid: number, m: MapsEntry): number {
  let mode: number | null = null;
  try {
    mode = Deno.lstatSync(mapFilesPath(pid, m)).mode;
  } catch {
    // no map_files (an old kernel, or no rights): guess as CRIU does
  }
  if (mode === null) return m.perms[3] === "s" && m.perms[1] === "w" ? O.RDWR : O.RDONLY;
  const r = (mode & LINK_READ) !== 0;
  const w = (mode & LINK_WRITE) !== 0;
  return r && w ? O.RDWR : w ? O.WRONLY : O.RDONLY;
}
