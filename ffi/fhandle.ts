/**
 * File handles (name_to_handle_at / open_by_handle_at): how inotify and fanotify name what they
 * watch. A handle is opened again on a mount of the filesystem it belongs to, found by its device.
 * `struct file_handle` is laid out here: u32 handle_bytes, i32 handle_type, then the bytes.
 */
import { addressOf, callBig, libc } from "./libc.ts";
import { OPEN, openFd } from "./fd.ts";
import { NR } from "./syscalls.ts";

const O_PATH = 0o10000000;
const MAX_HANDLE_SZ = 128;

/** A kernel dev_t as fdinfo prints it (major << 20 | minor) as major and minor. */
export function kernelDev(sdev: number): { major: number; minor: number } {
  return { major: sdev >>> 20, minor: sdev & 0xfffff };
}

/** A mount point of the filesystem on device major:minor, from our /proc/self/mountinfo; undefined if none. */
export function mountOfDev(major: number, minor: number): string | undefined {
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const f = line.split(" ");
    if (f[2] === `${major}:${minor}` && f[3] === "/") return unescapeMount(f[4]!);
  }
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const f = line.split(" ");
    if (f[2] === `${major}:${minor}`) return unescapeMount(f[4]!); // a bind mount of part of it
  }
  return undefined;
}

function unescapeMount(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Opens the file a handle names, O_PATH, through the mount at `mountPoint`; returns our fd.
 * Throws a SyscallError (ESTALE: the file is gone).
 */
export function openByHandle(mountPoint: string, type: number, handle: Uint8Array): number {
  if (handle.length > MAX_HANDLE_SZ) throw new Error(`A file handle of ${handle.length} bytes is too long`);
  const fh = new Uint8Array(8 + handle.length);
  const v = new DataView(fh.buffer);
  v.setUint32(0, handle.length, true);
  v.setInt32(4, type, true);
  fh.set(handle, 8);
  // Not O_PATH: the kernel takes the mount fd with fdget(), which does not see O_PATH files.
  const mount = openFd(mountPoint, OPEN.RDONLY | OPEN.DIRECTORY | OPEN.CLOEXEC);
  try {
    return callBig(
      "open_by_handle_at",
      libc.syscall(
        BigInt(NR.open_by_handle_at),
        BigInt(mount),
        addressOf(fh),
        BigInt(O_PATH | OPEN.CLOEXEC),
        0n,
        0n,
        0n,
      ),
      mountPoint,
    );
  } finally {
    libc.close(mount);
  }
}
