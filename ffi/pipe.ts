/** Looking into a pipe without taking anything out of it (tee into a pipe of our own). */
import { addressOf, call, callBig, cstr, libc } from "./libc.ts";
import { NR } from "./syscalls.ts";

const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;
const O_RDONLY = 0;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const SPLICE_F_NONBLOCK = 2;

/**
 * The bytes queued in the pipe behind `/proc/PID/fd/N`, and the pipe's capacity. The pipe is
 * reopened for reading through /proc, its content duplicated by tee(2) and read from our copy.
 */
export function peekPipe(procFdPath: string): { data: Uint8Array<ArrayBuffer>; capacity: number } {
  const src = call("open", libc.open(cstr(procFdPath), O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0), procFdPath);
  const ends = new Int32Array(2);
  try {
    const capacity = call("fcntl(F_GETPIPE_SZ)", libc.fcntl(src, F_GETPIPE_SZ, 0n));
    callBig(
      "pipe2",
      libc.syscall(BigInt(NR.pipe2), addressOf(ends), BigInt(O_NONBLOCK | O_CLOEXEC), 0n, 0n, 0n, 0n),
    );
    libc.fcntl(ends[1]!, F_SETPIPE_SZ, BigInt(capacity));
    const r = libc.syscall(
      BigInt(NR.tee),
      BigInt(src),
      BigInt(ends[1]!),
      BigInt(capacity),
      BigInt(SPLICE_F_NONBLOCK),
      0n,
      0n,
    );
    const queued = r < 0n ? 0 : Number(r); // EAGAIN: the pipe is empty
    const data = new Uint8Array(queued);
    let off = 0;
    while (off < queued) {
      const n = callBig("read(pipe copy)", libc.read(ends[0]!, data.subarray(off), BigInt(queued - off)));
      if (n <= 0) break;
      off += n;
    }
    return { data, capacity };
  } finally {
    libc.close(src);
    if (ends[0]) libc.close(ends[0]);
    if (ends[1]) libc.close(ends[1]);
  }
}
