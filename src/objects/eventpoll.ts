/**
 * epoll instances and what they watch. Restored after every other fd of the task, since each
 * watched fd must exist (at its number) before it can be added again.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { eventpoll_file_entrySchema, eventpoll_tfd_entrySchema } from "../images/gen/eventpoll_pb.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import { NR } from "../../ffi/syscalls.ts";
import { EPOLL_EVENT_SIZE, epollEvent } from "../../ffi/structs.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { addFdFile, emptyFown, type FdKind, fileFlags, registerFdKind } from "./files.ts";
import { RestoreError } from "../errors.ts";

const EPOLL_CTL_ADD = 1;
const TFD_LINE =
  /tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)\s+pos:\s*(\d+)\s+ino:\s*([0-9a-f]+)\s+sdev:\s*([0-9a-f]+)/g;

function watched(pid: number, fd: FdEntry) {
  // fdinfo lists one "tfd:" line per watched file; FdEntry.info keeps only the first per key.
  const text = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd.fd}`);
  return [...text.matchAll(TFD_LINE)].map((m) => ({
    tfd: Number(m[1]),
    events: parseInt(m[2]!, 16),
    data: BigInt("0x" + m[3]),
    pos: BigInt(m[4]!),
    inode: BigInt("0x" + m[5]),
    dev: parseInt(m[6]!, 16),
  }));
}

export const eventpollKind: FdKind = {
  name: "epoll",
  type: fd_types.EVENTPOLL,
  rank: 1,
  detect(fd) {
    return fd.target === "anon_inode:[eventpoll]";
  },
  dump(ctx, fd) {
    const targets = watched(ctx.pid, fd);
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.EVENTPOLL,
        id,
        epfd: create(eventpoll_file_entrySchema, {
          id,
          flags: fileFlags(fd),
          fown: emptyFown(),
          tfd: targets.map((t) => create(eventpoll_tfd_entrySchema, { id, ...t })),
        }),
      }));
  },
  open(ctx, entry) {
    const e = entry.epfd;
    if (!e) throw new RestoreError(`File ${entry.id} has no epoll data`);
    const { agent } = ctx;
    const epfd = Number(agent.call("epoll_create1", NR.epoll_create1, 0));
    for (const t of e.tfd) {
      agent.reset();
      const event = agent.alloc(EPOLL_EVENT_SIZE, epollEvent(t.events, t.data));
      try {
        agent.call(`epoll_ctl(ADD fd ${t.tfd})`, NR.epoll_ctl, epfd, EPOLL_CTL_ADD, t.tfd, event);
      } catch (e) {
        if (!isSyscallError(e)) throw e;
        throw new RestoreError(`Cannot watch fd ${t.tfd} with epoll again: ${e.code}`, e.errno, { cause: e });
      }
    }
    return epfd;
  },
};

registerFdKind(eventpollKind);
