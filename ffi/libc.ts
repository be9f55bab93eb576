/**
 * The one place criu-ts opens libc. Every native symbol the tool calls is in one of the groups
 * below; every call is checked right after it returns (`call()`/`callBig()`, or inline in the
 * hottest paths) so that errno is read before any other native code can overwrite it.
 *
 * ptrace and syscall are variadic in glibc; on x86_64 the variadic and fixed calling conventions
 * agree for integer arguments, so declaring them with fixed parameters (i32 where C reads an int,
 * i64 for longs and pointers) is sound here.
 */
import { SyscallError } from "./errors.ts";

/** What every command needs; bound at startup. */
const core = {
  __errno_location: { parameters: [], result: "pointer" }, // int *(void)
  // long ptrace(enum request, pid_t pid, void *addr, void *data)
  ptrace: { parameters: ["i32", "i32", "i64", "i64"], result: "i64" },
  // long syscall(long nr, ...): up to six register arguments
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"], result: "i64" },
  // pid_t waitpid(pid_t pid, int *status, int options)
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  kill: { parameters: ["i32", "i32"], result: "i32" }, // int kill(pid_t, int sig)
  getpid: { parameters: [], result: "i32" },
  // ssize_t process_vm_readv(pid, const iovec *local, ulong n, const iovec *remote, ulong n, ulong flags)
  process_vm_readv: { parameters: ["i32", "buffer", "u64", "buffer", "u64", "u64"], result: "i64" },
  process_vm_writev: { parameters: ["i32", "buffer", "u64", "buffer", "u64", "u64"], result: "i64" },
  // ssize_t pread(int fd, void *buf, size_t n, off_t off) / pwrite likewise
  pread: { parameters: ["i32", "buffer", "u64", "i64"], result: "i64" },
  pwrite: { parameters: ["i32", "buffer", "u64", "i64"], result: "i64" },
  // int open(const char *path, int flags, mode_t mode)
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  write: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  dup: { parameters: ["i32"], result: "i32" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" }, // int fcntl(int, int cmd, long arg)
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" }, // int ioctl(int, ulong req, void *)
  setsid: { parameters: [], result: "i32" },
  getsid: { parameters: ["i32"], result: "i32" },
  getpgid: { parameters: ["i32"], result: "i32" },
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  umask: { parameters: ["u32"], result: "u32" },
  setns: { parameters: ["i32", "i32"], result: "i32" }, // int setns(int fd, int nstype)
} as const satisfies Deno.ForeignLibraryInterface;

/** Starting programs (restore helpers, action scripts); bound on first use. */
const spawning = {
  // int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
  //                 const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
  posix_spawn: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
  // int posix_spawn_file_actions_adddup2(fa *, int fd, int newfd)
  posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  // int posix_spawn_file_actions_addclosefrom_np(fa *, int from)
  posix_spawn_file_actions_addclosefrom_np: { parameters: ["buffer", "i32"], result: "i32" },
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" }, // (attr *, short)
  posix_spawn_file_actions_addclose: { parameters: ["buffer", "i32"], result: "i32" }, // (fa *, int fd)
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" }, // (attr *, sigset_t *)
  posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" }, // (attr *, sigset_t *)
  posix_spawnattr_setpgroup: { parameters: ["buffer", "i32"], result: "i32" }, // (attr *, pid_t)
} as const satisfies Deno.ForeignLibraryInterface;

/** Sockets, for the RPC modes and network namespaces; bound on first use. */
const sockets = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i64" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i64" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  // the same poll, run on a worker thread so that an async caller does not block the event loop
  poll_async: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols<S extends Deno.ForeignLibraryInterface> = Deno.DynamicLibrary<S>["symbols"];
type Libc = Symbols<typeof core> & Symbols<typeof spawning> & Symbols<typeof sockets>;

function openLibc<S extends Deno.ForeignLibraryInterface>(symbols: S): Symbols<S> {
  try {
    return Deno.dlopen("libc.so.6", symbols).symbols;
  } catch (cause) {
    throw new Error("Cannot load libc.so.6 (criu-ts needs glibc on x86_64 Linux)", { cause });
  }
}

/**
 * Binding a symbol costs Deno about 0.2 ms (it compiles a call stub), and a command uses fewer
 * than half of them: each symbol is bound when it is first used, then stays a plain property.
 */
function bindLibc(): Libc {
  const out = {} as Record<string, unknown>;
  for (const group of [core, spawning, sockets] as Deno.ForeignLibraryInterface[]) {
    for (const [name, definition] of Object.entries(group)) {
      Object.defineProperty(out, name, {
        configurable: true,
        enumerable: true,
        get: () => {
          const bound = openLibc({ [name]: definition })[name];
          Object.defineProperty(out, name, { value: bound, enumerable: true });
          return bound;
        },
      });
    }
  }
  return out as unknown as Libc;
}

export const libc = bindLibc();

const errnoView = new Deno.UnsafePointerView(libc.__errno_location()!);

/** The calling thread's errno. Only meaningful right after a failed call. */
export function lastErrno(): number {
  return errnoView.getInt32();
}

/** Runs a native call returning an int; -1 becomes a SyscallError naming the call. */
export function call(name: string, result: number, detail?: string): number {
  if (result === -1) throw new SyscallError(name, lastErrno(), detail);
  return result;
}

/** Like call() for calls returning long (bigint). Results fit a JS number on this platform. */
export function callBig(name: string, result: bigint, detail?: string): number {
  if (result === -1n) throw new SyscallError(name, lastErrno(), detail);
  return Number(result);
}

/** Like callBig() but keeps the full 64-bit value (addresses). */
export function callAddr(name: string, result: bigint, detail?: string): bigint {
  if (result === -1n) throw new SyscallError(name, lastErrno(), detail);
  return result;
}

/** A NUL-terminated C string in a fresh buffer. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** Where each ArrayBuffer we took the address of lives: it does not move once asked. */
const bases = new WeakMap<ArrayBuffer, bigint>();

/**
 * The address of a buffer, for structs that hold pointers. Valid while `buf` is alive. Asking
 * Deno costs microseconds, so each ArrayBuffer is asked once and views add their offset.
 */
export function addressOf(buf: ArrayBufferView<ArrayBuffer>): bigint {
  if (buf.byteLength === 0) return 0n;
  let base = bases.get(buf.buffer);
  if (base === undefined) {
    base = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(new Uint8Array(buf.buffer))));
    bases.set(buf.buffer, base);
  }
  return base + BigInt(buf.byteOffset);
}

/** An array of C string pointers ending in NULL; keeps the strings alive with it. */
export function cstrArray(items: readonly string[]): { ptrs: BigUint64Array<ArrayBuffer>; keep: unknown[] } {
  const strings = items.map(cstr);
  const ptrs = new BigUint64Array(items.length + 1);
  strings.forEach((s, i) => ptrs[i] = addressOf(s));
  return { ptrs, keep: strings };
}
