/** eventfd: its counter and flags, recreated by eventfd2(). */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { eventfd_file_entrySchema } from "../images/gen/eventfd_pb.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import { addFdFile, emptyFown, type FdKind, fileFlags, registerFdKind } from "./files.ts";
import { refuse } from "./refusal.ts";
import { RestoreError } from "../errors.ts";

export const eventfdKind: FdKind = {
  name: "eventfd",
  type: fd_types.EVENTFD,
  detect(fd) {
    return fd.target === "anon_inode:[eventfd]";
  },
  dump(ctx, fd) {
    if (fd.info.get("eventfd-semaphore") === "1") {
      refuse(ctx.pid, `fd ${fd.fd} (eventfd)`, "semaphore-mode eventfds are not supported yet");
    }
    const counter = BigInt("0x" + (fd.info.get("eventfd-count") ?? "0"));
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.EVENTFD,
        id,
        efd: create(eventfd_file_entrySchema, {
          id,
          flags: fileFlags(fd),
          fown: emptyFown(),
          counter,
        }),
      }));
  },
  open(ctx, entry) {
    const e = entry.efd;
    if (!e) throw new RestoreError(`File ${entry.id} has no eventfd data`);
    const flags = e.flags & O.NONBLOCK;
    return Number(ctx.agent.call("eventfd2", NR.eventfd2, e.counter, flags));
  },
};

registerFdKind(eventfdKind);
