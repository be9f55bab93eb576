/**
 * POSIX message queues (mq_open): their fds look like regular files (of the IPC namespace's mqueue
 * filesystem), so this kind is asked before the regular files and refuses them by name; neither
 * the queues nor their messages are saved yet. The filesystem is recognised by statfs, asked once
 * per device during a dump (device numbers are reused once a namespace is gone).
 */
import { fd_types } from "../images/gen/fdinfo_pb.ts";
import { filesystemMagic, FS_MAGIC } from "../../ffi/statfs.ts";
import { type FdKind, registerFdKind } from "./files.ts";
import { refuse } from "./refusal.ts";
import { RestoreError } from "../errors.ts";

/** Whether each device seen so far is an mqueue filesystem. */
const mqueueDevices = new Map<number, boolean>();

function isMqueue(pid: number, fd: number, dev: number): boolean {
  let known = mqueueDevices.get(dev);
  if (known === undefined) {
    try {
      known = filesystemMagic(`/proc/${pid}/fd/${fd}`) === FS_MAGIC.MQUEUE;
    } catch {
      return false; // the fd closed meanwhile: whichever kind takes it says so
    }
    mqueueDevices.set(dev, known);
  }
  return known;
}

const mqueueKind: FdKind = {
  name: "POSIX message queue",
  // No image type: CRIU has none for message queues, and nothing of this kind is ever written.
  type: fd_types.UND,
  detect(fd, stat, pid) {
    return stat !== null && stat.isFile && fd.target.startsWith("/") && isMqueue(pid, fd.fd, stat.dev);
  },
  dump(ctx, fd) {
    refuse(
      ctx.pid,
      `POSIX message queue ${fd.target} (fd ${fd.fd})`,
      "POSIX message queues are not supported yet",
    );
  },
  endDump() {
    mqueueDevices.clear();
  },
  open(_ctx, entry) {
    throw new RestoreError(`Cannot restore file ${entry.id}: it has no type the checkpoint's files can have`);
  },
};

registerFdKind(mqueueKind);
