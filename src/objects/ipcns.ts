/**
 * IPC namespaces. A tree in an IPC namespace of its own (`unshare --ipc`, a container) gets a new
 * one on restore holding what the old one held, as CRIU writes it (ID is the namespace's id in the
 * ids images):
 *   - ipcns-var-ID.img: the namespace's sysctls (kernel/sem, msg*, shm*, the next-id knobs, and
 *     fs/mqueue/*);
 *   - ipcns-shm-ID.img: each SysV shared memory segment (key, id, owner, mode, size), followed by
 *     its contents padded to 4 bytes (CRIU 4.x puts them in shared memory pagemaps instead,
 *     in_pagemaps, which the restore reads too);
 *   - ipcns-sem-ID.img: each semaphore set, followed by its values (u16 each) padded to 8 bytes;
 *   - ipcns-msg-ID.img: each message queue, followed by its messages (an ipc_msg record and the
 *     text padded to 8 bytes each).
 * Everything is read and made by criu's own thread inside the namespace (ffi/nsenter.ts): at the
 * dump the tree's, at the restore the new one's (that of the task that made it), before any task
 * runs. Each object gets its old
 * id back by writing the matching kernel/*_next_id sysctl just before creating it (no IPC_SET
 * trickery for the id); the saved next-id values are written last.
 *
 * Tasks that have a segment attached attach it again once it exists (mapping_sysvshm.ts), each
 * once its own namespace is rebuilt; a segment already removed (IPC_RMID, mode SHM_DEST) but still
 * attached is removed again after.
 *
 * Nested: each IPC namespace a live task of the tree is in, other than criu's, is saved the same
 * way (the images above per id) and made again by the first task in it (namespaces.ts). CRIU 4.2
 * refuses to dump a nested IPC namespace ("Can't dump nested ipc namespace") and to restore one.
 *
 * POSIX message queues (the namespace's mqueue filesystem) are saved and made again with the
 * namespace, in criu-ts's own image (posix_mq.ts), after its SysV objects.
 *
 * Not saved: semaphore undo lists, the objects' times and last pids. With kernel/shm_rmid_forced set, a segment attached by no task
 * is destroyed by the kernel when criu (which made it again) exits.
 */
import { create } from "@bufbuild/protobuf";
import { type ipc_var_entry, ipc_var_entrySchema } from "../images/gen/ipc-var_pb.ts";
import { type ipc_shm_entry, ipc_shm_entrySchema } from "../images/gen/ipc-shm_pb.ts";
import { type ipc_sem_entry, ipc_sem_entrySchema } from "../images/gen/ipc-sem_pb.ts";
import {
  type ipc_msg,
  type ipc_msg_entry,
  ipc_msg_entrySchema,
  ipc_msgSchema,
} from "../images/gen/ipc-msg_pb.ts";
import { type ipc_desc_entry, ipc_desc_entrySchema } from "../images/gen/ipc-desc_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { pagemap_entry, pagemap_head } from "../images/gen/pagemap_pb.ts";
import { closeFd, OPEN, openFd, preadFull } from "../../ffi/fd.ts";
import { PAGE_SIZE } from "./memory.ts";
import { ImageReader, ImageWriter } from "../images/file.ts";
import type { ImageDir } from "../images/dir.ts";
import type { ImageKind } from "../images/kinds.ts";
import { asEffectiveIds, inNamespaceOf, readSmallFile, writeSmallFile } from "../../ffi/nsenter.ts";
import { userNamespaceRootOf } from "./userns.ts";
import {
  msgCopy,
  msgCreate,
  msgQueueBytes,
  msgSend,
  removeIpc,
  semCreate,
  semValues,
  setIpcOwner,
  setSemValues,
  shmCreate,
  shmRead,
  shmWrite,
} from "../../ffi/sysvipc.ts";
import { CLONE } from "../../ffi/syscalls.ts";
import { attachSysvSegments, expectSysvSegments } from "./mapping_sysvshm.ts";
import { RestoreError } from "../errors.ts";
import { refuse } from "./refusal.ts";
import { ownerInside, ownerOutside, type TreeIds, treeIdsAtDump, treeIdsAtRestore } from "./tree_ids.ts";
import { registerNamespaceKind } from "./namespaces.ts";
import { checkPosixQueues, dumpPosixQueues, restorePosixQueues } from "./posix_mq.ts";

const SYSCTL = "/proc/sys";
/** A segment's mode bit once IPC_RMID removed it while still attached. */
const SHM_DEST = 0o1000;

// ---------------------------------------------------------------------------------------------
// The sysctls: [file under /proc/sys, field of ipc_var_entry], in CRIU's order. kernel/sem is four
// numbers (semmsl, semmns, semopm, semmni) and handled apart.

const NUMBER_VARS = [
  ["kernel/msgmax", "msgCtlmax"],
  ["kernel/msgmnb", "msgCtlmnb"],
  ["kernel/auto_msgmni", "autoMsgmni"],
  ["kernel/msgmni", "msgCtlmni"],
  ["kernel/shmmni", "shmCtlmni"],
  ["kernel/shm_rmid_forced", "shmRmidForced"],
  ["fs/mqueue/queues_max", "mqQueuesMax"],
  ["fs/mqueue/msg_max", "mqMsgMax"],
  ["fs/mqueue/msgsize_max", "mqMsgsizeMax"],
  ["fs/mqueue/msg_default", "mqMsgDefault"],
  ["fs/mqueue/msgsize_default", "mqMsgsizeDefault"],
] as const;
const BIG_VARS = [["kernel/shmmax", "shmCtlmax"], ["kernel/shmall", "shmCtlall"]] as const;
/** Written last at restore: creating an object with a chosen id resets its knob to -1. */
const NEXT_ID_VARS = [
  ["kernel/msg_next_id", "msgNextId"],
  ["kernel/sem_next_id", "semNextId"],
  ["kernel/shm_next_id", "shmNextId"],
] as const;

function readVar(name: string): string {
  return readSmallFile(`${SYSCTL}/${name}`).trim();
}

/** The namespace's sysctls (run inside it). A next-id knob at -1 (unset) is left out, as in CRIU. */
function readVars(): ipc_var_entry {
  const e = create(ipc_var_entrySchema, { semCtls: readVar("kernel/sem").split(/\s+/).map(Number) });
  for (const [file, field] of NUMBER_VARS) e[field] = Number(readVar(file));
  for (const [file, field] of BIG_VARS) e[field] = BigInt(readVar(file));
  for (const [file, field] of NEXT_ID_VARS) {
    const v = Number(readVar(file));
    if (v >= 0) e[field] = v;
  }
  return e;
}

function writeVars(e: ipc_var_entry): void {
  if (e.semCtls.length > 0) writeSmallFile(`${SYSCTL}/kernel/sem`, e.semCtls.join(" "));
  for (const [file, field] of [...NUMBER_VARS, ...BIG_VARS]) {
    const v = e[field];
    // auto_msgmni is a no-op the kernel only warns about; the optional mqueue defaults may be absent.
    if (v === undefined || file === "kernel/auto_msgmni") continue;
    writeSmallFile(`${SYSCTL}/${file}`, `${v}`);
  }
}

function writeNextIds(e: ipc_var_entry): void {
  for (const [file, field] of NEXT_ID_VARS) {
    const v = e[field];
    if (v !== undefined) writeSmallFile(`${SYSCTL}/${file}`, `${v}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The objects, listed from /proc/sysvipc/* (read inside the namespace: the tables are those of the
// reader's). Columns: shm "key shmid perms size cpid lpid nattch uid gid cuid cgid ...", sem "key
// semid perms nsems uid gid cuid cgid ...", msg "key msqid perms cbytes qnum lspid lrpid uid gid
// cuid cgid ...". perms is octal.

function table(name: "shm" | "sem" | "msg"): string[][] {
  return readSmallFile(`/proc/sysvipc/${name}`).split("\n").slice(1).filter((l) => l.trim()).map((l) =>
    l.trim().split(/\s+/)
  );
}

/** `ids`: criu reads owners in its user namespace, the image holds them as the tree sees them. */
function desc(cols: string[], owner: number, ids: TreeIds | undefined): ipc_desc_entry {
  const n = (i: number) => Number(cols[i]);
  const now = ownerInside(ids, n(owner), n(owner + 1));
  const creator = ownerInside(ids, n(owner + 2), n(owner + 3));
  return create(ipc_desc_entrySchema, {
    key: n(0) >>> 0,
    id: n(1),
    mode: parseInt(cols[2]!, 8),
    uid: now.uid,
    gid: now.gid,
    cuid: creator.uid,
    cgid: creator.gid,
  });
}

function padded(data: Uint8Array, to: number): Uint8Array {
  const out = new Uint8Array(Math.ceil(data.length / to) * to);
  out.set(data);
  return out;
}

interface SavedIpc {
  vars: ipc_var_entry;
  shm: { entry: ipc_shm_entry; data: Uint8Array }[];
  sem: { entry: ipc_sem_entry; values: Uint16Array<ArrayBuffer> }[];
  msg: { entry: ipc_msg_entry; messages: { head: ipc_msg; text: Uint8Array }[] }[];
}

/** Everything the namespace holds (run inside it). */
function collect(rootPid: number, ids: TreeIds | undefined): SavedIpc {
  const vars = readVars();
  const shm = table("shm").map((c) => {
    const entry = create(ipc_shm_entrySchema, { desc: desc(c, 7, ids), size: BigInt(c[3]!) });
    if (entry.size > BigInt(Number.MAX_SAFE_INTEGER)) {
      refuse(rootPid, `SysV shared memory segment ${c[1]}`, `its size ${c[3]} is too large`);
    }
    return { entry, data: shmRead(entry.desc!.id, Number(entry.size)) };
  });
  const sem = table("sem").map((c) => {
    const entry = create(ipc_sem_entrySchema, { desc: desc(c, 4, ids), nsems: Number(c[3]) });
    return { entry, values: semValues(entry.desc!.id, entry.nsems) };
  });
  const msg = table("msg").map((c) => {
    const entry = create(ipc_msg_entrySchema, { desc: desc(c, 7, ids), qnum: Number(c[4]) });
    const id = entry.desc!.id;
    entry.qbytes = Number(msgQueueBytes(id));
    const messages = [];
    // No message is longer than the bytes queued, nor (unless msgmax was lowered since) than msgmax.
    const longest = Math.max(vars.msgCtlmax, Number(c[3]));
    for (let i = 0; i < entry.qnum; i++) {
      const m = msgCopy(id, i, longest);
      messages.push({ head: create(ipc_msgSchema, { mtype: m.type, msize: m.text.length }), text: m.text });
    }
    return { entry, messages };
  });
  return { vars, shm, sem, msg };
}

function save(dir: ImageDir, id: number, s: SavedIpc): void {
  dir.write(KINDS.IPC_VAR, id, [s.vars]);
  withWriter(dir, KINDS.IPCNS_SHM, id, (w) => {
    for (const { entry, data } of s.shm) {
      w.writeEntry(entry);
      w.writeBlob(padded(data, 4));
    }
  });
  withWriter(dir, KINDS.IPCNS_SEM, id, (w) => {
    for (const { entry, values } of s.sem) {
      w.writeEntry(entry);
      w.writeBlob(padded(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), 8));
    }
  });
  withWriter(dir, KINDS.IPCNS_MSG, id, (w) => {
    for (const { entry, messages } of s.msg) {
      w.writeEntry(entry);
      for (const m of messages) {
        w.writeEntry(m.head);
        w.writeBlob(padded(m.text, 8));
      }
    }
  });
}

function withWriter(
  dir: ImageDir,
  kind: ImageKind,
  id: number,
  write: (w: ImageWriter) => void,
): void {
  const w = ImageWriter.create(dir.path, kind, id);
  dir.noteWritten(w.name);
  try {
    write(w);
  } finally {
    w.close();
  }
}

function withReader(
  dir: ImageDir,
  kind: ImageKind,
  id: number,
  read: (r: ImageReader) => void,
): void {
  if (!dir.has(kind, id)) return;
  const r = ImageReader.open(dir.path, kind, id);
  try {
    read(r);
  } finally {
    r.close();
  }
}

/**
 * A segment's contents as CRIU 4.x keeps them (in_pagemaps): shared memory pages, in
 * pagemap-shmem-ID.img (ID the segment's id) and its pages image; pages not listed are zeros.
 */
function pagemapContents(dir: ImageDir, shmId: number, size: number): Uint8Array {
  const data = new Uint8Array(Math.ceil(size / PAGE_SIZE) * PAGE_SIZE);
  if (!dir.has(KINDS.SHMEM_PAGEMAP, shmId)) return data.subarray(0, size);
  const [head, ...runs] = dir.read<pagemap_head | pagemap_entry>(KINDS.SHMEM_PAGEMAP, shmId);
  if (!head || !("pagesId" in head)) throw new RestoreError(`pagemap-shmem-${shmId}.img has no header`);
  const pagesPath = dir.pathFor(KINDS.PAGES, head.pagesId);
  const pages = openFd(pagesPath, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    let from = 0;
    for (const run of runs as pagemap_entry[]) {
      const at = Number(run.vaddr);
      const len = Number(run.nrPages ?? BigInt(run.compatNrPages)) * PAGE_SIZE;
      if (at + len > data.length) {
        throw new RestoreError(
          `pagemap-shmem-${shmId}.img has pages past the end of SysV shared memory segment ${shmId} (${size} bytes)`,
        );
      }
      preadFull(pages, data.subarray(at, at + len), from, pagesPath);
      from += len;
    }
  } finally {
    closeFd(pages);
  }
  return data.subarray(0, size);
}

function load(dir: ImageDir, id: number): SavedIpc | undefined {
  if (!dir.has(KINDS.IPC_VAR, id)) return undefined;
  const [vars] = dir.read<ipc_var_entry>(KINDS.IPC_VAR, id);
  if (!vars) throw new RestoreError(`ipcns-var-${id}.img is empty`);
  const s: SavedIpc = { vars, shm: [], sem: [], msg: [] };
  withReader(dir, KINDS.IPCNS_SHM, id, (r) => {
    for (let e = r.readEntry() as ipc_shm_entry | null; e; e = r.readEntry() as ipc_shm_entry | null) {
      const size = Number(e.size);
      if (e.inPagemaps) {
        s.shm.push({ entry: e, data: pagemapContents(dir, e.desc?.id ?? 0, size) });
        continue;
      }
      s.shm.push({ entry: e, data: r.readBlob(Math.ceil(size / 4) * 4).subarray(0, size) });
    }
  });
  withReader(dir, KINDS.IPCNS_SEM, id, (r) => {
    for (let e = r.readEntry() as ipc_sem_entry | null; e; e = r.readEntry() as ipc_sem_entry | null) {
      const raw = r.readBlob(Math.ceil((2 * e.nsems) / 8) * 8);
      s.sem.push({ entry: e, values: new Uint16Array(new Uint8Array(raw).buffer, 0, e.nsems) });
    }
  });
  withReader(dir, KINDS.IPCNS_MSG, id, (r) => {
    for (let e = r.readEntry() as ipc_msg_entry | null; e; e = r.readEntry() as ipc_msg_entry | null) {
      const messages = [];
      for (let i = 0; i < e.qnum; i++) {
        const head = r.readEntry(ipc_msgSchema) as ipc_msg | null;
        if (!head) throw new RestoreError(`ipcns-msg-${id}.img ends inside message queue ${e.desc?.id}`);
        messages.push({ head, text: r.readBlob(Math.ceil(head.msize / 8) * 8).subarray(0, head.msize) });
      }
      s.msg.push({ entry: e, messages });
    }
  });
  return s;
}

// ---------------------------------------------------------------------------------------------
// Restore (run inside the new namespace).

/** Creates an object with its saved id: the next-id knob is set just before. */
function withId(
  kind: "shm" | "sem" | "msg",
  d: ipc_desc_entry,
  ids: TreeIds | undefined,
  make: () => number,
): number {
  writeSmallFile(`${SYSCTL}/kernel/${kind}_next_id`, `${d.id}`);
  const got = make();
  if (got !== d.id) throw new RestoreError(`SysV ${kind} object ${d.id} came back as ${got}`);
  const owner = ownerOutside(ids, d.uid, d.gid);
  setIpcOwner(kind, got, owner.uid, owner.gid);
  return got;
}

/**
 * `owner`: the ids of the root of the user namespace owning the IPC namespace, when that is not
 * criu's: its sysctls are writable only by that root (criu's root may only read them).
 */
function rebuild(
  s: SavedIpc,
  owner: { uid: number; gid: number } | undefined,
  ids: TreeIds | undefined,
): void {
  if (owner) asEffectiveIds(owner, () => writeVars(s.vars));
  else writeVars(s.vars);
  for (const { entry, data } of s.shm) {
    const d = entry.desc!;
    const id = withId("shm", d, ids, () => shmCreate(d.key, entry.size, d.mode & 0o777));
    shmWrite(id, data);
  }
  for (const { entry, values } of s.sem) {
    const d = entry.desc!;
    const id = withId("sem", d, ids, () => semCreate(d.key, entry.nsems, d.mode & 0o777));
    setSemValues(id, values);
  }
  for (const { entry, messages } of s.msg) {
    const d = entry.desc!;
    const id = withId("msg", d, ids, () => msgCreate(d.key, d.mode & 0o777));
    if (BigInt(entry.qbytes) !== msgQueueBytes(id)) {
      const o = ownerOutside(ids, d.uid, d.gid);
      setIpcOwner("msg", id, o.uid, o.gid, BigInt(entry.qbytes));
    }
    for (const m of messages) msgSend(id, m.head.mtype, m.text);
  }
  writeNextIds(s.vars);
}

registerNamespaceKind({
  name: "ipc",
  words: "IPC",
  cloneFlag: CLONE.NEWIPC,
  nested: true,
  dump(ctx) {
    const ids = treeIdsAtDump(ctx.tree.root.pid);
    save(ctx.dir, ctx.id, inNamespaceOf(ctx.pid, "ipc", () => collect(ctx.pid, ids)));
    dumpPosixQueues(ctx.dir, ctx.id, ctx.pid, ctx.log, ids);
  },
  prepareRestore(ctx) {
    const id = ctx.id;
    const saved = id === undefined ? undefined : load(ctx.dir, id);
    // The root's plan comes first: it starts the restore's list of namespaces holding segments.
    expectSysvSegments(saved !== undefined, ctx.ofRoot);
    if (!saved) return undefined;
    checkPosixQueues(ctx.dir, id!);
    return {
      fill: (creator) => {
        try {
          const owner = userNamespaceRootOf(creator.pid);
          const ids = treeIdsAtRestore(ctx.dir, ctx.tasks[0]?.ids?.userNsId);
          inNamespaceOf(creator.pid, "ipc", () => rebuild(saved, owner, ids));
          restorePosixQueues(ctx.dir, id!, creator.pid, saved.vars, owner, ids);
          attachSysvSegments(creator.pid);
          const removed = saved.shm.filter((s) => s.entry.desc!.mode & SHM_DEST);
          inNamespaceOf(creator.pid, "ipc", () => removed.forEach((s) => removeIpc("shm", s.entry.desc!.id)));
        } catch (e) {
          if (e instanceof RestoreError) throw e;
          throw new RestoreError(`Cannot rebuild the IPC namespace: ${(e as Error).message}`);
        }
      },
    };
  },
});
