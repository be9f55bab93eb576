/**
 * SysV IPC objects (shared memory segments, semaphore sets, message queues), driven by raw
 * syscalls from the calling thread: they act on the IPC namespace the thread is in, so the callers
 * run them inside inNamespaceOf() (ffi/nsenter.ts). The 64-bit layouts (x86_64, `struct
 * ipc64_perm` at the start of each `*id64_ds`):
 *   ipc64_perm: key i32 @0, uid u32 @4, gid u32 @8, cuid @12, cgid @16, mode u32 @20, seq u16 @24,
 *               two unused longs; 48 bytes.
 *   msqid64_ds: msg_perm, then stime, rtime, ctime, cbytes, qnum, qbytes (u64 @88), lspid, lrpid,
 *               two unused longs; 128 bytes.
 *   semid64_ds: 88 bytes; shmid64_ds: 112 bytes (only the perm part and msg_qbytes are used here).
 */
import { addressOf, callAddr, libc } from "./libc.ts";
import { NR } from "./syscalls.ts";

export const IPC = { CREAT: 0o1000, EXCL: 0o2000, NOWAIT: 0o4000, RMID: 0, SET: 1, STAT: 2 } as const;
const SEM_GETALL = 13;
const SEM_SETALL = 17;
const MSG_COPY = 0o40000;
const SHM_RDONLY = 0o10000;
/** Room for any *id64_ds. */
const DS_SIZE = 128;
const PERM_UID = 4;
const PERM_GID = 8;
const MSG_QBYTES = 88;

export type IpcObject = "shm" | "sem" | "msg";
const CTL = { shm: NR.shmctl, sem: NR.semctl, msg: NR.msgctl } as const;

function sys(name: string, nr: number, ...args: bigint[]): bigint {
  const a = [...args, 0n, 0n, 0n, 0n, 0n, 0n];
  return callAddr(name, libc.syscall(BigInt(nr), a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!));
}

function ctl(kind: IpcObject, id: number, cmd: number, ds: Uint8Array<ArrayBuffer>): void {
  // semctl takes (id, semnum, cmd, arg); shmctl and msgctl (id, cmd, buf).
  if (kind === "sem") sys(`semctl(${id})`, CTL.sem, BigInt(id), 0n, BigInt(cmd), addressOf(ds));
  else sys(`${kind}ctl(${id})`, CTL[kind], BigInt(id), BigInt(cmd), addressOf(ds));
}

/** A message queue's byte limit (msg_qbytes), which /proc/sysvipc/msg does not show. */
export function msgQueueBytes(id: number): bigint {
  const ds = new Uint8Array(DS_SIZE);
  ctl("msg", id, IPC.STAT, ds);
  return new DataView(ds.buffer).getBigUint64(MSG_QBYTES, true);
}

/** Sets an object's owner (and a queue's byte limit) by IPC_STAT, then IPC_SET. */
export function setIpcOwner(kind: IpcObject, id: number, uid: number, gid: number, qbytes?: bigint): void {
  const ds = new Uint8Array(DS_SIZE);
  ctl(kind, id, IPC.STAT, ds);
  const view = new DataView(ds.buffer);
  // -1 keeps that id, as chown does (IPC_SET itself refuses an id its caller cannot map).
  if (uid !== 0xffffffff) view.setUint32(PERM_UID, uid, true);
  if (gid !== 0xffffffff) view.setUint32(PERM_GID, gid, true);
  if (qbytes !== undefined) view.setBigUint64(MSG_QBYTES, qbytes, true);
  ctl(kind, id, IPC.SET, ds);
}

export function shmCreate(key: number, size: bigint, mode: number): number {
  return Number(sys("shmget", NR.shmget, BigInt(key | 0), size, BigInt(mode | IPC.CREAT | IPC.EXCL)));
}

export function semCreate(key: number, nsems: number, mode: number): number {
  return Number(
    sys("semget", NR.semget, BigInt(key | 0), BigInt(nsems), BigInt(mode | IPC.CREAT | IPC.EXCL)),
  );
}

export function msgCreate(key: number, mode: number): number {
  return Number(sys("msgget", NR.msgget, BigInt(key | 0), BigInt(mode | IPC.CREAT | IPC.EXCL)));
}

export function removeIpc(kind: IpcObject, id: number): void {
  ctl(kind, id, IPC.RMID, new Uint8Array(DS_SIZE));
}

/** The values of a semaphore set (unsigned shorts). */
export function semValues(id: number, nsems: number): Uint16Array<ArrayBuffer> {
  const values = new Uint16Array(Math.max(nsems, 1));
  sys(`semctl(${id}, GETALL)`, NR.semctl, BigInt(id), 0n, BigInt(SEM_GETALL), addressOf(values));
  return values.subarray(0, nsems);
}

export function setSemValues(id: number, values: Uint16Array<ArrayBuffer>): void {
  sys(`semctl(${id}, SETALL)`, NR.semctl, BigInt(id), 0n, BigInt(SEM_SETALL), addressOf(values));
}

/** Message number `index` of a queue, copied without taking it off (MSG_COPY). */
export function msgCopy(id: number, index: number, maxSize: number): { type: bigint; text: Uint8Array } {
  const buf = new Uint8Array(8 + maxSize);
  const n = sys(
    `msgrcv(${id}, MSG_COPY ${index})`,
    NR.msgrcv,
    BigInt(id),
    addressOf(buf),
    BigInt(maxSize),
    BigInt(index),
    BigInt(IPC.NOWAIT | MSG_COPY),
  );
  return { type: new DataView(buf.buffer).getBigInt64(0, true), text: buf.slice(8, 8 + Number(n)) };
}

export function msgSend(id: number, type: bigint, text: Uint8Array): void {
  const buf = new Uint8Array(8 + text.length);
  new DataView(buf.buffer).setBigInt64(0, type, true);
  buf.set(text, 8);
  sys(`msgsnd(${id})`, NR.msgsnd, BigInt(id), addressOf(buf), BigInt(text.length), BigInt(IPC.NOWAIT));
}

/** Copies a whole segment out (attached read-only to our process for the copy). */
export function shmRead(id: number, size: number): Uint8Array {
  const at = sys(`shmat(${id})`, NR.shmat, BigInt(id), 0n, BigInt(SHM_RDONLY));
  try {
    const view = new Deno.UnsafePointerView(Deno.UnsafePointer.create(at)!);
    const out = new Uint8Array(size);
    if (size > 0) view.copyInto(out);
    return out;
  } finally {
    sys("shmdt", NR.shmdt, at);
  }
}

/** Copies `data` into the start of a segment (attached to our process for the copy). */
export function shmWrite(id: number, data: Uint8Array): void {
  const at = sys(`shmat(${id})`, NR.shmat, BigInt(id), 0n, 0n);
  try {
    if (data.length > 0) {
      const dst = new Uint8Array(
        Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(at)!, data.length),
      );
      dst.set(data);
    }
  } finally {
    sys("shmdt", NR.shmdt, at);
  }
}
