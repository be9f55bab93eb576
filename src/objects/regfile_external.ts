/**
 * `--external file[MNT_ID:INODE]` (RPC `external`): a regular file the caller will provide again at
 * restore, as CRIU does it. The dump records the fd under the name `file[MNT_ID:INODE]` (both in
 * hex, the mount id from fdinfo and the inode) with `ext` set, instead of its path, and checks
 * nothing about the file; the restore opens it from the caller's `--inherit-fd fd[N]:file[...]`
 * (through /proc, with the dumped flags and offset: a new open file description) and refuses the
 * checkpoint before any process exists when no such fd was given.
 */
import { create } from "@bufbuild/protobuf";
import { compact } from "../compact.ts";
import { fd_types, type file_entry, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { reg_file_entrySchema } from "../images/gen/regfile_pb.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import type { RunOptions } from "../options/options.ts";
import { RestoreError } from "../errors.ts";
import {
  emptyFown,
  type FilesSession,
  type FileTable,
  reopenCriuFd,
  type RestoreFilesContext,
} from "./files.ts";
import { inheritedFdFor } from "./inherited_fds.ts";

/** The key CRIU gives an fd for --external: file[MNT_ID:INODE], in hex. */
export function externalKeyOf(mntId: number, ino: number): string {
  return `file[${mntId.toString(16)}:${ino.toString(16)}]`;
}

/** The fd's --external key when the options name it as external, else undefined. */
export function externalFileKey(
  opts: RunOptions,
  fd: FdEntry,
  stat: Deno.FileInfo | null,
): string | undefined {
  if (opts.external.length === 0 || stat?.ino === null || stat?.ino === undefined) return undefined;
  const key = externalKeyOf(fd.mntId, stat.ino);
  return opts.external.includes(key) ? key : undefined;
}

/** The files.img entry of an external file: its key for a name, `ext` set, flags, offset, mode. */
export function addExternalFile(
  table: FileTable,
  fd: FdEntry,
  stat: Deno.FileInfo | null,
  key: string,
  tableKey: string,
): number {
  return table.add(tableKey, (id) =>
    create(file_entrySchema, {
      type: fd_types.REG,
      id,
      reg: create(
        reg_file_entrySchema,
        compact({
          id,
          flags: fd.flags & ~O.CLOEXEC,
          pos: fd.pos,
          fown: emptyFown(),
          name: key,
          ext: true,
          mode: stat?.mode ?? undefined,
        }),
      ),
    }));
}

function isExternal(entry: file_entry): boolean {
  return entry.type === fd_types.REG && entry.reg?.ext === true;
}

/** PREPARE: every external file of the checkpoint has its --inherit-fd. */
export function checkExternalFiles(session: FilesSession): void {
  for (const entry of session.table.entries) {
    if (!isExternal(entry)) continue;
    const name = entry.reg!.name;
    if (inheritedFdFor(session.opts, name) === undefined) {
      throw new RestoreError(
        `File ${name} (file ${entry.id} of files.img) was dumped as external (--external ${name}): ` +
          `the restore needs it back with --inherit-fd fd[N]:${name}`,
      );
    }
  }
}

/** Opens an external file in the task from the caller's inherit fd, at its dumped offset. */
export function openExternalFile(ctx: RestoreFilesContext, entry: file_entry): number {
  const reg = entry.reg!;
  const criuFd = inheritedFdFor(ctx.options, reg.name);
  if (criuFd === undefined) throw new RestoreError(`External file ${reg.name} has no --inherit-fd`);
  ctx.log.info(`File ${reg.name} will be restored from inherit fd ${criuFd} (file ${entry.id} of files.img)`);
  const fd = reopenCriuFd(ctx, criuFd, reg.flags & ~(O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY), reg.name);
  if (reg.pos !== 0n) ctx.agent.later(`lseek(${reg.name})`, NR.lseek, fd, reg.pos, 0);
  return fd;
}

/**
 * The --external kinds criu-ts acts on: files and terminals (fds), mounts and devices (mntns.ts),
 * veth and macvlan links (netdev.ts).
 */
const ACTED_ON = /^(file|tty|mnt|dev|veth|macvlan)\[/;

/** --external keys for what criu-ts does not take yet: said in the log. */
export function noteOtherExternals(session: FilesSession): void {
  for (const key of session.opts.external) {
    if (!ACTED_ON.test(key)) session.log.warn(`--external ${key} is accepted but not acted on yet`);
  }
}
