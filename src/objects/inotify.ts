/**
 * inotify: each instance with its watches (wd, mask, the watched inode), as CRIU keeps them. The
 * watched file is named by its file handle (fdinfo's f_handle, what name_to_handle_at gives) on
 * the filesystem of its device; the path the handle opens to at dump is kept too, as a hint.
 *
 * At restore criu opens each handle again (open_by_handle_at on a mount of that device), hands the
 * file to the task, and the task adds the watch through /proc/self/fd/N, asking the kernel for the
 * dumped watch number first (INOTIFY_IOC_SETNEXTWD), so the program's wds mean the same files.
 * Events queued but not read at dump time are not kept (as in CRIU).
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import {
  inotify_file_entrySchema,
  type inotify_wd_entry,
  inotify_wd_entrySchema,
} from "../images/gen/fsnotify_pb.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import {
  addFdFile,
  emptyFown,
  type FdKind,
  fileFlags,
  registerFdKind,
  type RestoreFilesContext,
} from "./files.ts";
import { type Handle, handleEntry, parseHandle, reachWatched } from "./fsnotify.ts";
import { refuse } from "./refusal.ts";
import { RestoreError } from "../errors.ts";
import { isSyscallError } from "../../ffi/errors.ts";

const WATCH_LINE =
  /^inotify wd:([0-9a-f]+) ino:([0-9a-f]+) sdev:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+) fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]*)$/;
/** _IOW('I', 0, __s32): the wd the next inotify_add_watch gets (CONFIG_CHECKPOINT_RESTORE). */
const INOTIFY_IOC_SETNEXTWD = 0x40044900;
/** The events (IN_ALL_EVENTS) and the flags that shape a watch; lookup flags do not apply to /proc/self/fd. */
const WATCH_BITS = 0xfff | 0x01000000 /* IN_ONLYDIR */ | 0x04000000 /* IN_EXCL_UNLINK */ |
  0x80000000; /* IN_ONESHOT */
/** A watch as fdinfo shows it. */
interface Watch {
  wd: number;
  ino: bigint;
  sdev: number;
  mask: number;
  ignoredMask: number;
  handle: Handle;
}

function readWatches(pid: number, fd: number): Watch[] {
  const text = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`);
  return text.split("\n").filter((l) => l.startsWith("inotify ")).map((line) => {
    const m = WATCH_LINE.exec(line.trim());
    if (!m) refuse(pid, `fd ${fd} (inotify)`, `a watch in its fdinfo is not as expected: ${line}`);
    const sdev = parseInt(m[3]!, 16);
    return {
      wd: parseInt(m[1]!, 16),
      ino: BigInt(`0x${m[2]}`),
      sdev,
      mask: parseInt(m[4]!, 16),
      ignoredMask: parseInt(m[5]!, 16),
      handle: parseHandle(sdev, m[6]!, m[7]!, m[8]!),
    };
  });
}

export const inotifyKind: FdKind = {
  name: "inotify",
  type: fd_types.INOTIFY,
  detect(fd) {
    return fd.target === "anon_inode:inotify";
  },
  dump(ctx, fd) {
    const watches = readWatches(ctx.pid, fd.fd);
    const handles = watches.map((w) =>
      handleEntry(ctx.pid, `watch ${w.wd} of fd ${fd.fd} (inotify)`, w.handle)
    );
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.INOTIFY,
        id,
        ify: create(inotify_file_entrySchema, {
          id,
          flags: fileFlags(fd),
          fown: emptyFown(),
          wd: watches.map((w, i) =>
            create(inotify_wd_entrySchema, {
              id,
              iIno: w.ino,
              mask: w.mask,
              ignoredMask: w.ignoredMask,
              sDev: w.sdev,
              wd: w.wd,
              fHandle: handles[i]!,
            })
          ),
        }),
      }));
  },
  open(ctx, entry) {
    const e = entry.ify;
    if (!e) throw new RestoreError(`File ${entry.id} has no inotify data`);
    const ifd = Number(ctx.agent.call("inotify_init1", NR.inotify_init1, e.flags & O.NONBLOCK));
    for (const w of [...e.wd].sort((a, b) => a.wd - b.wd)) addWatch(ctx, ifd, w);
    return ifd;
  },
};

/**
 * Adds a dumped watch to the task's inotify fd with its old wd. The file is opened by its handle
 * in criu and handed over; when that cannot be (no such mount here, a task in a PID namespace of
 * its own) the task opens the path kept as a hint.
 */
function addWatch(ctx: RestoreFilesContext, ifd: number, w: inotify_wd_entry): void {
  const { agent } = ctx;
  const { path: target, taken } = reachWatched(ctx, w.sDev, w.fHandle, `inotify watch ${w.wd}`);
  try {
    // The wd is the ioctl's argument itself, not a pointer to it.
    const settable = !isSyscallError(
      agent.attempt("ioctl(INOTIFY_IOC_SETNEXTWD)", NR.ioctl, ifd, INOTIFY_IOC_SETNEXTWD, w.wd),
    );
    agent.reset();
    const path = agent.string(target);
    for (;;) {
      const got = Number(
        agent.call(`inotify_add_watch(${target})`, NR.inotify_add_watch, ifd, path, w.mask & WATCH_BITS),
      );
      if (got === w.wd) return;
      // Without SETNEXTWD (an old kernel) wds come in turn: drop the ones before it.
      if (settable || got > w.wd) {
        throw new RestoreError(`inotify watch ${w.wd} came back as ${got}`);
      }
      agent.call("inotify_rm_watch", NR.inotify_rm_watch, ifd, got);
    }
  } finally {
    if (taken >= 0) agent.later("close(watched file)", NR.close, taken);
  }
}

registerFdKind(inotifyKind);
