/**
 * fanotify: each group with its init flags and event flags and its marks, as CRIU keeps them: marks
 * on an inode (by its file handle, see fsnotify.ts) and marks on a mount (by its mount point), each
 * with its mark flags, mask and ignored mask. At restore the task makes a new group
 * (fanotify_init) and adds every mark again (fanotify_mark), the mask and the ignored mask apart.
 * Events queued but not read at dump time are not kept (as in CRIU); filesystem-wide marks
 * (FAN_MARK_FILESYSTEM) are refused by name, as CRIU cannot keep them either.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import {
  fanotify_file_entrySchema,
  fanotify_inode_mark_entrySchema,
  type fanotify_mark_entry,
  fanotify_mark_entrySchema,
  fanotify_mount_mark_entrySchema,
  mark_type,
} from "../images/gen/fsnotify_pb.ts";
import { AT_FDCWD, NR, O } from "../../ffi/syscalls.ts";
import { FAN_MARK, FAN_NONBLOCK } from "../../ffi/fanotify.ts";
import {
  addFdFile,
  emptyFown,
  type FdKind,
  fileFlags,
  registerFdKind,
  type RestoreFilesContext,
} from "./files.ts";
import { handleEntry, parseHandle, reachWatched } from "./fsnotify.ts";
import { refuse } from "./refusal.ts";
import { RestoreError } from "../errors.ts";

const GROUP_LINE = /^fanotify flags:([0-9a-f]+) event-flags:([0-9a-f]+)$/;
const INODE_MARK =
  /^fanotify ino:([0-9a-f]+) sdev:([0-9a-f]+) mflags:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+) fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]*)$/;
const MOUNT_MARK =
  /^fanotify mnt_id:([0-9a-f]+) mflags:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+)$/;

/** The mount point of mount `mntId` as task `pid` sees it (its mountinfo); undefined if none. */
function mountPoint(pid: number, mntId: number): string | undefined {
  for (const line of Deno.readTextFileSync(`/proc/${pid}/mountinfo`).split("\n")) {
    const f = line.split(" ");
    if (Number(f[0]) === mntId) {
      return f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    }
  }
  return undefined;
}

function dumpMarks(
  pid: number,
  fd: number,
  id: number,
): { faflags: number; evflags: number; marks: fanotify_mark_entry[] } {
  const what = `fd ${fd} (fanotify)`;
  let group: RegExpExecArray | null = null;
  const marks: fanotify_mark_entry[] = [];
  for (const raw of Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`).split("\n")) {
    const line = raw.trim();
    if (!line.startsWith("fanotify ")) continue;
    const g = GROUP_LINE.exec(line);
    const i = INODE_MARK.exec(line);
    const m = MOUNT_MARK.exec(line);
    if (g) {
      group = g;
    } else if (i) {
      const sDev = parseInt(i[2]!, 16);
      marks.push(create(fanotify_mark_entrySchema, {
        id,
        type: mark_type.INODE,
        mflags: parseInt(i[3]!, 16),
        mask: parseInt(i[4]!, 16),
        ignoredMask: parseInt(i[5]!, 16),
        sDev,
        ie: create(fanotify_inode_mark_entrySchema, {
          iIno: BigInt(`0x${i[1]}`),
          fHandle: handleEntry(pid, `a mark of ${what}`, parseHandle(sDev, i[6]!, i[7]!, i[8]!)),
        }),
      }));
    } else if (m) {
      const mntId = parseInt(m[1]!, 16);
      const path = mountPoint(pid, mntId);
      if (path === undefined) refuse(pid, what, `it marks mount ${mntId}, which the task does not see`);
      marks.push(create(fanotify_mark_entrySchema, {
        id,
        type: mark_type.MOUNT,
        mflags: parseInt(m[2]!, 16),
        mask: parseInt(m[3]!, 16),
        ignoredMask: parseInt(m[4]!, 16),
        sDev: 0,
        me: create(fanotify_mount_mark_entrySchema, { mntId, path }),
      }));
    } else {
      refuse(pid, what, `a mark of a kind not supported (filesystem-wide, or not as expected): ${line}`);
    }
  }
  if (!group) refuse(pid, what, "its fdinfo has no group flags");
  return { faflags: parseInt(group[1]!, 16), evflags: parseInt(group[2]!, 16), marks };
}

export const fanotifyKind: FdKind = {
  name: "fanotify",
  type: fd_types.FANOTIFY,
  detect(fd) {
    return fd.target === "anon_inode:[fanotify]";
  },
  dump(ctx, fd) {
    return addFdFile(ctx, fd, (id) => {
      const { faflags, evflags, marks } = dumpMarks(ctx.pid, fd.fd, id);
      return create(file_entrySchema, {
        type: fd_types.FANOTIFY,
        id,
        ffy: create(fanotify_file_entrySchema, {
          id,
          flags: fileFlags(fd),
          fown: emptyFown(),
          faflags,
          evflags,
          mark: marks,
        }),
      });
    });
  },
  open(ctx, entry) {
    const e = entry.ffy;
    if (!e) throw new RestoreError(`File ${entry.id} has no fanotify data`);
    const flags = (e.faflags & ~FAN_NONBLOCK) | (e.flags & O.NONBLOCK ? FAN_NONBLOCK : 0);
    const fd = Number(ctx.agent.call("fanotify_init", NR.fanotify_init, flags, e.evflags));
    for (const mark of e.mark) addMark(ctx, fd, mark);
    return fd;
  },
};

/** Adds a dumped mark to the task's group: its mask, then its ignored mask. */
function addMark(ctx: RestoreFilesContext, fd: number, mark: fanotify_mark_entry): void {
  const { agent } = ctx;
  let target: { path: string; taken: number };
  let flags = FAN_MARK.ADD | mark.mflags;
  if (mark.type === mark_type.MOUNT) {
    if (!mark.me?.path) throw new RestoreError(`A fanotify mount mark of file ${mark.id} has no mount point`);
    target = { path: mark.me.path, taken: -1 };
    flags |= FAN_MARK.MOUNT;
  } else {
    target = reachWatched(ctx, mark.sDev, mark.ie?.fHandle, `a fanotify mark of file ${mark.id}`);
  }
  try {
    agent.reset();
    const path = agent.string(target.path);
    if (mark.mask) {
      agent.call(`fanotify_mark(${target.path})`, NR.fanotify_mark, fd, flags, mark.mask, AT_FDCWD, path);
    }
    if (mark.ignoredMask) {
      agent.call(
        `fanotify_mark(${target.path}, ignored)`,
        NR.fanotify_mark,
        fd,
        flags | FAN_MARK.IGNORED_MASK,
        mark.ignoredMask,
        AT_FDCWD,
        path,
      );
    }
  } finally {
    if (target.taken >= 0) agent.later("close(marked file)", NR.close, target.taken);
  }
}

registerFdKind(fanotifyKind);
