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
import { type FdKind, grabFd, registerFdKind, type RestoreFilesContext } from "./files.ts";
import { emptyFown } from "./regfile.ts";
import { RestoreError } from "../errors.ts";

const PIPE_NAME = /^pipe:\[(\d+)\]$/;
const F_SETPIPE_SZ = 1031;
const DEFAULT_CAPACITY = 65536;
const WRITE_CHUNK = 32768;

function createPipe(ctx: RestoreFilesContext, pipeId: number): void {
  const { agent } = ctx;
  agent.reset();
  const fds = agent.alloc(8);
  agent.call("pipe2", NR.pipe2, fds, O.CLOEXEC);
  const v = new DataView(agent.read(fds, 8).buffer);
  const r = ctx.park(v.getInt32(0, true));
  const w = ctx.park(v.getInt32(4, true));
  const queued = ctx.table.pipeData.get(pipeId);
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
    if (!ctx.table.pipeData.has(pipeId)) {
      ctx.table.pipeData.set(pipeId, peekPipe(`/proc/${ctx.pid}/fd/${fd.fd}`));
    }
    return ctx.table.add(`fd:${ctx.pid}:${fd.fd}`, (id) =>
      create(file_entrySchema, {
        type: fd_types.PIPE,
        id,
        pipe: create(pipe_entrySchema, { id, pipeId, flags: fd.flags & ~O.CLOEXEC, fown: emptyFown() }),
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
};

registerFdKind(pipeKind);
