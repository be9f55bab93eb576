/**
 * FIFOs (named pipes), with the bytes queued in them, as CRIU keeps them: the path and open flags
 * in a regular-file entry of their own, a `fifo_entry` naming it and the pipe's inode, and the
 * queued bytes in fifo-data.img (the same records as a pipe's, `pipe_data.ts`).
 *
 * At restore each fd opens the path again. Opening one end of a FIFO waits for the other end, so a
 * read-write open of the path is held meanwhile (it is both ends); the first fd of each FIFO also
 * writes the queued bytes back through it.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { fifo_entrySchema } from "../images/gen/fifo_pb.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import { errnoName, isSyscallError } from "../../ffi/errors.ts";
import { KINDS } from "../images/kinds.ts";
import { addFdFile, type FdKind, type FileTable, registerFdKind } from "./files.ts";
import { addRegFile } from "./regfile.ts";
import { PipeDataStore } from "./pipe_data.ts";
import { addRemovedFifo, nameIsGone, pathToOpen } from "./remap.ts";
import { RestoreError } from "../errors.ts";
import type { Agent } from "../agent.ts";

/** Flags that only matter at open time and must not be replayed. */
const OPEN_ONLY = O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY | O.CLOEXEC;

function fifoData(table: FileTable): PipeDataStore {
  return PipeDataStore.of(table, KINDS.FIFO_DATA);
}

export const fifoKind: FdKind = {
  name: "fifo",
  type: fd_types.FIFO,
  detect(fd, stat) {
    return fd.target.startsWith("/") && stat?.isFifo === true;
  },
  dump(ctx, fd, stat) {
    const pipeId = Number(stat!.ino);
    fifoData(ctx.table).collect(pipeId, ctx.pid, fd.fd);
    // A FIFO whose name is gone is carried as CRIU does: a ghost FIFO, or a link remap (remap.ts).
    const key = `fifo-path:${ctx.pid}:${fd.fd}`;
    const regfId = nameIsGone(fd.target, stat)
      ? addRemovedFifo(ctx, fd, stat!, key)
      : addRegFile(ctx.table, fd.target, fd.flags, 0n, key);
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.FIFO,
        id,
        fifo: create(fifo_entrySchema, { id, pipeId, regfId }),
      }));
  },
  open(ctx, entry) {
    const fifo = entry.fifo;
    if (!fifo) throw new RestoreError(`File ${entry.id} has no FIFO data`);
    const reg = ctx.table.get(fifo.regfId ?? 0).reg;
    if (!reg) throw new RestoreError(`FIFO ${entry.id} names file ${fifo.regfId}, which is no path`);
    const { agent } = ctx;
    const name = pathToOpen(ctx.table, fifo.regfId ?? 0, ctx.agent.pid); // a ghost's or link remap's path
    agent.reset();
    const path = agent.string(name);
    const both = Number(openIn(agent, name, path, O.RDWR));
    try {
      const fd = Number(openIn(agent, name, path, reg.flags & ~OPEN_ONLY));
      const key = `fifo-data:${fifo.pipeId}`;
      if (!ctx.shared.objects.has(key)) {
        fifoData(ctx.table).refill(agent, fifo.pipeId, both);
        ctx.shared.objects.set(key, []);
      }
      return fd;
    } finally {
      agent.later("close(FIFO)", NR.close, both);
    }
  },
  finishDump(session) {
    fifoData(session.table).write(session);
  },
  loadImages(session) {
    fifoData(session.table).read(session);
  },
};

function openIn(agent: Agent, name: string, path: bigint, flags: number): bigint {
  try {
    return agent.call(`open(${name})`, NR.open, path, flags, 0);
  } catch (e) {
    if (!isSyscallError(e)) throw e;
    throw new RestoreError(`Cannot reopen FIFO ${name}: ${errnoName(e.errno)}`, e.errno, { cause: e });
  }
}

registerFdKind(fifoKind);
