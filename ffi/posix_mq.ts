/**
 * POSIX message queues, driven by raw syscalls from criu's own thread (glibc's mq_* wrappers only
 * strip the leading slash of a name). A queue belongs to an IPC namespace: creating one by name
 * (mq_open) acts in the namespace of the calling thread, so callers run it inside inNamespaceOf()
 * (ffi/nsenter.ts). Listing them needs that namespace's mqueue filesystem: a detached mount of it
 * (fsopen/fsmount, made while the thread is in the namespace) is an fd whose directory lists every
 * queue, without touching any mount namespace; it goes away with its fd. A queue file opened
 * through it is a queue descriptor the mq_* calls accept, and its read gives the queue's status.
 *
 *   struct mq_attr (x86_64): mq_flags i64 @0, mq_maxmsg i64 @8, mq_msgsize i64 @16,
 *                            mq_curmsgs i64 @24, four reserved longs; 64 bytes.
 */
import { addressOf, callBig, cstr, libc } from "./libc.ts";
import { closeFd } from "./fd.ts";
import { NR, O } from "./syscalls.ts";

const FSOPEN_CLOEXEC = 1;
const FSCONFIG_CMD_CREATE = 6;
const FSMOUNT_CLOEXEC = 1;
const MQ_ATTR_SIZE = 64;

export interface MqAttr {
  /** O_NONBLOCK or 0: the descriptor's, not the queue's. */
  flags: number;
  maxmsg: number;
  msgsize: number;
  curmsgs: number;
}

function sys(name: string, nr: number, ...args: bigint[]): number {
  const a = [...args, 0n, 0n, 0n, 0n, 0n, 0n];
  return callBig(name, libc.syscall(BigInt(nr), a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!));
}

/**
 * A detached mount of the mqueue filesystem of the calling thread's IPC namespace: an fd whose
 * directory is the namespace's queues (/proc/self/fd/N/NAME). Close it to drop the mount.
 */
export function mountMqueueOfThisNamespace(): number {
  const fs = sys("fsopen(mqueue)", NR.fsopen, addressOf(cstr("mqueue")), BigInt(FSOPEN_CLOEXEC));
  try {
    sys("fsconfig(mqueue, CREATE)", NR.fsconfig, BigInt(fs), BigInt(FSCONFIG_CMD_CREATE), 0n, 0n, 0n);
    return sys("fsmount(mqueue)", NR.fsmount, BigInt(fs), BigInt(FSMOUNT_CLOEXEC), 0n);
  } finally {
    closeFd(fs);
  }
}

/** Opens queue `name` (no slash) of the mount `mount` for receiving and sending, never blocking. */
export function openQueueIn(mount: number, name: string): number {
  return sys(
    `openat(mqueue, ${name})`,
    NR.openat,
    BigInt(mount),
    addressOf(cstr(name)),
    BigInt(O.RDWR | O.NONBLOCK | O.CLOEXEC),
    0n,
  );
}

export function queueAttr(fd: number): MqAttr {
  const attr = new BigInt64Array(MQ_ATTR_SIZE / 8);
  sys("mq_getsetattr", NR.mq_getsetattr, BigInt(fd), 0n, addressOf(attr));
  return {
    flags: Number(attr[0]),
    maxmsg: Number(attr[1]),
    msgsize: Number(attr[2]),
    curmsgs: Number(attr[3]),
  };
}

/**
 * Takes the first message (highest priority, oldest) into `buf` (at least the queue's msgsize);
 * returns its size and priority. On a non-blocking descriptor an empty queue is EAGAIN.
 */
export function receiveMessage(fd: number, buf: Uint8Array<ArrayBuffer>): { size: number; priority: number } {
  const priority = new Uint32Array(1);
  const size = sys(
    "mq_timedreceive",
    NR.mq_timedreceive,
    BigInt(fd),
    addressOf(buf),
    BigInt(buf.length),
    addressOf(priority),
    0n,
  );
  return { size, priority: priority[0]! };
}

/** Queues `data` with `priority`, behind the messages of that priority already there. */
export function sendMessage(fd: number, data: Uint8Array<ArrayBuffer>, priority: number): void {
  sys(
    "mq_timedsend",
    NR.mq_timedsend,
    BigInt(fd),
    addressOf(data),
    BigInt(data.length),
    BigInt(priority),
    0n,
  );
}

/**
 * Creates queue `name` (no slash) in the calling thread's IPC namespace with room for `maxmsg`
 * messages of `msgsize` bytes; fails if it exists. Returns a non-blocking read-write descriptor.
 * `mode` is taken as given (not through criu's umask): it is set again with fchmod.
 */
export function createQueue(name: string, mode: number, maxmsg: number, msgsize: number): number {
  const attr = new BigInt64Array(MQ_ATTR_SIZE / 8);
  attr[1] = BigInt(maxmsg);
  attr[2] = BigInt(msgsize);
  const fd = sys(
    `mq_open(${name}, O_CREAT)`,
    NR.mq_open,
    addressOf(cstr(name)),
    BigInt(O.RDWR | O.NONBLOCK | O.CLOEXEC | O.CREAT | O.EXCL),
    BigInt(mode),
    addressOf(attr),
  );
  try {
    sys(`fchmod(${name})`, NR.fchmod, BigInt(fd), BigInt(mode));
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  return fd;
}

/** Sets a queue's owner through a descriptor of it. */
export function setQueueOwner(fd: number, uid: number, gid: number): void {
  sys("fchown(mqueue)", NR.fchown, BigInt(fd), BigInt(uid), BigInt(gid));
}

/** Removes queue `name` (no slash) from the calling thread's IPC namespace. */
export function unlinkQueue(name: string): void {
  sys(`mq_unlink(${name})`, NR.mq_unlink, addressOf(cstr(name)));
}
