/**
 * The bytes queued in pipes and FIFOs, kept the one way CRIU keeps both: an image of
 * `pipe_data_entry` records (pipes-data.img for pipes, fifo-data.img for FIFOs), each followed by
 * the queued bytes, for every pipe holding data or a capacity other than the default. At dump the
 * data is peeked (the task keeps it); at restore it is written back into the new pipe once.
 */
import { create } from "@bufbuild/protobuf";
import { peekPipe } from "../../ffi/pipe.ts";
import { NR } from "../../ffi/syscalls.ts";
import { type pipe_data_entry, pipe_data_entrySchema } from "../images/gen/pipe-data_pb.ts";
import type { ImageKind } from "../images/kinds.ts";
import { ImageReader, ImageWriter } from "../images/file.ts";
import type { FilesSession, FileTable } from "./files.ts";
import type { Agent } from "../agent.ts";
import { RestoreError } from "../errors.ts";

const F_SETPIPE_SZ = 1031;
export const DEFAULT_PIPE_CAPACITY = 65536;
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
export interface PipeData {
  data: Uint8Array<ArrayBuffer>;
  capacity: number;
}

/** The queued data of every pipe of one image kind, by pipe inode, for a whole dump or restore. */
export class PipeDataStore {
  constructor(readonly kind: ImageKind, readonly byPipe: Map<number, PipeData>) {}

  /** The store of `kind` kept in the file table (one per image kind). */
  static of(table: FileTable, kind: ImageKind): PipeDataStore {
    return table.stateOf(`pipe-data:${kind.name}`, () => new PipeDataStore(kind, new Map()));
  }

  /** Peeks the data of pipe `pipeId` through the task's fd, once per pipe. */
  collect(pipeId: number, pid: number, fd: number): void {
    if (!this.byPipe.has(pipeId)) this.byPipe.set(pipeId, peekPipe(`/proc/${pid}/fd/${fd}`));
  }

  /** The image: one entry per pipe with queued bytes or a capacity of its own, each followed by its bytes. */
  write(session: FilesSession): void {
    const pipes = [...this.byPipe].filter(([, p]) =>
      p.data.length > 0 || p.capacity !== DEFAULT_PIPE_CAPACITY
    );
    if (pipes.length === 0) return;
    const w = ImageWriter.create(session.dir.path, this.kind);
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

  read(session: FilesSession): void {
    if (!session.dir.has(this.kind)) return;
    const r = ImageReader.open(session.dir.path, this.kind);
    try {
      for (let e = r.readEntry() as pipe_data_entry | null; e; e = r.readEntry() as pipe_data_entry | null) {
        const capacity = e.size ?? DEFAULT_PIPE_CAPACITY;
        // A pipe holds at most its capacity: more would block the restore's write for ever.
        const most = maxPipeCapacity();
        if (capacity < PAGE_SIZE || capacity > most || capacity & (capacity - 1)) {
          throw new RestoreError(
            `Refusing the images: ${r.name} gives pipe ${e.pipeId} a capacity of ${capacity} bytes, expected a power of two from ${PAGE_SIZE} to ${most}`,
          );
        }
        if (e.bytes > Math.max(capacity, DEFAULT_PIPE_CAPACITY)) {
          throw new RestoreError(
            `Refusing the images: ${r.name} has ${e.bytes} bytes queued in pipe ${e.pipeId}, more than its capacity of ${capacity}`,
          );
        }
        const data = r.readBlob(e.bytes);
        this.byPipe.set(e.pipeId, { data: new Uint8Array(data), capacity });
      }
    } finally {
      r.close();
    }
  }

  /**
   * Gives pipe `pipeId` its capacity and queued bytes again, through `writeFd`, an fd of the task
   * that writes into it (a pipe's write end, or a FIFO opened read-write).
   */
  refill(agent: Agent, pipeId: number, writeFd: number): void {
    const queued = this.byPipe.get(pipeId);
    if (!queued) return;
    if (queued.capacity > DEFAULT_PIPE_CAPACITY) {
      agent.call("fcntl(F_SETPIPE_SZ)", NR.fcntl, writeFd, F_SETPIPE_SZ, queued.capacity);
    }
    const data = queued.data;
    for (let off = 0; off < data.length; off += WRITE_CHUNK) {
      const chunk = data.slice(off, Math.min(off + WRITE_CHUNK, data.length));
      agent.reset();
      const n = agent.call(
        "write(pipe data)",
        NR.write,
        writeFd,
        agent.alloc(chunk.length, chunk),
        chunk.length,
      );
      if (Number(n) !== chunk.length) {
        throw new RestoreError(`Pipe ${pipeId} took ${n} of ${chunk.length} bytes back`);
      }
    }
  }
}
