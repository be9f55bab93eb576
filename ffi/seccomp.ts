/**
 * Seccomp: a task's filters read through ptrace, and the layouts that installing them takes.
 *
 * - PTRACE_SECCOMP_GET_FILTER (ptrace.ts `seccompFilter`) gives one classic BPF program of the
 *   task's stack, index 0 the first installed; PTRACE_SECCOMP_GET_METADATA its flags
 *   (struct seccomp_metadata { u64 filter_off; u64 flags; }).
 * - seccomp(SECCOMP_SET_MODE_FILTER, flags, struct sock_fprog *) installs one: sock_fprog is
 *   { u16 len; 6 bytes of padding; struct sock_filter *filter; }, 16 bytes, each sock_filter 8.
 */
import { addressOf, lastErrno, libc } from "./libc.ts";
import { ERRNO, SyscallError } from "./errors.ts";

export const SECCOMP_MODE = { DISABLED: 0, STRICT: 1, FILTER: 2 } as const;
export const SECCOMP_SET_MODE_FILTER = 1;
export const SECCOMP_FILTER_FLAG = { TSYNC: 1, LOG: 2, SPEC_ALLOW: 4 } as const;
/** prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT): the only way into strict mode. */
export const PR_SET_SECCOMP = 22;
export const SOCK_FILTER_SIZE = 8;
export const SOCK_FPROG_SIZE = 16;

const PTRACE_SECCOMP_GET_METADATA = 0x420d;
const METADATA_SIZE = 16;

/**
 * The flags filter `index` of task `tid` was installed with (SECCOMP_FILTER_FLAG_LOG...), 0 on a
 * kernel that cannot tell them (EIO, as CRIU takes it).
 */
export function seccompFilterFlags(tid: number, index: number): bigint {
  const meta = new BigUint64Array([BigInt(index), 0n]);
  const rc = libc.ptrace(
    PTRACE_SECCOMP_GET_METADATA,
    tid,
    BigInt(METADATA_SIZE),
    addressOf(new Uint8Array(meta.buffer)),
  );
  if (rc === -1n) {
    const errno = lastErrno();
    if (errno === ERRNO.EIO) return 0n;
    throw new SyscallError("ptrace(PTRACE_SECCOMP_GET_METADATA)", errno, `thread ${tid}, filter ${index}`);
  }
  return meta[1]!;
}

/** A struct sock_fprog for `len` instructions at `filter` (an address in the task). */
export function sockFprog(len: number, filter: bigint): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(SOCK_FPROG_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(0, len, true);
  v.setBigUint64(8, filter, true);
  return b;
}
