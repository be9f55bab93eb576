/**
 * POSIX message queues (mq_open) of an IPC namespace, saved with the namespace (ipcns.ts) in
 * criu-ts's own image, ipcns-posix-mq-ID.img (CRIU saves none: see proto/posix-mq.proto):
 * each queue's name, mode, owner, mq_maxmsg and mq_msgsize, then its messages with their
 * priorities in the order they are received.
 *
 * Dump. criu reads the queues through a detached mount of the namespace's mqueue filesystem
 * (ffi/posix_mq.ts), made from its own thread while in the namespace: no task of the tree and no
 * mount namespace is touched. A queue has no way to look at a message without taking it, so each
 * queue is drained and its messages sent back, which is only done while the tree is frozen:
 *   1. every queue is checked first: one with a registered notification (mq_notify) is refused
 *      before any queue is touched (sending into the emptied queue would fire it and drop it);
 *   2. the messages are received one at a time into a spool (a memfd: kernel memory, so the
 *      JavaScript heap holds one message at most), highest priority first, oldest first within
 *      a priority (should a receive fail, those taken go back at once, behind any left);
 *   3. they are read back from the spool one at a time and each is sent to the queue again,
 *      then written to the image. Sending them in the order received puts every message back at
 *      its place (the queue keeps FIFO order within a priority). A failure to write the image
 *      does not stop the sending: the queue is whole again before the error goes on, so a dump
 *      that fails leaves every queue as it was.
 * The queue's times (atime, mtime) do change.
 *
 * Restore (from criu's thread inside the new namespace, at its fill stage, before any task of the
 * namespace runs): each queue is created with mq_open, with its attributes, mode and owner, and
 * its messages are sent in order, read from the image one at a time. A queue larger than the
 * namespace's fs/mqueue/msg_max or msgsize_max could only be made with CAP_SYS_RESOURCE, which
 * criu may lack (this machine's root has none), so those two limits and queues_max are raised
 * while the queues are made and set to their saved values after. The queues' memory is charged to
 * criu's user (RLIMIT_MSGQUEUE), not to each queue's creator. A failed restore leaves no queue:
 * the namespace goes with the tree.
 *
 * A tree in criu's own IPC namespace has its namespace (and queues) left alone, as its SysV
 * objects; an fd of a queue there is refused (mqueue.ts).
 */
import { create } from "@bufbuild/protobuf";
import { type posix_mq_entry, posix_mq_entrySchema, posix_mq_msgSchema } from "../images/gen/posix-mq_pb.ts";
import type { posix_mq_msg } from "../images/gen/posix-mq_pb.ts";
import type { ipc_var_entry } from "../images/gen/ipc-var_pb.ts";
import { KINDS } from "../images/kinds.ts";
import { ImageReader, ImageWriter } from "../images/file.ts";
import type { ImageDir } from "../images/dir.ts";
import type { Log } from "../log.ts";
import {
  createQueue,
  mountMqueueOfThisNamespace,
  openQueueIn,
  queueAttr,
  receiveMessage,
  sendMessage,
  setQueueOwner,
} from "../../ffi/posix_mq.ts";
import { Spool } from "../../ffi/spool.ts";
import { closeFd } from "../../ffi/fd.ts";
import { asEffectiveIds, inNamespaceOf, readSmallFile, writeSmallFile } from "../../ffi/nsenter.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { refuse } from "./refusal.ts";
import { ownerInside, ownerOutside, type TreeIds } from "./tree_ids.ts";
import { RestoreError } from "../errors.ts";

/** A queue's status line, the read of its file: "QSIZE:n NOTIFY:n SIGNO:n NOTIFY_PID:n". */
function notifyPidOf(status: string): number {
  const m = /NOTIFY_PID:\s*(\d+)/.exec(status);
  return m ? Number(m[1]) : 0;
}

/** A mount of the mqueue filesystem of `pid`'s IPC namespace, for `work`; dropped after. */
export function withQueuesOf<T>(pid: number, work: (mount: number) => T): T {
  const mount = inNamespaceOf(pid, "ipc", mountMqueueOfThisNamespace);
  try {
    return work(mount);
  } finally {
    closeFd(mount);
  }
}

function queueNames(mount: number): string[] {
  return [...Deno.readDirSync(`/proc/self/fd/${mount}`)].filter((e) => e.isFile).map((e) => e.name).sort();
}

// ---------------------------------------------------------------------------------------------
// Dump

/**
 * Saves every queue of the IPC namespace `pid` is in as ipcns-posix-mq-ID.img (none when it has
 * no queue: Debian's crit reads every image of such a dump). The tree must be frozen.
 */
export function dumpPosixQueues(
  dir: ImageDir,
  id: number,
  pid: number,
  log: Log,
  ids?: TreeIds,
): void {
  withQueuesOf(pid, (mount) => {
    const names = queueNames(mount);
    if (names.length === 0) return;
    for (const name of names) {
      const notifier = notifyPidOf(readSmallFile(`/proc/self/fd/${mount}/${name}`));
      if (notifier !== 0) {
        refuse(
          pid,
          `POSIX message queue /${name}`,
          `process ${notifier} is registered for its notification (mq_notify), which is not supported yet`,
        );
      }
    }
    const w = ImageWriter.create(dir.path, KINDS.IPCNS_POSIX_MQ, id);
    dir.noteWritten(w.name);
    try {
      for (const name of names) {
        const count = saveQueue(w, mount, name, ids);
        log.info(
          `POSIX message queue /${name} of IPC namespace ${id}: ${count} message(s) read and put back`,
        );
      }
    } finally {
      w.close();
    }
  });
}

/** Saves one queue with its messages, and puts them back; returns how many there are. */
function saveQueue(w: ImageWriter, mount: number, name: string, ids: TreeIds | undefined): number {
  const st = Deno.statSync(`/proc/self/fd/${mount}/${name}`);
  const fd = openQueueIn(mount, name);
  try {
    const attr = queueAttr(fd);
    const spool = new Spool(`mqueue ${name}`);
    try {
      let count: number;
      try {
        count = drain(fd, attr.msgsize, attr.curmsgs, spool);
      } catch (e) {
        // Not one message lost: those taken go back (behind any not taken, should that happen).
        putBackAndSave(fd, spool, spool.count, () => {});
        throw e;
      }
      putBackAndSave(fd, spool, count, (head, data) => {
        if (head === null) {
          w.writeEntry(create(posix_mq_entrySchema, {
            name,
            mode: (st.mode ?? 0) & 0o7777,
            ...ownerInside(ids, st.uid ?? 0, st.gid ?? 0),
            maxmsg: BigInt(attr.maxmsg),
            msgsize: BigInt(attr.msgsize),
            curmsgs: BigInt(count),
          }));
          return;
        }
        w.writeEntry(head);
        w.writeBlob(data);
      });
      return count;
    } finally {
      spool.close();
    }
  } finally {
    closeFd(fd);
  }
}

/** Takes every message of the queue into the spool, in order; returns how many. */
function drain(fd: number, msgsize: number, expected: number, spool: Spool): number {
  const buf = new Uint8Array(Math.max(msgsize, 1));
  let count = 0;
  // The tree is frozen: nobody else sends. Never more than the queue said it held.
  while (count < expected) {
    let got;
    try {
      got = receiveMessage(fd, buf);
    } catch (e) {
      if (isSyscallError(e, "EAGAIN")) break;
      throw e;
    }
    spool.append(got.priority, buf.subarray(0, got.size));
    count++;
  }
  return count;
}

/**
 * Sends the spooled messages back in order, and gives each to `save` (first the queue's entry,
 * with head null). A failure of `save` stops the saving, not the sending: the queue is complete
 * again before the error is thrown.
 */
function putBackAndSave(
  fd: number,
  spool: Spool,
  count: number,
  save: (head: posix_mq_msg | null, data: Uint8Array) => void,
): void {
  let failure: unknown = undefined;
  const saving = (head: posix_mq_msg | null, data: Uint8Array) => {
    if (failure !== undefined) return;
    try {
      save(head, data);
    } catch (e) {
      failure = e;
    }
  };
  saving(null, new Uint8Array());
  spool.rewind();
  for (let i = 0; i < count; i++) {
    const m = spool.next();
    sendMessage(fd, m.data, m.tag);
    saving(create(posix_mq_msgSchema, { priority: m.tag, size: m.data.length }), m.data);
  }
  if (failure !== undefined) throw failure;
}

// ---------------------------------------------------------------------------------------------
// Restore

/** The queues of namespace `id` as the images hold them (checked, messages not kept), if any. */
export function checkPosixQueues(dir: ImageDir, id: number): posix_mq_entry[] {
  if (!dir.has(KINDS.IPCNS_POSIX_MQ, id)) return [];
  const queues: posix_mq_entry[] = [];
  readQueues(dir, id, (q, messages) => {
    for (const _ of messages) { /* read through, so a damaged image is refused now */ }
    queues.push(q);
  });
  return queues;
}

/** Reads the image entry by entry: each queue, then its messages one at a time. */
function readQueues(
  dir: ImageDir,
  id: number,
  each: (q: posix_mq_entry, messages: Iterable<{ priority: number; data: Uint8Array }>) => void,
): void {
  const r = ImageReader.open(dir.path, KINDS.IPCNS_POSIX_MQ, id);
  try {
    for (let q = r.readEntry() as posix_mq_entry | null; q; q = r.readEntry() as posix_mq_entry | null) {
      if (q.name === "" || q.name.includes("/")) {
        throw new RestoreError(`${r.name} has a POSIX message queue named "${q.name}", not a queue name`);
      }
      const queue = q;
      each(queue, {
        *[Symbol.iterator]() {
          for (let i = 0n; i < queue.curmsgs; i++) {
            const head = r.readEntry(posix_mq_msgSchema) as posix_mq_msg | null;
            if (!head) throw new RestoreError(`${r.name} ends inside POSIX message queue /${queue.name}`);
            if (BigInt(head.size) > queue.msgsize) {
              throw new RestoreError(
                `${r.name}: a message of ${head.size} bytes in POSIX message queue /${queue.name}, ` +
                  `whose messages are at most ${queue.msgsize} bytes`,
              );
            }
            yield { priority: head.priority, data: r.readBlob(head.size) };
          }
        },
      });
    }
  } finally {
    r.close();
  }
}

const MQ_SYSCTL = "/proc/sys/fs/mqueue";

/**
 * Makes the saved queues of namespace `id` in the IPC namespace of `pid` (a task of the new one),
 * then sets the namespace's mqueue limits to their saved values (`vars`).
 */
export function restorePosixQueues(
  dir: ImageDir,
  id: number,
  pid: number,
  vars: ipc_var_entry,
  owner?: { uid: number; gid: number },
  ids?: TreeIds,
): void {
  const queues = checkPosixQueues(dir, id);
  if (queues.length === 0) return;
  // The namespace's sysctls are writable by its user namespace's root only (ffi/nsenter.ts).
  const writeSysctl = (path: string, value: string) =>
    owner === undefined
      ? writeSmallFile(path, value)
      : asEffectiveIds(owner, () => writeSmallFile(path, value));
  inNamespaceOf(pid, "ipc", () => {
    // Room for every queue whatever criu's capabilities (see the top of this file).
    const most = (f: (q: posix_mq_entry) => bigint) => queues.reduce((n, q) => (f(q) > n ? f(q) : n), 0n);
    raiseLimit("msg_max", most((q) => q.maxmsg), writeSysctl);
    raiseLimit("msgsize_max", most((q) => q.msgsize), writeSysctl);
    raiseLimit("queues_max", BigInt(queues.length), writeSysctl);
    readQueues(dir, id, (q, messages) => makeQueue(q, messages, ids));
    writeSysctl(`${MQ_SYSCTL}/msg_max`, `${vars.mqMsgMax}`);
    writeSysctl(`${MQ_SYSCTL}/msgsize_max`, `${vars.mqMsgsizeMax}`);
    writeSysctl(`${MQ_SYSCTL}/queues_max`, `${vars.mqQueuesMax}`);
  });
}

function raiseLimit(name: string, atLeast: bigint, write: (path: string, value: string) => void): void {
  const now = BigInt(readSmallFile(`${MQ_SYSCTL}/${name}`).trim());
  if (atLeast > now) write(`${MQ_SYSCTL}/${name}`, `${atLeast}`);
}

function makeQueue(
  q: posix_mq_entry,
  messages: Iterable<{ priority: number; data: Uint8Array }>,
  ids: TreeIds | undefined,
): void {
  let fd: number;
  try {
    fd = createQueue(q.name, q.mode & 0o7777, Number(q.maxmsg), Number(q.msgsize));
  } catch (e) {
    throw new RestoreError(`Cannot create POSIX message queue /${q.name}: ${(e as Error).message}`);
  }
  try {
    const saved = ownerOutside(ids, q.uid, q.gid);
    setQueueOwner(fd, saved.uid, saved.gid);
    for (const m of messages) sendMessage(fd, new Uint8Array(m.data), m.priority);
  } finally {
    closeFd(fd);
  }
}
