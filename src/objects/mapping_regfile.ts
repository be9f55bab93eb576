/**
 * Regular files mapped into memory, private or shared: recorded as a regular-file entry of
 * files.img (vma shmid names it), reopened by path on restore with the rights the task's own open
 * file had (vma fdflags), so that an mprotect the task makes later is allowed as before. A mapped
 * file whose name is gone is carried as the fds of such files are (remap.ts: a ghost file in the
 * images, or a link remap), and reopened through it. The entry records the mount the file is on
 * (mnt_id), as for an open file, for a task in a mount namespace the dump saves: CRIU opens it in
 * that mount's namespace (the task's own view, where criu-ts opens it).
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
import { addMappedFile } from "./regfile.ts";
import { addRemovedMapping, pathToOpen } from "./remap.ts";
import {
  type MappingBacking,
  type MappingDumpContext,
  type MappingRestoreContext,
  registerMappingBacking,
} from "./mappings.ts";
import { takeFromCriu } from "./files.ts";
import { closeFd, OPEN, openFd } from "../../ffi/fd.ts";
import { osReason } from "../../ffi/errors.ts";
import { DumpError } from "../errors.ts";
import { PluginError } from "../plugins/plugins.ts";
import { ENOTSUP, type VmaMapUpdate } from "../plugins/api.ts";
import { mapFilesPath, VMA } from "./memory.ts";
import { fdflagsOf } from "./mapping_access.ts";

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
      // A device or other special file: reopening it by path would not give the same memory,
      // unless a plugin answers for it, as CRIU asks one (HANDLE_DEVICE_VMA).
      if (!takenByDevicePlugin(ctx, m)) {
        refuse(
          ctx.pid,
          `the mapping of ${m.path} at 0x${m.start.toString(16)}`,
          "only regular files can back a mapping (and no plugin handles this device)",
        );
      }
      entry.status |= VMA.EXT_PLUGIN;
    }
    const shared = m.perms[3] === "s";
    const fdflags = fdflagsOf(ctx.pid, m);
    entry.status |= shared ? VMA.FILE_SHARED : VMA.FILE_PRIVATE;
    entry.pgoff = m.offset;
    entry.fdflags = fdflags;
    const gone = m.path.endsWith(" (deleted)");
    if (gone && !ctx.files) refuse(ctx.pid, `the mapping of ${m.path}`, "its file was deleted");
    entry.shmid = BigInt(
      gone
        ? addRemovedMapping(ctx.files!, ctx.pid, m, fdflags)
        : addMappedFile(ctx.table, ctx.pid, mapFilesPath(ctx.pid, m), m.path, fdflags),
    );
  },
  ownPages(entry) {
    return entry.status & (VMA.FILE_SHARED | VMA.EXT_PLUGIN) ? "none" : "present";
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
    const name = file.reg ? pathToOpen(ctx.files, file.id, ctx.agent.pid) : undefined; // a ghost's or link's path
    const at = `0x${e.start.toString(16)}`;
    if (!name) {
      throw new RestoreError(`Mapping at ${at} refers to file ${file.id}, which is not a regular file`);
    }
    const agent = ctx.agent;
    if (e.status & VMA.EXT_PLUGIN) {
      const fromPlugin = updateDeviceMapping(ctx, e, name);
      if (fromPlugin !== null) return fromPlugin;
    }
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

/**
 * Asks the plugins about a device mapping (HANDLE_DEVICE_VMA, with criu's fd on the mapped file
 * and its stat), as CRIU does for any mapping of a file that is neither regular nor /dev/zero.
 */
function takenByDevicePlugin(ctx: MappingDumpContext, m: MapsEntry): boolean {
  const plugins = ctx.files?.plugins;
  if (!plugins?.has("HANDLE_DEVICE_VMA")) return false;
  let fd: number;
  try {
    fd = openFd(mapFilesPath(ctx.pid, m), OPEN.RDONLY | OPEN.CLOEXEC);
  } catch (e) {
    throw new DumpError(`Cannot open the mapping of ${m.path} at 0x${m.start.toString(16)}: ${osReason(e)}`);
  }
  try {
    const answer = plugins.run("HANDLE_DEVICE_VMA", (p) => p.handleDeviceVma(fd));
    if (answer === -ENOTSUP) return false;
    if (answer < 0) {
      throw new PluginError(
        `A plugin failed to handle the device mapping of ${m.path} at 0x${m.start.toString(16)}: ${answer}`,
        -answer,
      );
    }
    ctx.files!.log.info(
      `Found device file mapping of ${m.path} at 0x${m.start.toString(16)}, plugin is available`,
    );
    return true;
  } finally {
    closeFd(fd);
  }
}

/**
 * UPDATE_VMA_MAP before a plugin's device area is mapped, as CRIU asks it: an answer of 1 moves
 * the area's page offset and may give an fd of criu's own to map from (taken into the task).
 * Returns that fd in the task, or null to open the file by its path.
 */
function updateDeviceMapping(ctx: MappingRestoreContext, e: vma_entry, path: string): bigint | null {
  const plugins = ctx.plugins;
  if (!plugins?.has("UPDATE_VMA_MAP")) return null;
  let update: VmaMapUpdate = { ret: -ENOTSUP, newPgoff: e.pgoff, pluginFd: -1 };
  plugins.run("UPDATE_VMA_MAP", (p) => (update = p.updateVmaMap(path, e.start, e.pgoff)).ret);
  if (update.ret !== 1) return null;
  ctx.log.info(
    `New mmap 0x${e.start.toString(16)}:0x${e.pgoff.toString(16)}->0x${
      update.newPgoff.toString(16)
    } fd ${update.pluginFd}`,
  );
  e.pgoff = update.newPgoff;
  if (update.pluginFd < 0) return null;
  try {
    return BigInt(takeFromCriu(ctx, update.pluginFd));
  } finally {
    closeFd(update.pluginFd);
  }
}

registerMappingBacking(regularFileMapping);
