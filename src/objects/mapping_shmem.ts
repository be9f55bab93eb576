/**
 * Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, or a shared mapping of /dev/zero): one shmem
 * object for every task and area that maps it, named in the image by its inode (vma shmid).
 *
 * Its pages go once into pagemap-shmem-SHMID.img, with offsets in the object as addresses: the
 * object is read through /proc/PID/map_files, which shows every page it holds whichever view
 * touched it. On restore the first task that maps it creates it, as large as the farthest any
 * area reaches into it, and fills it; the others map that same object through
 * /proc/PID/map_files of the first.
 */
import { create } from "@bufbuild/protobuf";
import type { vma_entry } from "../images/gen/vma_pb.ts";
import {
  type pagemap_entry,
  pagemap_entrySchema,
  type pagemap_head,
  pagemap_headSchema,
} from "../images/gen/pagemap_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import { createImageFile } from "../images/file.ts";
import { closeFd, dataRanges, OPEN, openFd, preadFull, pwriteFull } from "../../ffi/fd.ts";
import { MAP, MREMAP, NR, O, PROT } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import {
  type MappingBacking,
  type MappingRestoreContext,
  type ObjectPages,
  registerMappingBacking,
} from "./mappings.ts";
import { mapFilesPath, PAGE_SIZE, PE, VMA } from "./memory.ts";

const keyOf = (e: vma_entry) => `shmem:${e.shmid}`;

/** Reads the object behind `e` into pages-ID.img and pagemap-shmem-SHMID.img; returns the page count. */
function dumpObject(dir: ImageDir, pid: number, e: vma_entry, pagesId: number): ObjectPages {
  const source = mapFilesPath(pid, e);
  const fd = openFd(source, OPEN.RDONLY | OPEN.CLOEXEC);
  const path = dir.pathFor(KINDS.PAGES, pagesId);
  dir.noteWritten(path);
  const out = createImageFile(path);
  const entries = [];
  let pages = 0;
  let size = 0;
  try {
    const chunk = new Uint8Array(4 * 1024 * 1024);
    size = Deno.statSync(source).size;
    // SEEK_DATA/SEEK_HOLE skip what was never written.
    for (const [start, end] of dataRanges(fd, size)) {
      for (let at = start; at < end; at += chunk.length) {
        const part = chunk.subarray(0, Math.min(chunk.length, end - at));
        preadFull(fd, part, at, source);
        for (let off = 0; off < part.length;) off += out.writeSync(part.subarray(off));
      }
      const n = (end - start) / PAGE_SIZE;
      entries.push(
        create(pagemap_entrySchema, {
          vaddr: BigInt(start),
          compatNrPages: n,
          nrPages: BigInt(n),
          flags: PE.PRESENT,
        }),
      );
      pages += n;
    }
  } finally {
    out.close();
    closeFd(fd);
  }
  dir.write(KINDS.SHMEM_PAGEMAP, e.shmid, [create(pagemap_headSchema, { pagesId }), ...entries]);
  return { scanned: Math.ceil(size / PAGE_SIZE), written: pages, runs: entries.length };
}

const extentsByCheckpoint = new WeakMap<readonly vma_entry[], Map<bigint, bigint>>();

/** The size the restore must give an object: up to the farthest any area of any task reaches into it. */
function objectSize(allVmas: readonly vma_entry[], shmid: bigint): bigint {
  let extents = extentsByCheckpoint.get(allVmas);
  if (!extents) {
    extents = new Map();
    for (const e of allVmas) {
      if ((e.status & (VMA.ANON_SHARED | VMA.SYSVIPC)) !== VMA.ANON_SHARED) continue;
      const reach = e.pgoff + (e.end - e.start);
      if (reach > (extents.get(e.shmid) ?? 0n)) extents.set(e.shmid, reach);
    }
    extentsByCheckpoint.set(allVmas, extents);
  }
  return extents.get(shmid) ?? 0n;
}

/**
 * Creates the object for its first area. An area mapping it from offset 0 is the object itself;
 * one that starts further in (its head was unmapped, or it is a second view) gets an object as
 * large as its offset plus its length, of which the tail is moved into place and the head
 * dropped: the object keeps its size, so the other areas can map any part of it.
 */
function createObject(ctx: MappingRestoreContext, e: vma_entry, size: bigint): bigint {
  const len = e.end - e.start;
  const want = size > e.pgoff + len ? size : e.pgoff + len;
  if (e.pgoff === 0n && want === len) return -1n; // plain MAP_SHARED|MAP_ANONYMOUS at its place
  const agent = ctx.agent;
  const flags = MAP.SHARED | MAP.ANONYMOUS | (e.flags & MAP.NORESERVE);
  const whole = agent.call("mmap(shared object)", NR.mmap, 0, want, PROT.READ | PROT.WRITE, flags, -1, 0);
  agent.call(
    "mremap(shared object)",
    NR.mremap,
    whole + e.pgoff,
    len,
    len,
    MREMAP.MAYMOVE | MREMAP.FIXED,
    e.start,
  );
  if (e.pgoff > 0n) agent.call("munmap(shared object head)", NR.munmap, whole, e.pgoff);
  const tail = e.pgoff + len;
  if (want > tail) agent.call("munmap(shared object tail)", NR.munmap, whole + tail, want - tail);
  // The area is in place already: mapping it again from the object keeps its protections right.
  return openObject(ctx, mapFilesPath(agent.pid, e), e);
}

function openObject(ctx: MappingRestoreContext, path: string, e: vma_entry): bigint {
  const agent = ctx.agent;
  agent.reset();
  const flags = (e.prot & PROT.WRITE ? O.RDWR : O.RDONLY) | O.CLOEXEC;
  const fd = agent.attempt(`open(${path})`, NR.open, agent.string(path), flags, 0);
  if (isSyscallError(fd)) {
    throw new RestoreError(`Cannot open ${path} (shared memory ${e.shmid}): ${fd.message}`, 0, { cause: fd });
  }
  return fd;
}

/**
 * Fills the objects this task created from pagemap-shmem-SHMID.img, writing straight into the
 * object through /proc/PID/map_files (offsets in the image are offsets in the object).
 */
function fillObjects(ctx: MappingRestoreContext): void {
  const pid = ctx.agent.pid;
  for (const [key, obj] of ctx.objects) {
    if (!key.startsWith("shmem:") || obj.filled || !obj.path.startsWith(`/proc/${pid}/`)) continue;
    obj.filled = true;
    const shmid = obj.vma.shmid;
    if (!ctx.dir.has(KINDS.SHMEM_PAGEMAP, shmid)) continue;
    const [head, ...entries] = ctx.dir.read<pagemap_head | pagemap_entry>(KINDS.SHMEM_PAGEMAP, shmid);
    if (!head || !("pagesId" in head)) throw new RestoreError(`pagemap-shmem-${shmid}.img has no header`);
    copyIntoObject(obj.path, ctx.dir.pathFor(KINDS.PAGES, head.pagesId), entries as pagemap_entry[]);
  }
}

function copyIntoObject(objectPath: string, pagesPath: string, entries: readonly pagemap_entry[]): void {
  const dst = openFd(objectPath, OPEN.RDWR | OPEN.CLOEXEC);
  const src = openFd(pagesPath, OPEN.RDONLY | OPEN.CLOEXEC);
  const chunk = new Uint8Array(4 * 1024 * 1024);
  try {
    let from = 0;
    for (const e of entries) {
      const len = Number(e.nrPages ?? BigInt(e.compatNrPages)) * PAGE_SIZE;
      for (let done = 0; done < len; done += chunk.length) {
        const part = chunk.subarray(0, Math.min(chunk.length, len - done));
        preadFull(src, part, from + done, pagesPath);
        pwriteFull(dst, part, Number(e.vaddr) + done, objectPath);
      }
      from += len;
    }
  } finally {
    closeFd(src);
    closeFd(dst);
  }
}

export const sharedMemoryMapping: MappingBacking = {
  name: "shared memory",
  detect(m) {
    return m.inode !== 0 && m.perms[3] === "s" && m.path.startsWith("/dev/zero");
  },
  dump(_ctx, m, entry) {
    entry.status |= VMA.ANON_SHARED;
    entry.flags |= MAP.ANONYMOUS;
    entry.pgoff = m.offset;
    entry.shmid = BigInt(m.inode);
  },
  ownPages() {
    return "none";
  },
  dumpObject(ctx, pid, v) {
    const key = keyOf(v.entry);
    if (ctx.done.has(key)) return undefined;
    ctx.done.add(key);
    return dumpObject(ctx.dir, pid, v.entry, ctx.nextPagesId());
  },
  owns(entry) {
    // An attached SysV segment is anonymous shared memory too, in CRIU's images: sysvshm's.
    return (entry.status & (VMA.ANON_SHARED | VMA.SYSVIPC)) === VMA.ANON_SHARED;
  },
  sameObject(a, b) {
    return a.shmid === b.shmid;
  },
  open(ctx, e) {
    const first = ctx.objects.get(keyOf(e));
    if (first) return openObject(ctx, first.path, e);
    ctx.objects.set(keyOf(e), { path: mapFilesPath(ctx.agent.pid, e), vma: e, filled: false });
    return createObject(ctx, e, objectSize(ctx.allVmas, e.shmid));
  },
  finish(ctx) {
    fillObjects(ctx);
  },
};

registerMappingBacking(sharedMemoryMapping);
