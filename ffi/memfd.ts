/**
 * A memfd's contents, moved between the memfd and a pages image by the kernel (sendfile), never
 * through our heap: out as whole pages of the ranges that hold data, back into a new memfd.
 */
import { addressOf, call, callBig, libc } from "./libc.ts";
import { dataRanges, OPEN, openFd } from "./fd.ts";
import { NR } from "./syscalls.ts";

const PAGE = 4096;
const F_GET_SEALS = 1034;
/** memfd_create flags. */
export const MFD = { CLOEXEC: 1, ALLOW_SEALING: 2, HUGETLB: 4 } as const;
/** The seal that forbids further seals (a memfd made without MFD_ALLOW_SEALING has just it). */
export const F_SEAL_SEAL = 1;
const SEEK_SET = 0;
/** sendfile moves at most this much per call (Linux caps it near 2 GiB). */
const SENDFILE_MAX = 1 << 30;

/** A run of pages of the memfd, at `offset`, stored one after another in the pages image. */
export interface PageRun {
  offset: number;
  pages: number;
}

/** The seals of the memfd behind `path` (a /proc/PID/fd/N link; seals belong to the inode). */
export function memfdSeals(path: string): number {
  const fd = openFd(path, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    return call("fcntl(F_GET_SEALS)", libc.fcntl(fd, F_GET_SEALS, 0n), path);
  } finally {
    libc.close(fd);
  }
}

export const F_ADD_SEALS = 1033;

/** Adds `seals` to the memfd behind `path` (a /proc link of a task's fd or area; opened for writing, which sealing needs). */
export function addMemfdSeals(path: string, seals: number): void {
  const fd = openFd(path, OPEN.RDWR | OPEN.CLOEXEC);
  try {
    call("fcntl(F_ADD_SEALS)", libc.fcntl(fd, F_ADD_SEALS, BigInt(seals)), path);
  } finally {
    libc.close(fd);
  }
}

function seek(fd: number, at: number, what: string): void {
  callBig(
    "lseek",
    libc.syscall(BigInt(NR.lseek), BigInt(fd), BigInt(at), BigInt(SEEK_SET), 0n, 0n, 0n),
    what,
  );
}

/** Copies `len` bytes of `src` from `from` to `dst`'s file position. */
function sendAll(dst: number, src: number, from: number, len: number, what: string): void {
  const offset = new BigInt64Array([BigInt(from)]);
  let left = len;
  while (left > 0) {
    const n = callBig(
      "sendfile",
      libc.syscall(
        BigInt(NR.sendfile),
        BigInt(dst),
        BigInt(src),
        addressOf(offset),
        BigInt(Math.min(left, SENDFILE_MAX)),
        0n,
        0n,
      ),
      what,
    );
    if (n === 0) throw new Error(`${what} ends at ${offset[0]}, before ${from + len}`);
    left -= n;
  }
}

/**
 * Writes the pages of the memfd at `srcPath` (`size` bytes) that hold data into a new file at
 * `pagesPath`; returns the runs. The last page of a file whose size is not a multiple of the page
 * is padded with zeros, as a page of memory is.
 */
export function copyMemfdOut(srcPath: string, size: number, pagesPath: string): PageRun[] {
  const src = openFd(srcPath, OPEN.RDONLY | OPEN.CLOEXEC);
  let dst = -1;
  try {
    dst = openFd(pagesPath, OPEN.WRONLY | OPEN.CREAT | OPEN.TRUNC | OPEN.CLOEXEC, 0o644);
    const runs: PageRun[] = [];
    let written = 0;
    for (const [start, end] of dataRanges(src, size)) {
      const first = Math.floor(start / PAGE) * PAGE;
      const pages = Math.ceil((end - first) / PAGE);
      seek(dst, written, pagesPath);
      sendAll(dst, src, first, Math.min(end, size) - first, srcPath);
      runs.push({ offset: first, pages });
      written += pages * PAGE;
    }
    callBig(
      "ftruncate",
      libc.syscall(BigInt(NR.ftruncate), BigInt(dst), BigInt(written), 0n, 0n, 0n, 0n),
      pagesPath,
    );
    return runs;
  } finally {
    libc.close(src);
    if (dst >= 0) libc.close(dst);
  }
}

/** Puts the runs of `pagesPath` back into the file at `dstPath` (no further than `size` bytes). */
export function copyMemfdIn(
  dstPath: string,
  pagesPath: string,
  runs: readonly PageRun[],
  size: number,
): void {
  const dst = openFd(dstPath, OPEN.WRONLY | OPEN.CLOEXEC);
  let src = -1;
  try {
    src = openFd(pagesPath, OPEN.RDONLY | OPEN.CLOEXEC);
    let from = 0;
    for (const run of runs) {
      const len = Math.min(run.pages * PAGE, size - run.offset);
      if (len > 0) {
        seek(dst, run.offset, dstPath);
        sendAll(dst, src, from, len, pagesPath);
      }
      from += run.pages * PAGE;
    }
  } finally {
    libc.close(dst);
    if (src >= 0) libc.close(src);
  }
}
