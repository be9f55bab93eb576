/** pidfds of criu's own that refer to a process which has ended (as a dumped pidfd of a dead process did). */
import { callBig, libc } from "./libc.ts";
import { spawn } from "./spawn.ts";
import { NR } from "./syscalls.ts";

const SIGKILL = 9;

/** A pidfd of ours on process `pid` (a pid of our namespace); close it when done. */
export function openPidfd(pid: number): number {
  return callBig(`pidfd_open(${pid})`, libc.syscall(BigInt(NR.pidfd_open), BigInt(pid), 0n, 0n, 0n, 0n, 0n));
}

/**
 * One pidfd per entry of `flags`, all on one short-lived process of ours that is killed and reaped
 * before this returns: every pidfd then refers to the same dead process.
 */
export function deadPidfds(flags: readonly number[]): number[] {
  const pid = spawn("/bin/sleep", ["sleep", "1000"], { env: {} });
  const fds: number[] = [];
  try {
    for (const f of flags) {
      fds.push(
        callBig("pidfd_open", libc.syscall(BigInt(NR.pidfd_open), BigInt(pid), BigInt(f), 0n, 0n, 0n, 0n)),
      );
    }
  } catch (e) {
    fds.forEach((fd) => libc.close(fd));
    throw e;
  } finally {
    libc.kill(pid, SIGKILL);
    const status = new Int32Array(1);
    // The child is ours: only an interruption (EINTR) keeps waitpid from reaping it.
    for (let i = 0; i < 100 && libc.waitpid(pid, new Uint8Array(status.buffer), 0) < 0; i++);
  }
  return fds;
}
