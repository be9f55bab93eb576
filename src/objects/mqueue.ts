/**
 * Fds of POSIX message queues (mq_open). They look like regular files (of the IPC namespace's
 * mqueue filesystem), so this kind is asked before the regular files; the filesystem is
 * recognised by statfs, asked once per device during a dump (device numbers are reused once a
 * namespace is gone). The queues themselves, with their messages, are saved with their IPC
 * namespace (posix_mq.ts); an fd keeps the queue's name and its flags (access mode, O_NONBLOCK;
 * close-on-exec is the fd's, in fdinfo) and is opened again with mq_open by name, by the task
 * itself in its IPC namespace, where the queue exists by then.
 *
 * CRIU has no image for them: files.img gets an ext_file_entry (type EXT, as a file only a plugin
 * restores, which is what a CRIU restore will say) with a posix_mq_file_entry beside it in field
 * 1000, which CRIU skips. Refused by name: a queue whose name was removed (mq_unlink) while the
 * fd stays open, a queue of criu's own IPC namespace (not saved, as its SysV objects are not),
 * an fd of a queue of another namespace than its task's, and one in flight in a socket queue.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { ext_file_entrySchema } from "../images/gen/ext-file_pb.ts";
import { posix_mq_file_entrySchema } from "../images/gen/posix-mq_pb.ts";
import { filesystemMagic, FS_MAGIC } from "../../ffi/statfs.ts";
import { F, NR, O } from "../../ffi/syscalls.ts";
import { addFdFile, emptyFown, type FdKind, fileFlags, registerFdKind } from "./files.ts";
import { refuse } from "./refusal.ts";
import { withQueuesOf } from "./posix_mq.ts";
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

/** The queue file `name` of `pid`'s IPC namespace, or null when it has none of that name. */
function queueInNamespaceOf(pid: number, name: string): Deno.FileInfo | null {
  return withQueuesOf(pid, (mount) => {
    try {
      return Deno.statSync(`/proc/self/fd/${mount}/${name}`);
    } catch {
      return null;
    }
  });
}

const mqueueKind: FdKind = {
  name: "POSIX message queue",
  type: fd_types.EXT,
  claims(entry) {
    return entry.posixMq !== undefined;
  },
  detect(fd, stat, pid) {
    return stat !== null && stat.isFile && fd.target.startsWith("/") && isMqueue(pid, fd.fd, stat.dev);
  },
  dump(ctx, fd, stat) {
    const what = `POSIX message queue ${fd.target} (fd ${fd.fd})`;
    if (fd.target.endsWith(" (deleted)")) {
      refuse(ctx.pid, what, "its name was removed (mq_unlink) while it is open, which is not supported yet");
    }
    if (ctx.pid === Deno.pid) {
      // Taken out of a socket queue by criu: which namespace it came from is not known here.
      refuse(ctx.pid, what, "an fd of a queue in flight in a socket queue is not supported yet");
    }
    const name = fd.target.slice(1);
    if (Deno.readLinkSync(`/proc/${ctx.pid}/ns/ipc`) === Deno.readLinkSync("/proc/self/ns/ipc")) {
      refuse(ctx.pid, what, "it is in criu's own IPC namespace, whose queues are not saved");
    }
    const inNs = queueInNamespaceOf(ctx.pid, name);
    if (inNs === null || inNs.dev !== stat?.dev || inNs.ino !== stat?.ino) {
      refuse(
        ctx.pid,
        what,
        "it is a queue of another IPC namespace than the process's, which is not supported",
      );
    }
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.EXT,
        id,
        ext: create(ext_file_entrySchema, { id, fown: emptyFown() }),
        posixMq: create(posix_mq_file_entrySchema, { name, flags: fileFlags(fd) & (O.ACCMODE | O.NONBLOCK) }),
      }));
  },
  endDump() {
    mqueueDevices.clear();
  },
  open(ctx, entry) {
    const q = entry.posixMq;
    if (!q || q.name === "" || q.name.includes("/")) {
      throw new RestoreError(`Refusing the images: file ${entry.id} has no POSIX message queue name`);
    }
    const flags = q.flags & (O.ACCMODE | O.NONBLOCK);
    const fd = ctx.agent.call(`mq_open(/${q.name})`, NR.mq_open, ctx.agent.string(q.name), flags, 0, 0);
    // mq_open makes every fd close-on-exec; the fd's own flag is set from fdinfo once it is placed.
    ctx.agent.call("fcntl(F_SETFD)", NR.fcntl, fd, F.SETFD, 0);
    return Number(fd);
  },
};

registerFdKind(mqueueKind);
