/**
 * Areas that map a memfd, shared or private, as CRIU records them: the vma is a file mapping
 * (VMA_FILE_SHARED or VMA_FILE_PRIVATE) marked VMA_AREA_MEMFD, whose shmid names a memfd entry of
 * files.img (flags: the access mode of the area's open file), whose inode in memfd.img holds the
 * name, size, seals and contents (memfd.ts, shared with the fds of the same memfd). A shared
 * area's pages are the memfd's; a private one keeps its own written pages in the task's image.
 *
 * At restore the first area of a memfd creates it in its task (before any fd: memory comes
 * first), the others and the fds open it again through that area's /proc/PID/map_files link, so
 * areas and fds of every task share one memfd as before. CRIU's memfds of shared anonymous
 * memory (named "/dev/zero") are plain shared memory instead (see images.ts).
 */
import { isFieldSet } from "@bufbuild/protobuf";
import { type vma_entry, vma_entrySchema } from "../images/gen/vma_pb.ts";
import { fd_types } from "../images/gen/fdinfo_pb.ts";
import { O } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import { refuse } from "./refusal.ts";
import { type MappingBacking, registerMappingBacking } from "./mappings.ts";
import { VMA } from "./memory.ts";
import { fdflagsOf } from "./mapping_access.ts";
import { addMappedMemfd, isMemfdArea, memfdInodeOf, openMappedMemfd } from "./memfd.ts";

/** How to open the memfd for an area again: the recorded access mode, or what the area needs. */
function openFlagsFor(e: vma_entry): number {
  if (isFieldSet(e, vma_entrySchema.field.fdflags)) return e.fdflags! & O.ACCMODE;
  return (e.status & VMA.FILE_SHARED) !== 0 && (e.prot & 2) !== 0 ? O.RDWR : O.RDONLY;
}

export const memfdMapping: MappingBacking = {
  name: "memfd",
  detect: isMemfdArea,
  dump(ctx, m, entry) {
    const where = `the mapping of ${m.path} at 0x${m.start.toString(16)}`;
    if (m.vmFlags.includes("ht")) refuse(ctx.pid, where, "a memfd backed by huge pages is not supported yet");
    const shared = m.perms[3] === "s";
    const fdflags = fdflagsOf(ctx.pid, m);
    entry.status |= VMA.MEMFD | (shared ? VMA.FILE_SHARED : VMA.FILE_PRIVATE);
    entry.pgoff = m.offset;
    entry.fdflags = fdflags;
    entry.shmid = BigInt(addMappedMemfd(ctx.table, ctx.pid, m, fdflags));
  },
  ownPages(entry) {
    return entry.status & VMA.FILE_SHARED ? "none" : "present";
  },
  owns(entry) {
    return (entry.status & VMA.MEMFD) !== 0;
  },
  check(pid, entry, files) {
    const id = Number(entry.shmid);
    const file = files.has(id) ? files.get(id) : undefined;
    if (file?.type !== fd_types.MEMFD || !file.memfd) {
      throw new RestoreError(
        `Refusing the images: the memfd mapping at 0x${
          entry.start.toString(16)
        } of mm-${pid}.img names file ${id}, ` +
          `which is no memfd of files.img`,
      );
    }
  },
  sameObject(a, b, files) {
    return files.get(Number(a.shmid)).memfd?.inodeId === files.get(Number(b.shmid)).memfd?.inodeId;
  },
  open(ctx, e) {
    const inode = memfdInodeOf(ctx.files, Number(e.shmid));
    return openMappedMemfd(ctx.agent, ctx.files, ctx.dir, inode, e, openFlagsFor(e));
  },
};

registerMappingBacking(memfdMapping);
