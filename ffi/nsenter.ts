/**
 * Work done from inside another task's UTS, IPC or cgroup namespace. setns() moves only the calling thread,
 * and Deno runs synchronous FFI calls on the JavaScript thread itself: the thread enters the
 * namespace, runs `work` (synchronous FFI calls only, such as the files read here) and comes back,
 * with no other JavaScript running meanwhile (see ffi/sock_diag.ts for the network namespace).
 * Files under /proc/sys answer for the namespace of the thread reading them, so they are opened
 * and read here with plain read(2), never through Deno's file API.
 */
import { call, callBig, cstr, libc } from "./libc.ts";
import { closeFd, OPEN, openFd } from "./fd.ts";
import { CLONE, NR } from "./syscalls.ts";

const NS_FLAGS = { uts: CLONE.NEWUTS, ipc: CLONE.NEWIPC, cgroup: CLONE.NEWCGROUP } as const;
export type EnterableNs = keyof typeof NS_FLAGS;

/**
 * Runs `work` with the calling thread in the `ns` namespace of `pid`, then puts the thread back.
 * When `pid` is already in ours nothing is switched.
 */
export function inNamespaceOf<T>(pid: number, ns: EnterableNs, work: () => T): T {
  const targetPath = `/proc/${pid}/ns/${ns}`;
  if (Deno.readLinkSync(targetPath) === Deno.readLinkSync(`/proc/thread-self/ns/${ns}`)) return work();
  const target = openFd(targetPath, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    const own = openFd(`/proc/thread-self/ns/${ns}`, OPEN.RDONLY | OPEN.CLOEXEC);
    try {
      call(`setns(${ns})`, libc.setns(target, NS_FLAGS[ns]), targetPath);
      try {
        return work();
      } finally {
        if (libc.setns(own, NS_FLAGS[ns]) !== 0) {
          // deno-lint-ignore no-unsafe-finally
          throw new Error(
            `Cannot return to our own ${ns} namespace after entering that of process ${pid}; ` +
              "criu-ts cannot go on safely",
          );
        }
      }
    } finally {
      closeFd(own);
    }
  } finally {
    closeFd(target);
  }
}

/** The whole text of a small file (a /proc/sys value, a /proc/sysvipc table), read by this thread. */
export function readSmallFile(path: string): string {
  const fd = openFd(path, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    const parts: Uint8Array[] = [];
    for (;;) {
      const buf = new Uint8Array(65536);
      const n = callBig("read", libc.read(fd, buf, BigInt(buf.length)), path);
      if (n === 0) break;
      parts.push(buf.subarray(0, n));
    }
    return new TextDecoder().decode(concat(parts));
  } finally {
    closeFd(fd);
  }
}

/**
 * Runs `work` with the calling thread's effective uid and gid set to `ids` (criu's root keeps its
 * real and saved ids, so it can come back), then back to root. Only this thread changes: the raw
 * syscalls, not glibc's wrappers, which change every thread. For files whose owner a namespace
 * decides, such as the IPC sysctls of a namespace owned by another user namespace, writable only
 * by that namespace's root.
 */
export function asEffectiveIds<T>(ids: { uid: number; gid: number }, work: () => T): T {
  const set = (nr: number, id: number, what: string) =>
    callBig(what, libc.syscall(BigInt(nr), -1n, BigInt(id), -1n, 0n, 0n, 0n), what);
  set(NR.setresgid, ids.gid, "setresgid");
  try {
    set(NR.setresuid, ids.uid, "setresuid");
    try {
      return work();
    } finally {
      if (libc.syscall(BigInt(NR.setresuid), -1n, 0n, -1n, 0n, 0n, 0n) !== 0n) {
        // deno-lint-ignore no-unsafe-finally
        throw new Error("Cannot take back criu's effective uid 0; criu-ts cannot go on safely");
      }
    }
  } finally {
    if (libc.syscall(BigInt(NR.setresgid), -1n, 0n, -1n, 0n, 0n, 0n) !== 0n) {
      // deno-lint-ignore no-unsafe-finally
      throw new Error("Cannot take back criu's effective gid 0; criu-ts cannot go on safely");
    }
  }
}

/** Writes `text` to a small file (a /proc/sys value) in one write, by this thread. */
export function writeSmallFile(path: string, text: string): void {
  const fd = openFd(path, OPEN.WRONLY | OPEN.CLOEXEC);
  try {
    const bytes = cstr(text).subarray(0, -1);
    callBig("write", libc.write(fd, bytes, BigInt(bytes.length)), path);
  } finally {
    closeFd(fd);
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** NS_GET_PARENT, _IO(0xb7, 0x2) in <linux/nsfs.h>: an fd of a user or PID namespace's parent. */
const NS_GET_PARENT = 0xb702n;

/** The link (`user:[INO]`) of the parent of the user namespace of `pid`; undefined for the initial one. */
export function parentUserNamespaceOf(pid: number): string | undefined {
  const path = `/proc/${pid}/ns/user`;
  const ns = openFd(path, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    const parent = libc.ioctl(ns, NS_GET_PARENT, null);
    if (parent === -1) return undefined; // EPERM: the initial namespace, or one above ours
    try {
      return Deno.readLinkSync(`/proc/self/fd/${parent}`);
    } finally {
      closeFd(parent);
    }
  } finally {
    closeFd(ns);
  }
}

/** NS_GET_USERNS, _IO(0xb7, 0x1) in <linux/nsfs.h>: an fd of the user namespace owning a namespace. */
const NS_GET_USERNS = 0xb701n;

/**
 * The link (`user:[INO]`) of the user namespace that owns namespace `kind` (`cgroup`, `net`, ...) of
 * `pid`; undefined when that owner is above criu's own (the kernel answers EPERM).
 */
export function ownerUserNamespaceOf(pid: number, kind: string): string | undefined {
  const ns = openFd(`/proc/${pid}/ns/${kind}`, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    const owner = libc.ioctl(ns, NS_GET_USERNS, null);
    if (owner === -1) return undefined;
    try {
      return Deno.readLinkSync(`/proc/self/fd/${owner}`);
    } finally {
      closeFd(owner);
    }
  } finally {
    closeFd(ns);
  }
}

/**
 * The links (`pid:[INO]`) of the PID namespace of `pid` and of each one above it, innermost first,
 * up to the highest one we can see (NS_GET_PARENT answers EPERM above ours).
 */
export function pidNamespaceChain(pid: number): string[] {
  const links: string[] = [];
  let ns = openFd(`/proc/${pid}/ns/pid`, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    for (;;) {
      links.push(Deno.readLinkSync(`/proc/self/fd/${ns}`));
      const parent = libc.ioctl(ns, NS_GET_PARENT, null);
      if (parent === -1) return links;
      closeFd(ns);
      ns = parent;
    }
  } finally {
    closeFd(ns);
  }
}
