/**
 * Pipes, with the bytes queued in them (pipes-data.img). A pipe is created once, in the first
 * task that needs it, and its two ends are parked there; every fd of either end, in any task, is
 * a copy of a parked end, so ends shared between processes stay shared.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { pipe_entrySchema } from "../images/gen/pipe_pb.ts";
import { peekPipe } from "../../ffi/pipe.ts";
import { F, NR, O } from "../../ffi/syscalls.ts";
import { type pipe_data_entry, pipe_data_entrySchema } from "../images/gen/pipe-data_pb.ts";
import { KINDS } from "../images/kinds.ts";
import { ImageReader, ImageWriter } from "../images/file.ts";
import {
  addFdFile,
  emptyFown,
  type FdKind,
  fileFlags,
  type FilesSession,
  type FileTable,
  grabFd,
  registerFdKind,
  type RestoreFilesContext,
} from "./files.ts";
import { RestoreError } from "../errors.ts";

const PIPE_NAME = /^pipe:\[(\d+)\]$/;
const F_SETPIPE_SZ = 1031;
const DEFAULT_CAPACITY = 65536;
const WRITE_CHUNK = 32768;
const PAGE_SIZE = 4096;

/** The largest pipe F_SETPIPE_SZ gives (fs.pipe-max-size). */
function maxPipeCapacity(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/sys/fs/pipe-max-size").trim()) || 1024 * 1024;
  } catch {
    return 1024 * 1024;
  }
}

/** The bytes queued in a pipe and its capacity. */
interface PipeData {
  data: Uint8Array<ArrayBuffer>;
  capacity: number;
}

/** pipes-data.img, by pipe inode: filled at dump, read back at restore. */
function pipeData(table: FileTable): Map<number, PipeData> {
  return table.stateOf("pipe", () => new Map<number, PipeData>());
}

function createPipe(ctx: RestoreFilesContext, pipeId: number): void {
  const { agent } = ctx;
  agent.reset();
  const fds = agent.alloc(8);
  agent.call("pipe2", NR.pipe2, fds, O.CLOEXEC);
  const v = new DataView(agent.read(fds, 8).buffer);
  const r = ctx.park(v.getInt32(0, true));
  const w = ctx.park(v.getInt32(4, true));
  const queued = pipeData(ctx.table).get(pipeId);
  if (queued && queued.capacity > DEFAULT_CAPACITY) {
    agent.call("fcntl(F_SETPIPE_SZ)", NR.fcntl, w, F_SETPIPE_SZ, queued.capacity);
  }
  const data = queued?.data ?? new Uint8Array(0);
  for (let off = 0; off < data.length; off += WRITE_CHUNK) {
    const chunk = data.slice(off, Math.min(off + WRITE_CHUNK, data.length));
    agent.reset();
    const n = agent.call("write(pipe data)", NR.write, w, agent.alloc(chunk.length, chunk), chunk.length);
    if (Number(n) !== chunk.length) {
      throw new RestoreError(`Pipe ${pipeId} took ${n} of ${chunk.length} bytes back`);
    }
  }
  ctx.shared.objects.set(`pipe:${pipeId}`, [{ pid: ctx.nsPid, fd: r }, { pid: ctx.nsPid, fd: w }]);
}

export const pipeKind: FdKind = {
  name: "pipe",
  type: fd_types.PIPE,
  detect(fd) {
    return PIPE_NAME.test(fd.target);
  },
  dump(ctx, fd) {
    const pipeId = Number(PIPE_NAME.exec(fd.target)![1]);
    const queued = pipeData(ctx.table);
    if (!queued.has(pipeId)) queued.set(pipeId, peekPipe(`/proc/${ctx.pid}/fd/${fd.fd}`));
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.PIPE,
        id,
        pipe: create(pipe_entrySchema, { id, pipeId, flags: fileFlags(fd), fown: emptyFown() }),
      }));
  },
  open(ctx, entry) {
    const p = entry.pipe;
    if (!p) throw new RestoreError(`File ${entry.id} has no pipe data`);
    if (!ctx.shared.objects.has(`pipe:${p.pipeId}`)) createPipe(ctx, p.pipeId);
    const [r, w] = ctx.shared.objects.get(`pipe:${p.pipeId}`)!;
    const fd = grabFd(ctx, (p.flags & O.ACCMODE) === O.WRONLY ? w! : r!);
    if (p.flags & O.NONBLOCK) ctx.agent.call("fcntl(F_SETFL)", NR.fcntl, fd, F.SETFL, O.NONBLOCK);
    return fd;
  },
  finishDump: writePipeData,
  loadImages: readPipeData,
};

/** pipes-data.img: one entry per pipe with queued bytes or a capacity of its own, each followed by its bytes. */
function writePipeData(session: FilesSession): void {
  const pipes = [...pipeData(session.table)].filter(([, p]) =>
    p.data.length > 0 || p.capacity !== DEFAULT_CAPACITY
  );
  if (pipes.length === 0) return;
  const w = ImageWriter.create(session.dir.path, KINDS.PIPES_DATA);
  session.dir.noteWritten(w.name);
  try {
    for (const [pipeId, { data, capacity }] of pipes) {
      w.writeEntry(create(pipe_data_entrySchema, { pipeId, bytes: data.length, size: capacity }));
      w.writeBlob(data);
    }
  } finally {
    w.close();
  }
}

function readPipeData(session: FilesSession): void {
  if (!session.dir.has(KINDS.PIPES_DATA)) return;
  const queued = pipeData(session.table);
  const r = ImageReader.open(session.dir.path, KINDS.PIPES_DATA);
  try {
    for (let e = r.readEntry() as pipe_data_entry | null; e; e = r.readEntry() as pipe_data_entry | null) {
      const capacity = e.size ?? DEFAULT_CAPACITY;
      // A pipe holds at most its capacity: more would block the restore's write for ever.
      const most = maxPipeCapacity();
      if (capacity < PAGE_SIZE || capacity > most || capacity & (capacity - 1)) {
        throw new RestoreError(
          `Refusing the images: ${r.name} gives pipe ${e.pipeId} a capacity of ${capacity} bytes, expected a power of two from ${PAGE_SIZE} to ${most}`,
        );
      }
      if (e.bytes > Math.max(capacity, DEFAULT_CAPACITY)) {
        throw new RestoreError(
          `Refusing the images: ${r.name} has ${e.bytes} bytes queued in pipe ${e.pipeId}, more than its capacity of ${capacity}`,
        );
      }
      const data = r.readBlob(e.bytes);
      queued.set(e.pipeId, { data: new Uint8Array(data), capacity });
    }
  } finally {
    r.close();
  }
}

registerFdKind(pipeKind);
