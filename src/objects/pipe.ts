/**
 * Pipes, with the bytes queued in them (pipes-data.img). A pipe is created once, in the first
 * task that needs it, and its two ends are parked there; every fd of either end, in any task, is
 * a copy of a parked end, so ends shared between processes stay shared.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { pipe_entrySchema } from "../images/gen/pipe_pb.ts";
import { F, NR, O } from "../../ffi/syscalls.ts";
import { KINDS } from "../images/kinds.ts";
import { PipeDataStore } from "./pipe_data.ts";
import {
  addFdFile,
  emptyFown,
  type FdKind,
  fileFlags,
  type FileTable,
  grabFd,
  registerFdKind,
  type RestoreFilesContext,
} from "./files.ts";
import { RestoreError } from "../errors.ts";
import { FD_PAIR_SIZE, parseFdPair } from "../../ffi/structs.ts";

const PIPE_NAME = /^pipe:\[(\d+)\]$/;

/** pipes-data.img, by pipe inode: filled at dump, read back at restore. */
function pipeData(table: FileTable): PipeDataStore {
  return PipeDataStore.of(table, KINDS.PIPES_DATA);
}

function createPipe(ctx: RestoreFilesContext, pipeId: number): void {
  const { agent } = ctx;
  agent.reset();
  const fds = agent.alloc(FD_PAIR_SIZE);
  agent.call("pipe2", NR.pipe2, fds, O.CLOEXEC);
  const [readEnd, writeEnd] = parseFdPair(agent.read(fds, FD_PAIR_SIZE));
  const r = ctx.park(readEnd);
  const w = ctx.park(writeEnd);
  pipeData(ctx.table).refill(agent, pipeId, w);
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
    pipeData(ctx.table).collect(pipeId, ctx.pid, fd.fd);
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
  // CRIU's name for --inherit-fd; the caller's pipe is opened again with the dumped end's flags.
  inheritName: (entry) => entry.pipe ? `pipe:[${entry.pipe.pipeId}]` : undefined,
  reopenInherited: (entry) => entry.pipe?.flags,
  finishDump(session) {
    pipeData(session.table).write(session);
  },
  loadImages(session) {
    pipeData(session.table).read(session);
  },
};

registerFdKind(pipeKind);
