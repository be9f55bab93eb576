/**
 * Regular files mapped into memory, private or shared: recorded as a regular-file entry of
 * files.img (vma shmid names it), reopened by path on restore with the rights the task's own open
 * file had (vma fdflags), so that an mprotect the task makes later is allowed as before. A mapped
 * file whose name is gone is carried as the fds of such files are (remap.ts: a ghost file in the
 * images, or a link remap), and reopened through it.
 */
import { refuse } from "./refusal.ts";
import { isFieldSet } from "@bufbuild/protobuf";
import { type vma_entry, vma_entrySchema } from "../images/gen/vma_pb.ts";
import { reg_file_entrySchema } from "../images/gen/regfile_pb.ts";
import type { MapsEntry } from "../../ffi/proc.ts";
import { NR, O, PROT } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import type { FileTable } from "./files.ts";
import { addRegFile } from "./regfile.ts";
import { addRemovedMapping, pathToOpen } from "./remap.ts";
import { type MappingBacking, registerMappingBacking } from "./mappings.ts";
import { mapFilesPath, VMA } from "./memory.ts";

/** The mode bits of a /proc/PID/map_files link: the read and write rights of its open file. */
const LINK_READ = 0o400;
const LINK_WRITE = 0o200;

/**
 * The access mode of the file the task mapped, as CRIU records it in fdflags: the kernel gives a
 * map_files link the rights of the open file behind the area. When the link cannot be read, the
 * least the area needs.
 */
function fdflagsOf(pid: number, m: MapsEntry): number {
  let mode: number | null = null;
  try {
    mode = Deno.lstatSync(mapFilesPath(pid, m)).mode;
  } catch {
    // no map_files (an old kernel, or no rights): guess as CRIU does
  }
  if (mode === null) return m.perms[3] === "s" && m.perms[1] === "w" ? O.RDWR : O.RDONLY;
  const r = (mode & LINK_READ) !== 0;
  const w = (mode & LINK_WRITE) !== 0;
  return r && w ? O.RDWR : w ? O.WRONLY : O.RDONLY;
}

function isRegularFile(pid: number, m: MapsEntry): boolean {
  try {
    return Deno.statSync(mapFilesPath(pid, m)).isFile;
  } catch {
    return false;
  }
}

/**
 * A file that the tree maps must still be the file the dump saw: one whose size changed (a rebuilt
 * program, an upgraded library) would put other code at the recorded addresses, or end before the
 * mapping does. CRIU refuses it as well. A file that is gone is reported when the restore opens it.
 * Each file is looked at once.
 */
function checkMappedFile(pid: number, v: vma_entry, files: FileTable, checked: Set<number>): void {
  const id = Number(v.shmid);
  const at = `the mapping at 0x${v.start.toString(16)} of mm-${pid}.img`;
  if (!files.has(id)) {
    throw new RestoreError(`Refusing the images: files.img has no file ${id}, which ${at} maps`);
  }
  const reg = files.get(id).reg;
  if (!reg) {
    throw new RestoreError(
      `Refusing the images: file ${id} of files.img, which ${at} maps, is not a regular file`,
    );
  }
  if (checked.has(id) || !isFieldSet(reg, reg_file_entrySchema.field.size)) return;
  checked.add(id);
  let size: number;
  try {
    size = Deno.statSync(reg.name).size;
  } catch {
    return;
  }
  if (BigInt(size) !== reg.size) {
    throw new RestoreError(
      `${reg.name}, mapped by process ${pid} at 0x${
        v.start.toString(16)
      }, changed since the dump: it holds ${size} bytes, the dump saw ${reg.size} (files.img)`,
    );
  }
}

/** How to open the file for an area: the recorded access mode, or what the area needs at least. */
function openFlagsFor(e: vma_entry): number {
  if (isFieldSet(e, vma_entrySchema.field.fdflags)) return e.fdflags! & O.ACCMODE;
  return (e.status & VMA.FILE_SHARED) !== 0 && (e.prot & PROT.WRITE) !== 0 ? O.RDWR : O.RDONLY;
}

export const regularFileMapping: MappingBacking = {
  name: "regular file",
  detect(m) {
    return m.inode !== 0 && m.path.startsWith("/");
  },
  dump(ctx, m, entry) {
    if (!isRegularFile(ctx.pid, m)) {
      // A device or other special file: reopening it by path would not give the same memory.
      refuse(
        ctx.pid,
        `the mapping of ${m.path} at 0x${m.start.toString(16)}`,
        "only regular files can back a mapping",
      );
    }
    const shared = m.perms[3] === "s";
    const fdflags = fdflagsOf(ctx.pid, m);
    entry.status |= shared ? VMA.FILE_SHARED : VMA.FILE_PRIVATE;
    entry.pgoff = m.offset;
    entry.fdflags = fdflags;
    const gone = m.path.endsWith(" (deleted)");
    if (gone && !ctx.files) refuse(ctx.pid, `the mapping of ${m.path}`, "its file was deleted");
    entry.shmid = BigInt(
      gone ? addRemovedMapping(ctx.files!, ctx.pid, m, fdflags) : addRegFile(ctx.table, m.path, fdflags),
    );
  },
  ownPages(entry) {
    return entry.status & VMA.FILE_SHARED ? "none" : "present";
  },
  owns(entry) {
    return (entry.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) !== 0;
  },
  check: checkMappedFile,
  sameObject(a, b, files) {
    return files.get(Number(a.shmid)).reg?.name === files.get(Number(b.shmid)).reg?.name;
  },
  open(ctx, e) {
    const file = ctx.files.get(Number(e.shmid));
    const name = file.reg ? pathToOpen(ctx.files, file.id) : undefined; // a ghost's or link's path
    const at = `0x${e.start.toString(16)}`;
    if (!name) {
      throw new RestoreError(`Mapping at ${at} refers to file ${file.id}, which is not a regular file`);
    }
    const agent = ctx.agent;
    agent.reset();
    const fd = agent.attempt(`open(${name})`, NR.open, agent.string(name), openFlagsFor(e) | O.CLOEXEC, 0);
    if (isSyscallError(fd)) {
      throw new RestoreError(
        `Cannot open ${
          JSON.stringify(name)
        } (file ${file.id} of files.img) to map it at ${at}: ${fd.message}`,
        0,
        { cause: fd },
      );
    }
    return fd;
  },
};

registerMappingBacking(regularFileMapping);
