/** Process-level syscalls criu-ts issues from its own process about another one. */
import { addressOf, callBig, lastErrno, libc } from "./libc.ts";
import { ERRNO } from "./errors.ts";
import { NR } from "./syscalls.ts";

const MEMBARRIER_CMD_GET_REGISTRATIONS = 1 << 9;
const PRIO_PROCESS = 0;
const KCMP_FILE = 0;
const SIG_IGN = 1n;

export const RLIMIT_COUNT = 16;

/**
 * Is there a process or thread with this id (a zombie counts)? kill(id, 0) tells without sending
 * anything; it is ten times cheaper than a failing stat of /proc/ID.
 */
export function processExists(pid: number): boolean {
  if (pid <= 0) return false;
  return libc.kill(pid, 0) === 0 || lastErrno() === ERRNO.EPERM;
}

export function getRlimit(pid: number, resource: number): { cur: bigint; max: bigint } {
  const old = new BigUint64Array(2);
  callBig(
    "prlimit64",
    libc.syscall(BigInt(NR.prlimit64), BigInt(pid), BigInt(resource), 0n, addressOf(old), 0n, 0n),
  );
  return { cur: old[0]!, max: old[1]! };
}

export function setRlimit(pid: number, resource: number, cur: bigint, max: bigint): void {
  const lim = new BigUint64Array([cur, max]);
  callBig(
    "prlimit64",
    libc.syscall(BigInt(NR.prlimit64), BigInt(pid), BigInt(resource), addressOf(lim), 0n, 0n, 0n),
    `pid ${pid}, resource ${resource}`,
  );
}

export function getRobustList(tid: number): { head: bigint; len: number } {
  const head = new BigUint64Array(1);
  const len = new BigUint64Array(1);
  callBig(
    "get_robust_list",
    libc.syscall(BigInt(NR.get_robust_list), BigInt(tid), addressOf(head), addressOf(len), 0n, 0n, 0n),
  );
  return { head: head[0]!, len: Number(len[0]!) };
}

/**
 * A thread's scheduling: nice value, policy and real-time priority, asked of the kernel directly
 * (three syscalls cost less than reading and parsing /proc/TID/stat for the same three numbers).
 * The policy keeps its SCHED_RESET_ON_FORK flag, as CRIU's images do.
 */
export function schedulingOf(tid: number): { nice: number; policy: number; prio: number } {
  const t = BigInt(tid);
  // The raw getpriority() answers 20 - nice, so that no valid answer looks like an error.
  const priority = callBig(
    "getpriority",
    libc.syscall(BigInt(NR.getpriority), BigInt(PRIO_PROCESS), t, 0n, 0n, 0n, 0n),
  );
  const policy = callBig(
    "sched_getscheduler",
    libc.syscall(BigInt(NR.sched_getscheduler), t, 0n, 0n, 0n, 0n, 0n),
  );
  const param = new Int32Array(1);
  callBig("sched_getparam", libc.syscall(BigInt(NR.sched_getparam), t, addressOf(param), 0n, 0n, 0n, 0n));
  return { nice: 20 - Number(priority), policy: Number(policy), prio: param[0]! };
}

/** Do two fds (of the same or different processes) refer to the same open file description? */
export function sameOpenFile(pid1: number, fd1: number, pid2: number, fd2: number): boolean {
  const r = libc.syscall(
    BigInt(NR.kcmp),
    BigInt(pid1),
    BigInt(pid2),
    BigInt(KCMP_FILE),
    BigInt(fd1),
    BigInt(fd2),
    0n,
  );
  return r === 0n;
}

export const CLOCK_BOOTTIME = 7;

/** A clock's time in nanoseconds (CLOCK_BOOTTIME counts like /proc/uptime, at full resolution). */
export function clockNs(clockId: number): bigint {
  const ts = new BigInt64Array(2);
  callBig(
    "clock_gettime",
    libc.syscall(BigInt(NR.clock_gettime), BigInt(clockId), addressOf(ts), 0n, 0n, 0n, 0n),
  );
  return ts[0]! * 1_000_000_000n + ts[1]!;
}

/** kcmp resource types. */
export const KCMP = { VM: 1, FILES: 2, FS: 3, SIGHAND: 4 } as const;

/**
 * kcmp of a kernel resource (mm, fd table, fs, signal handlers) of two processes: 0 when they
 * share it; otherwise 1 or 2 as the first one's object sorts before or after the second's (an
 * order that holds for the life of the objects, so a sorted list can be searched), or a
 * negative errno.
 */
export function compareResource(pid1: number, pid2: number, type: number): number {
  return Number(libc.syscall(BigInt(NR.kcmp), BigInt(pid1), BigInt(pid2), BigInt(type), 0n, 0n, 0n));
}

/**
 * Does this process ignore `signal` (SIG_IGN)? `nohup` leaves SIGHUP so, and a shell leaves SIGINT
 * so for a job it runs in the background; a program should not catch what it was told to ignore.
 */
export function signalIgnored(signal: number): boolean {
  const old = new BigUint64Array(4); // struct kernel_sigaction: handler, flags, restorer, mask
  callBig(
    "rt_sigaction",
    libc.syscall(BigInt(NR.rt_sigaction), BigInt(signal), 0n, addressOf(old), 8n, 0n, 0n),
  );
  return old[0] === SIG_IGN;
}

/**
 * A copy of fd `fd` of process `pid` in our own process (the same open file description), with
 * O_CLOEXEC; close it when done. pidfd_open + pidfd_getfd: we trace the process, so we may.
 */
export function copyFdOf(pid: number, fd: number): number {
  const pidfd = callBig(
    `pidfd_open(${pid})`,
    libc.syscall(BigInt(NR.pidfd_open), BigInt(pid), 0n, 0n, 0n, 0n, 0n),
  );
  try {
    return callBig(
      `pidfd_getfd(${pid}, ${fd})`,
      libc.syscall(BigInt(NR.pidfd_getfd), BigInt(pidfd), BigInt(fd), 0n, 0n, 0n, 0n),
    );
  } finally {
    libc.close(pidfd);
  }
}

let membarrierRegistrations: boolean | undefined;

/** Can a process tell its membarrier registrations (MEMBARRIER_CMD_GET_REGISTRATIONS, Linux 6.3)? */
export function canGetMembarrierRegistrations(): boolean {
  membarrierRegistrations ??= libc.syscall(
    BigInt(NR.membarrier),
    BigInt(MEMBARRIER_CMD_GET_REGISTRATIONS),
    0n,
    0n,
    0n,
    0n,
    0n,
  ) >= 0n;
  return membarrierRegistrations;
}
