/**
 * O_PATH fds of what is not a regular file or directory (those are regular files' own): FIFOs,
 * devices, sockets' paths, symlinks opened with O_NOFOLLOW. Such an fd only names a file, so it is
 * kept as CRIU keeps it, a regular-file entry with its path and flags (O_PATH among them), and is
 * opened again the same way: opening with O_PATH neither waits for a FIFO's other end nor wakes
 * a device.
 */
import { fd_types } from "../images/gen/fdinfo_pb.ts";
import { type FdKind, registerFdKind } from "./files.ts";
import { addRegFile } from "./regfile.ts";
import { dumpRemappedFd, nameIsGone } from "./remap.ts";
import { RestoreError } from "../errors.ts";
import { O } from "../../ffi/syscalls.ts";

export const opathKind: FdKind = {
  name: "O_PATH file",
  type: fd_types.REG,
  detect(fd) {
    return (fd.flags & O.PATH) !== 0 && fd.target.startsWith("/");
  },
  dump(ctx, fd, stat) {
    // A removed symlink, FIFO or socket path: a ghost or link remap, as for regular files (remap.ts).
    if (stat && nameIsGone(fd.target, stat)) return dumpRemappedFd(ctx, fd, stat);
    return addRegFile(ctx.table, fd.target, fd.flags, 0n, `fd:${ctx.pid}:${fd.fd}`);
  },
  open(_ctx, entry) {
    // Never called: entries of type REG are the regular-file kind's to open (registered first).
    throw new RestoreError(`File ${entry.id} is a regular-file entry; the regular-file kind opens it`);
  },
};

registerFdKind(opathKind);
