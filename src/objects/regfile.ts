/**
 * Regular files, directories and the harmless character devices (/dev/null, /dev/zero, /dev/full,
 * /dev/random, /dev/urandom): reopened by path with their flags, at their offset.
 */
import { create } from "@bufbuild/protobuf";
import { compact } from "../compact.ts";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { reg_file_entrySchema } from "../images/gen/regfile_pb.ts";
import { fown_entrySchema } from "../images/gen/fown_pb.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import { type FdKind, type FileTable, registerFdKind } from "./files.ts";
import { RestoreError } from "../errors.ts";

const PLAIN_DEVICES = new Set(["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]);
/** Flags that only matter at open time and must not be replayed (O_TRUNC would empty the file). */
const OPEN_ONLY = O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY | O.CLOEXEC;

export function emptyFown() {
  return create(fown_entrySchema, { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 });
}

/** Adds (or finds) a regular-file entry; mappings and cwd/root/exe use this too. */
export function addRegFile(table: FileTable, path: string, flags: number, pos = 0n, key?: string): number {
  const st = safeStat(path);
  return table.add(key ?? `reg:${path}:${flags}`, (id) =>
    create(file_entrySchema, {
      type: fd_types.REG,
      id,
      reg: create(
        reg_file_entrySchema,
        compact({
          id,
          flags: flags & ~O.CLOEXEC,
          pos,
          fown: emptyFown(),
          name: path,
          size: st?.isFile ? BigInt(st.size) : undefined,
          mode: st?.mode ?? undefined,
        }),
      ),
    }));
}

function safeStat(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch {
    return null;
  }
}

export const regFileKind: FdKind = {
  name: "regular file",
  type: fd_types.REG,
  detect(fd, stat) {
    if (!fd.target.startsWith("/") || fd.target.endsWith(" (deleted)")) return false;
    if (stat?.isFile || stat?.isDirectory) return true;
    return PLAIN_DEVICES.has(fd.target);
  },
  dump(ctx, fd) {
    // Each fd gets its own description unless the caller proves two fds share one.
    return addRegFile(ctx.table, fd.target, fd.flags, fd.pos, `fd:${ctx.pid}:${fd.fd}`);
  },
  open(ctx, entry) {
    const reg = entry.reg;
    if (!reg) throw new RestoreError(`File ${entry.id} has no regular-file data`);
    ctx.agent.reset();
    const fd = ctx.agent.raw(NR.open, ctx.agent.string(reg.name), reg.flags & ~OPEN_ONLY, 0);
    if (fd < 0n) {
      throw new RestoreError(`Cannot reopen ${reg.name} (file ${entry.id} of files.img): ${errnoText(fd)}`);
    }
    if (reg.pos !== 0n) ctx.agent.call(`lseek(${reg.name})`, NR.lseek, fd, reg.pos, 0);
    return Number(fd);
  },
};

function errnoText(r: bigint): string {
  return ({
    2: "no such file",
    13: "permission denied",
    20: "not a directory",
    21: "is a directory",
  } as Record<number, string>)[
    Number(-r)
  ] ?? `errno ${-r}`;
}

registerFdKind(regFileKind);
