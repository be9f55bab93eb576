/**
 * Waiting for children that are not under ptrace (RPC workers, restored trees, a swrk child), and
 * adopting orphans. ffi/ptrace.ts decodes statuses for traced tasks; here the raw status word is
 * kept, because the RPC's WAIT_PID answer carries it as is.
 */
import { call, lastErrno, libc } from "./libc.ts";
import { ERRNO, SyscallError } from "./errors.ts";

const WNOHANG = 1;
const PR_SET_CHILD_SUBREAPER = 36;

/** waitpid(pid, &status, WNOHANG?): the raw status, or null when `noHang` and it has not changed. */
export function waitRaw(pid: number, noHang = false): { pid: number; status: number } | null {
  const status = new Int32Array(1);
  for (;;) {
    const r = libc.waitpid(pid, new Uint8Array(status.buffer), noHang ? WNOHANG : 0);
    if (r > 0) return { pid: r, status: status[0]! };
    if (r === 0) return null;
    const errno = lastErrno();
    if (errno !== ERRNO.EINTR) throw new SyscallError("waitpid", errno, `pid ${pid}`);
  }
}

/** A raw status in words: "exited with 3", "killed by signal 9". */
export function describeStatus(status: number): string {
  const signal = status & 0x7f;
  if (signal === 0) return `exited with ${(status >> 8) & 0xff}`;
  if (signal === 0x7f) return `stopped by signal ${(status >> 8) & 0xff}`;
  return `killed by signal ${signal}`;
}

/** Makes orphaned descendants ours (PR_SET_CHILD_SUBREAPER), so that we can reap them. */
export function setChildSubreaper(on: boolean): void {
  call("prctl(PR_SET_CHILD_SUBREAPER)", libc.prctl(PR_SET_CHILD_SUBREAPER, on ? 1n : 0n, 0n, 0n, 0n));
}

/** kill(pid, sig); false when the process no longer exists. */
export function signalProcess(pid: number, signal: number): boolean {
  if (libc.kill(pid, signal) === 0) return true;
  const errno = lastErrno();
  if (errno === ERRNO.ESRCH) return false;
  throw new SyscallError("kill", errno, `pid ${pid}, signal ${signal}`);
}
