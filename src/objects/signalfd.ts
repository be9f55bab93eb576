/** signalfd: the signals it takes (fdinfo's sigmask) and its flags, recreated by signalfd4(). */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { signalfd_entrySchema } from "../images/gen/signalfd_pb.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import { KERNEL_SIGSET_SIZE, kernelSigset } from "../../ffi/structs.ts";
import { addFdFile, emptyFown, type FdKind, fileFlags, registerFdKind } from "./files.ts";
import { refuse } from "./refusal.ts";
import { RestoreError } from "../errors.ts";

export const signalfdKind: FdKind = {
  name: "signalfd",
  type: fd_types.SIGNALFD,
  detect(fd) {
    return fd.target === "anon_inode:[signalfd]";
  },
  dump(ctx, fd) {
    const mask = fd.info.get("sigmask");
    if (mask === undefined || !/^[0-9a-f]+$/.test(mask)) {
      refuse(ctx.pid, `fd ${fd.fd} (signalfd)`, `its fdinfo has no signal mask (found ${mask ?? "none"})`);
    }
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.SIGNALFD,
        id,
        sgfd: create(signalfd_entrySchema, {
          id,
          flags: fileFlags(fd),
          fown: emptyFown(),
          sigmask: BigInt(`0x${mask}`),
        }),
      }));
  },
  open(ctx, entry) {
    const e = entry.sgfd;
    if (!e) throw new RestoreError(`File ${entry.id} has no signalfd data`);
    const { agent } = ctx;
    agent.reset();
    const mask = agent.alloc(KERNEL_SIGSET_SIZE, kernelSigset(e.sigmask));
    return Number(agent.call("signalfd4", NR.signalfd4, -1, mask, KERNEL_SIGSET_SIZE, e.flags & O.NONBLOCK));
  },
};

registerFdKind(signalfdKind);
