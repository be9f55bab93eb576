/**
 * Terminals. Only --shell-job terminals are supported, as CRIU does it: the task's terminal fds are
 * remembered, and on restore they refer to the terminal criu-ts itself runs on.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { tty_file_entrySchema, tty_info_entrySchema, TtyType } from "../images/gen/tty_pb.ts";
import { NR } from "../../ffi/syscalls.ts";
import { type FdKind, registerFdKind } from "./files.ts";
import { emptyFown } from "./regfile.ts";
import { RestoreError, UnsupportedObjectError } from "../errors.ts";

function isTerminalPath(p: string): boolean {
  return /^\/dev\/(pts\/\d+|tty\d*|console|ttyS\d+)$/.test(p);
}

export const ttyKind: FdKind = {
  name: "terminal",
  type: fd_types.TTY,
  detect(fd, stat) {
    return isTerminalPath(fd.target) && (stat === null || stat.isCharDevice === true);
  },
  dump(ctx, fd, stat) {
    if (!ctx.shellJob) {
      throw new UnsupportedObjectError(
        ctx.pid,
        `fd ${fd.fd} (terminal ${fd.target})`,
        "a terminal needs --shell-job",
      );
    }
    const rdev = stat?.rdev ?? 0;
    let info = ctx.table.ttyInfos.find((t) => t.rdev === rdev);
    if (!info) {
      info = create(tty_info_entrySchema, {
        id: ctx.table.ttyInfos.length + 1,
        type: fd.target.startsWith("/dev/pts/") ? TtyType.PTY : TtyType.EXT_TTY,
        locked: false,
        exclusive: false,
        packetMode: false,
        sid: 0,
        pgrp: 0,
        rdev,
      });
      ctx.table.ttyInfos.push(info);
    }
    const infoId = info.id;
    return ctx.table.add(`tty:${ctx.pid}:${fd.fd}`, (id) =>
      create(file_entrySchema, {
        type: fd_types.TTY,
        id,
        tty: create(tty_file_entrySchema, { id, ttyInfoId: infoId, flags: fd.flags, fown: emptyFown() }),
      }));
  },
  open(ctx) {
    if (ctx.terminalFd < 0) {
      throw new RestoreError("The image has terminal fds (a shell job) but criu-ts is not on a terminal");
    }
    return Number(ctx.agent.call("dup(terminal)", NR.dup, ctx.terminalFd));
  },
};

registerFdKind(ttyKind);
