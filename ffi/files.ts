/**
 * Files of our own process for the file kinds that move contents or names around: kernel-side
 * copies between two fds (copy_file_range, sendfile when the file systems differ), hard links to
 * a file another task holds open (linkat through /proc/PID/fd), a raw fd that an image writer can
 * write to, and the layout of struct flock for locks taken by remote fcntl.
 */
import { addressOf, callBig, cstr, lastErrno, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";
import { AT_FDCWD, NR, S } from "./syscalls.ts";

const AT_SYMLINK_FOLLOW = 0x400;
const EXDEV = 18;
const EINVAL = 22;
const ENOSYS = 38;
const EOPNOTSUPP = 95;
/** The most one copy_file_range/sendfile call is asked to move (the kernel caps it near 2 GiB). */
const COPY_STEP = 1 << 30;

/** Numbers of the syscalls the lock kinds run in a task. */
export const LOCK_NR = { flock: NR.flock } as const;

/** fcntl commands and flock(2) operations for file locks and leases. */
export const LOCK = {
  F_SETLK: 6,
  F_OFD_SETLK: 37,
  F_SETLEASE: 1024,
  F_GETLEASE: 1025,
  F_RDLCK: 0,
  F_WRLCK: 1,
  F_UNLCK: 2,
  LOCK_SH: 1,
  LOCK_EX: 2,
  LOCK_NB: 4,
} as const;

/** struct flock on x86_64: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid. */
export const FLOCK_SIZE = 32;
export function flockStruct(type: number, start: bigint, len: bigint, pid: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(FLOCK_SIZE);
  const v = new DataView(b.buffer);
  v.setInt16(0, type, true);
  v.setInt16(2, 0, true); // SEEK_SET
  v.setBigInt64(8, start, true);
  v.setBigInt64(16, len, true);
  v.setInt32(24, pid, true);
  return b;
}

function sys(nr: number, ...args: bigint[]): bigint {
  const a = [...args, 0n, 0n, 0n, 0n, 0n, 0n];
  return libc.syscall(BigInt(nr), a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!);
}

/**
 * Copies `len` bytes of `src` from offset `srcOff` to `dst`, in the kernel: at `dstOff`, or at
 * dst's own position (which moves on) when `dstOff` is null. `what` names the copy in errors.
 */
export function copyRange(
  src: number,
  srcOff: number,
  dst: number,
  dstOff: number | null,
  len: number,
  what: string,
): void {
  const inOff = new BigInt64Array([BigInt(srcOff)]);
  const outOff = new BigInt64Array([BigInt(dstOff ?? 0)]);
  const inPtr = addressOf(inOff);
  const outPtr = dstOff === null ? 0n : addressOf(outOff);
  let left = len;
  while (left > 0) {
    const step = BigInt(Math.min(left, COPY_STEP));
    let n = sys(NR.copy_file_range, BigInt(src), inPtr, BigInt(dst), outPtr, step, 0n);
    if (n === -1n) {
      const err = new SyscallError("copy_file_range", lastErrno(), what);
      if (![EXDEV, EINVAL, ENOSYS, EOPNOTSUPP].includes(err.errno)) throw err;
      // Across file systems (or where copy_file_range is missing): sendfile, still in the kernel.
      if (dstOff !== null) callBig("lseek", sys(NR.lseek, BigInt(dst), outOff[0]!, 0n), what);
      n = sys(NR.sendfile, BigInt(dst), BigInt(src), inPtr, step);
      if (n === -1n) throw new SyscallError("sendfile", lastErrno(), what);
      if (dstOff !== null) outOff[0] = outOff[0]! + n;
    }
    if (n === 0n) throw new Error(`${what}: the source ends ${left} bytes early`);
    left -= Number(n);
  }
}

/**
 * A new name `newPath` for the file a /proc magic link leads to (/proc/PID/fd/N,
 * /proc/PID/map_files/A-B), even one whose names are all gone from view: linkat follows it.
 */
export function linkOpenFile(procLink: string, newPath: string): void {
  const from = cstr(procLink);
  const to = cstr(newPath);
  const r = sys(
    NR.linkat,
    BigInt(AT_FDCWD),
    addressOf(from),
    BigInt(AT_FDCWD),
    addressOf(to),
    BigInt(AT_SYMLINK_FOLLOW),
  );
  callBig("linkat", r, newPath);
}

/**
 * A device node or FIFO at `path`: `mode` has the file type (S_IFCHR, S_IFBLK, S_IFIFO) and the
 * permissions, `rdev` the device number as the kernel encodes it (stat's st_rdev).
 */
export function makeNode(path: string, mode: number, rdev: bigint): void {
  const name = cstr(path);
  callBig("mknodat", sys(NR.mknodat, BigInt(AT_FDCWD), addressOf(name), BigInt(mode), rdev), path);
}

/** Sets the size of an open file (holes where nothing is written). */
export function truncateFd(fd: number, size: number, what: string): void {
  callBig("ftruncate", sys(NR.ftruncate, BigInt(fd), BigInt(size)), what);
}

/** An fd of ours that an image writer writes to; its position is where copies land too. */
export class RawFdSink {
  constructor(readonly fd: number, readonly what: string) {}
  write(bytes: Uint8Array): void {
    const buf = new Uint8Array(bytes); // a copy the FFI may point at
    let done = 0;
    while (done < buf.length) {
      done += callBig("write", libc.write(this.fd, buf.subarray(done), BigInt(buf.length - done)), this.what);
    }
  }
  close(): void {
    libc.close(this.fd);
  }
}

const O_PATH_CLOEXEC = 0o10000000 | 0o2000000;
const PATH_MAX = 4096;

/** A new FIFO at `path` with permission bits `mode` (mknod, as CRIU makes a ghost FIFO). */
export function makeFifo(path: string, mode: number): void {
  const p = cstr(path);
  callBig(
    "mknodat",
    sys(NR.mknodat, BigInt(AT_FDCWD), addressOf(p), BigInt(S.IFIFO | (mode & 0o7777)), 0n),
    path,
  );
}

/**
 * What the symlink a /proc magic link leads to (/proc/PID/fd/N of an O_PATH|O_NOFOLLOW fd) points
 * at, read through an O_PATH fd of the link itself (readlinkat with an empty path), even when the
 * link's name is gone.
 */
export function symlinkTargetOf(procLink: string): string {
  const p = cstr(procLink);
  const fd = Number(callBig("open(O_PATH)", BigInt(libc.open(p, O_PATH_CLOEXEC, 0)), procLink));
  try {
    const buf = new Uint8Array(PATH_MAX);
    const empty = cstr("");
    const n = callBig(
      "readlinkat",
      sys(NR.readlinkat, BigInt(fd), addressOf(empty), addressOf(buf), BigInt(buf.length)),
      procLink,
    );
    return new TextDecoder().decode(buf.subarray(0, n));
  } finally {
    libc.close(fd);
  }
}
