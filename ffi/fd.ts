/** Raw fds of our own process, for handing to children (Deno 2 does not expose its fd numbers). */
import { call, callBig, cstr, lastErrno, libc } from "./libc.ts";
import { ERRNO, SyscallError } from "./errors.ts";
import { NR } from "./syscalls.ts";

export const OPEN = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  CREAT: 0o100,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  DIRECTORY: 0o200000,
  CLOEXEC: 0o2000000,
} as const;

export function openFd(path: string, flags: number, mode = 0o644): number {
  return call("open", libc.open(cstr(path), flags, mode), path);
}

/** Closes one of our fds; a negative number (an error result passed along) is ignored. */
const O_PATH_CLOEXEC = 0o10000000 | 0o2000000;

/**
 * Is there a file at `path`? A failing open answers "no" with an errno, where a failing
 * Deno.statSync would throw, which costs ten times more.
 */
export function pathExists(path: string): boolean {
  const fd = libc.open(cstr(path), O_PATH_CLOEXEC, 0);
  if (fd < 0) return false;
  libc.close(fd);
  return true;
}

export function closeFd(fd: number): void {
  if (fd >= 0) libc.close(fd);
}

const SEEK_DATA = 3;
const SEEK_HOLE = 4;

/** The byte ranges of a file that hold data (SEEK_DATA/SEEK_HOLE), below `size`. */
export function dataRanges(fd: number, size: number): [number, number][] {
  const out: [number, number][] = [];
  let at = 0;
  while (at < size) {
    const start = Number(
      libc.syscall(BigInt(NR.lseek), BigInt(fd), BigInt(at), BigInt(SEEK_DATA), 0n, 0n, 0n),
    );
    if (start < 0 || start >= size) break; // ENXIO: no data past `at`
    const end = Math.min(
      size,
      Number(libc.syscall(BigInt(NR.lseek), BigInt(fd), BigInt(start), BigInt(SEEK_HOLE), 0n, 0n, 0n)),
    );
    out.push([start, end]);
    at = end;
  }
  return out;
}

/** pread until `buf` is full; a short file is an error naming `what`. */
export function preadFull(fd: number, buf: Uint8Array<ArrayBuffer>, offset: number, what: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = callBig(
      "pread",
      libc.pread(fd, buf.subarray(done), BigInt(buf.length - done), BigInt(offset + done)),
      what,
    );
    if (n === 0) throw new Error(`${what} ends at ${offset + done}, before ${offset + buf.length}`);
    done += n;
  }
}

/** pwrite all of `buf`. */
export function pwriteFull(fd: number, buf: Uint8Array<ArrayBuffer>, offset: number, what: string): void {
  let done = 0;
  while (done < buf.length) {
    done += callBig(
      "pwrite",
      libc.pwrite(fd, buf.subarray(done), BigInt(buf.length - done), BigInt(offset + done)),
      what,
    );
  }
}

/** write() all of `buf` to one of our fds (a pipe, a socket: no offset). */
export function writeFull(fd: number, buf: Uint8Array<ArrayBuffer>, what: string): void {
  let done = 0;
  while (done < buf.length) {
    done += callBig("write", libc.write(fd, buf.subarray(done), BigInt(buf.length - done)), what);
  }
}

const F_GETFD = 1;

/** Is `fd` open in our own process? */
export function isOpenFd(fd: number): boolean {
  return libc.syscall(BigInt(NR.fcntl), BigInt(fd), BigInt(F_GETFD), 0n, 0n, 0n, 0n) >= 0n;
}

const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;

/** A new pipe of our own, both ends close-on-exec: [read end, write end]. */
export function pipeFds(nonblockingRead = false): [number, number] {
  const fds = new Int32Array(2);
  const r = libc.syscall(
    BigInt(NR.pipe2),
    BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(fds))),
    BigInt(O_CLOEXEC),
    0n,
    0n,
    0n,
    0n,
  );
  callBig("pipe2", r);
  if (nonblockingRead) {
    const F_SETFL = 4;
    callBig(
      "fcntl(F_SETFL)",
      libc.syscall(BigInt(NR.fcntl), BigInt(fds[0]!), BigInt(F_SETFL), BigInt(O_NONBLOCK), 0n, 0n, 0n),
    );
  }
  return [fds[0]!, fds[1]!];
}

/** Makes one of our fds non-blocking. */
export function setNonblocking(fd: number): void {
  const F_GETFL = 3, F_SETFL = 4;
  const flags = callBig(
    "fcntl(F_GETFL)",
    libc.syscall(BigInt(NR.fcntl), BigInt(fd), BigInt(F_GETFL), 0n, 0n, 0n, 0n),
  );
  callBig(
    "fcntl(F_SETFL)",
    libc.syscall(BigInt(NR.fcntl), BigInt(fd), BigInt(F_SETFL), BigInt(flags | O_NONBLOCK), 0n, 0n, 0n),
  );
}

/**
 * One read() from a non-blocking fd of ours: the bytes read, "eof", or undefined when nothing is
 * there yet. A pty master whose slaves are all closed reads EIO: that is its end too.
 */
export function readSome(fd: number, max = 4096): Uint8Array<ArrayBuffer> | "eof" | undefined {
  const buf = new Uint8Array(max);
  const n = libc.read(fd, buf, BigInt(max));
  if (n === -1n) {
    const errno = lastErrno();
    if (errno === ERRNO.EAGAIN) return undefined;
    if (errno === ERRNO.EIO) return "eof";
    throw new SyscallError("read", errno, `fd ${fd}`);
  }
  return n === 0n ? "eof" : buf.slice(0, Number(n));
}
