/**
 * External files: an fd no built-in kind takes is offered to the plugins (DUMP_EXT_FILE), in load
 * order; the one that takes it keeps what it needs in its own images, and files.img gets an
 * `ext_file_entry` (type EXT) with the file's id, as CRIU writes it. At restore the plugins are
 * asked for the file by that id (RESTORE_EXT_FILE); the fd a plugin gives back is criu's own, and
 * the restored task takes a copy of it at the dumped number.
 *
 * This is the one place an unknown fd is refused: when no plugin takes it.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { ext_file_entrySchema } from "../images/gen/ext-file_pb.ts";
import { copyFdOf } from "../../ffi/process.ts";
import { socketProtocolName } from "../../ffi/inet_sock.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import { closeFd } from "../../ffi/fd.ts";
import { ENOTSUP } from "../plugins/api.ts";
import { PluginError } from "../plugins/plugins.ts";
import { RestoreError } from "../errors.ts";
import { addFdFile, emptyFown, type FdKind, registerFdKind, takeFromCriu } from "./files.ts";
import { refuse } from "./refusal.ts";

export const externalFileKind: FdKind = {
  name: "external file",
  type: fd_types.EXT,
  detect() {
    return false; // never by itself: it is what the others leave
  },
  dump(ctx, fd) {
    const plugins = ctx.session.plugins;
    const id = ctx.table.nextId();
    let answer = -ENOTSUP;
    if (plugins.has("DUMP_EXT_FILE")) {
      const ours = copyFdOf(ctx.pid, fd.fd);
      try {
        answer = plugins.run("DUMP_EXT_FILE", (p) => p.callInts("DUMP_EXT_FILE", ours, id));
      } finally {
        closeFd(ours);
      }
    }
    if (answer === -ENOTSUP) {
      refuse(ctx.pid, `fd ${fd.fd} (${fd.target})`, notSupported(ctx.pid, fd));
    }
    if (answer < 0) {
      throw new PluginError(
        `A plugin failed to dump fd ${fd.fd} (${fd.target}) of process ${ctx.pid}: ${answer}`,
        -answer,
      );
    }
    ctx.log.info(`A plugin took fd ${fd.fd} (${fd.target}) of process ${ctx.pid} as external file ${id}`);
    return addFdFile(ctx, fd, (given) =>
      create(file_entrySchema, {
        type: fd_types.EXT,
        id: given,
        ext: create(ext_file_entrySchema, { id: given, fown: emptyFown() }),
      }));
  },
  open(ctx, entry) {
    const fd = ctx.session.plugins.run("RESTORE_EXT_FILE", (p) => p.restoreFd("RESTORE_EXT_FILE", entry.id));
    if (fd < 0) {
      throw new RestoreError(
        fd === -ENOTSUP
          ? `No plugin restores external file ${entry.id} (load the plugin that dumped it with -L)`
          : `A plugin failed to restore external file ${entry.id}: ${fd}`,
        fd === -ENOTSUP ? 0 : -fd,
      );
    }
    try {
      return takeFromCriu(ctx, fd);
    } finally {
      closeFd(fd);
    }
  },
};

registerFdKind(externalFileKind);

/** Why an fd is refused: a socket is named by its protocol (PACKET, ...), any other file by its kind. */
function notSupported(pid: number, fd: FdEntry): string {
  if (!fd.target.startsWith("socket:")) return "this kind of file is not supported yet";
  const protocol = socketProtocolName(`/proc/${pid}/fd/${fd.fd}`);
  return protocol ? `${protocol} sockets are not supported yet` : "this kind of socket is not supported yet";
}
