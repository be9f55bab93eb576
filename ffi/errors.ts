/** Errors raised at the FFI boundary: a failed native call carries its name, errno and context. */

/** Linux x86_64 errno numbers, the ones criu-ts can meet, by number. */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  8: "ENOEXEC",
  9: "EBADF",
  10: "ECHILD",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  25: "ENOTTY",
  26: "ETXTBSY",
  27: "EFBIG",
  28: "ENOSPC",
  29: "ESPIPE",
  30: "EROFS",
  32: "EPIPE",
  34: "ERANGE",
  35: "EDEADLK",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  39: "ENOTEMPTY",
  40: "ELOOP",
  61: "ENODATA",
  71: "EPROTO",
  75: "EOVERFLOW",
  77: "EBADFD",
  88: "ENOTSOCK",
  92: "ENOPROTOOPT",
  93: "EPROTONOSUPPORT",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  104: "ECONNRESET",
  107: "ENOTCONN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  512: "ERESTARTSYS",
  513: "ERESTARTNOINTR",
  514: "ERESTARTNOHAND",
  516: "ERESTART_RESTARTBLOCK",
};

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

/** A native call failed: `call` is its name (e.g. "ptrace(PTRACE_SEIZE)"), `errno` what it said. */
export class SyscallError extends Error {
  override name = "SyscallError";
  constructor(readonly call: string, readonly errno: number, readonly detail?: string) {
    super(`${call} failed: ${errnoName(errno)}${detail ? ` (${detail})` : ""}`);
  }
  get code(): string {
    return errnoName(this.errno);
  }
}

/**
 * A failed Deno file operation as a SyscallError naming `call` (what we tried, on which path):
 * Deno's own message ("No such file or directory (os error 2): open '/x'") carries a stack and a
 * wording no CRIU user expects. Anything that is not an OS error is thrown as it is.
 */
export function fromOsError(call: string, e: unknown): SyscallError {
  const code = (e as { code?: unknown })?.code;
  const errno = typeof code === "string" ? errnoOfName(code) : undefined;
  if (errno === undefined) throw e;
  return new SyscallError(call, errno);
}

/** The OS's words for a failed Deno file operation ("No such file or directory"), without Deno's "(os error 2): open '/x'". */
export function osReason(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  const at = m.indexOf(" (os error");
  return at > 0 ? m.slice(0, at) : m;
}

function errnoOfName(name: string): number | undefined {
  for (const [n, known] of Object.entries(ERRNO_NAMES)) if (known === name) return Number(n);
  return undefined;
}

export function isSyscallError(e: unknown, code?: string): e is SyscallError {
  return e instanceof SyscallError && (code === undefined || e.code === code);
}

export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  EAGAIN: 11,
  ENOMEM: 12,
  EFAULT: 14,
  EEXIST: 17,
  EINVAL: 22,
  ENOSPC: 28,
  ENOSYS: 38,
  EOPNOTSUPP: 95,
  EPROTO: 71,
  ECONNRESET: 104,
  ERESTARTSYS: 512,
  ERESTARTNOINTR: 513,
  ERESTARTNOHAND: 514,
  ERESTART_RESTARTBLOCK: 516,
} as const;
