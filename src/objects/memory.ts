/**
 * Memory: a task's mappings (mm-PID.img), which of their pages hold data (pagemap-PID.img) and
 * those pages (pages-N.img, raw).
 *
 * What backs an area (a file, shared memory, an AIO ring, hugetlb memory) is its backing's business
 * (mappings.ts and the mapping_*.ts modules); this module does what is common: classifying areas,
 * scanning and writing pages, mapping areas back and filling them, the kernel's own areas (vDSO,
 * vvar, vsyscall), madvise advice and MADV_GUARD_INSTALL guards.
 *
 * Which pages are stored: every present or swapped page of private anonymous memory; of a
 * private file mapping only pages that were written (anonymous copies: the rest is in the file);
 * what a backing says for the others (shared memory once per object, nothing of shared files).
 *
 * The pages move from the target into the image without passing through the JS heap: the target
 * itself write()s its pages to the image file (a remote syscall; the kernel copies once). Areas it
 * cannot read (PROT_NONE with data in it) are copied through /proc/PID/mem instead.
 */
import { refuse } from "./refusal.ts";
import { create } from "@bufbuild/protobuf";
import { type vma_entry, vma_entrySchema } from "../images/gen/vma_pb.ts";
import { type MapsEntry } from "../../ffi/proc.ts";
import { IOV_MAX, MADV, MAP, MREMAP, NR, O, PROT } from "../../ffi/syscalls.ts";
import { ProcMem } from "../../ffi/memory.ts";
import { PAGE_IS_GUARD, scanCategory } from "../../ffi/pagemap_scan.ts";
import { createImageFile } from "../images/file.ts";
import { RestoreError } from "../errors.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { closeFd, OPEN, openFd } from "../../ffi/fd.ts";
import { takeFromCriu } from "./files.ts";
import type { Agent, BatchCall } from "../agent.ts";
import {
  backingOf,
  backingOfArea,
  type DumpedVma,
  mappingBackings,
  type MappingDumpContext,
  type MappingRestoreContext,
  type OwnPages,
} from "./mappings.ts";

export const PAGE_SIZE = 4096;

/** vma_entry.status bits (CRIU's VMA_AREA_* / VMA_* values). */
export const VMA = {
  REGULAR: 1 << 0,
  STACK: 1 << 1,
  VSYSCALL: 1 << 2,
  VDSO: 1 << 3,
  HEAP: 1 << 5,
  FILE_PRIVATE: 1 << 6,
  FILE_SHARED: 1 << 7,
  ANON_SHARED: 1 << 8,
  ANON_PRIVATE: 1 << 9,
  SYSVIPC: 1 << 10,
  VVAR: 1 << 12,
  AIORING: 1 << 13,
  MEMFD: 1 << 14,
  /**
   * Not an area: a range under MADV_GUARD_INSTALL guards, recorded as CRIU does, as an entry with
   * only this bit, after every real area (it lies inside one of them).
   */
  GUARD: 1 << 16,
  /** A device mapping a plugin answers for (HANDLE_DEVICE_VMA); its memory is the plugin's. */
  EXT_PLUGIN: 1 << 27,
} as const;

/** pagemap_entry.flags bits. */
export const PE = { PARENT: 1 << 0, LAZY: 1 << 1, PRESENT: 1 << 2 } as const;

/**
 * madvise advice that VmFlags reveal and a restore must apply again, as CRIU reads it into
 * vma_entry.madv (bit N is advice N).
 */
const MADV_BY_VMFLAG: Record<string, number> = {
  rr: 1, // MADV_RANDOM
  sr: 2, // MADV_SEQUENTIAL
  dc: 10, // VM_DONTCOPY ← MADV_DONTFORK
  mg: 12, // MADV_MERGEABLE
  hg: 14, // MADV_HUGEPAGE
  nh: 15, // MADV_NOHUGEPAGE
  dd: 16, // MADV_DONTDUMP
  wf: 18, // MADV_WIPEONFORK
};

/** A run of pages of the pages image: where it goes, how many pages, where it starts in the file. */
export interface FileRun {
  vaddr: bigint;
  pages: number;
  offset: number;
}

export type { DumpedVma } from "./mappings.ts";

function protOf(perms: string): number {
  return (perms[0] === "r" ? PROT.READ : 0) | (perms[1] === "w" ? PROT.WRITE : 0) |
    (perms[2] === "x" ? PROT.EXEC : 0);
}

function madvOf(vmFlags: string[]): bigint {
  let bits = 0n;
  for (const f of vmFlags) if (f in MADV_BY_VMFLAG) bits |= 1n << BigInt(MADV_BY_VMFLAG[f]!);
  return bits;
}

/** mmap flags that VmFlags reveal, on top of MAP_SHARED or MAP_PRIVATE from the permissions. */
function mmapFlagsOf(shared: boolean, vmFlags: readonly string[]): number {
  let flags: number = shared ? MAP.SHARED : MAP.PRIVATE;
  if (vmFlags.includes("gd")) flags |= MAP.GROWSDOWN;
  if (vmFlags.includes("nr")) flags |= MAP.NORESERVE;
  // A droppable area is a mapping type of its own, instead of MAP_PRIVATE (CRIU records it so).
  if (vmFlags.includes("dp")) flags = (flags & ~MAP.PRIVATE) | MAP.DROPPABLE;
  return flags;
}

/** The kernel's own areas, which no file or object backs; null for any other area. */
function kernelArea(pid: number, m: MapsEntry, entry: vma_entry): vma_entry | null {
  switch (m.path) {
    case "[vsyscall]":
      // Recorded as CRIU does, without pages; the kernel maps it in every process.
      return create(vma_entrySchema, {
        start: m.start,
        end: m.end,
        pgoff: 0n,
        shmid: 0n,
        prot: protOf(m.perms),
        flags: MAP.PRIVATE | MAP.ANONYMOUS,
        status: VMA.VSYSCALL | VMA.ANON_PRIVATE,
        fd: -1n,
      });
    case "[uprobes]":
      return refuse(pid, "the [uprobes] area", "uprobes are not supported");
    case "[vdso]":
      entry.status |= VMA.VDSO | VMA.ANON_PRIVATE;
      entry.flags |= MAP.ANONYMOUS;
      return entry;
    case "[vvar]":
    case "[vvar_vclock]":
      entry.status |= VMA.VVAR | VMA.ANON_PRIVATE;
      entry.flags |= MAP.ANONYMOUS;
      return entry;
  }
  return null;
}

/**
 * Turns one smaps entry into a vma_entry: the kernel's special areas and plain anonymous memory
 * here, anything backed by a file or object by its registered backing (mappings.ts), which also
 * adds its file to the table.
 */
export function classify(ctx: MappingDumpContext, m: MapsEntry): vma_entry {
  const shared = m.perms[3] === "s";
  const entry = create(vma_entrySchema, {
    start: m.start,
    end: m.end,
    pgoff: 0n,
    shmid: 0n,
    prot: protOf(m.perms),
    flags: mmapFlagsOf(shared, m.vmFlags),
    status: VMA.REGULAR,
    fd: -1n,
    madv: madvOf(m.vmFlags),
  });
  const special = kernelArea(ctx.pid, m, entry);
  if (special) return special;
  const backing = backingOfArea(ctx.pid, m);
  if (backing) {
    backing.dump(ctx, m, entry);
    return entry;
  }
  entry.status |= shared ? VMA.ANON_SHARED : VMA.ANON_PRIVATE;
  entry.flags |= MAP.ANONYMOUS;
  if (m.path === "[heap]") entry.status |= VMA.HEAP;
  if (m.path === "[stack]") entry.status |= VMA.STACK;
  return entry;
}

/** The task's guard ranges (MADV_GUARD_INSTALL) as image entries, to go after its areas. */
export function guardEntries(pid: number): vma_entry[] {
  return (scanCategory(pid, PAGE_IS_GUARD) ?? []).map(([start, end]) =>
    create(vma_entrySchema, {
      start,
      end,
      pgoff: 0n,
      shmid: 0n,
      prot: 0,
      flags: 0,
      status: VMA.GUARD,
      fd: -1n,
    })
  );
}

const MADV_GUARD_INSTALL = MADV.GUARD_INSTALL;

/** Installs the guards again once the areas under them are mapped and filled. */
export function installGuards(agent: Agent, guards: readonly vma_entry[]): void {
  agent.reset();
  agent.batch(guards.map((g) => ({
    name: `madvise(0x${g.start.toString(16)}, MADV_GUARD_INSTALL)`,
    nr: NR.madvise,
    args: [g.start, g.end - g.start, MADV_GUARD_INSTALL],
  })));
}

// Flag bits of a pagemap entry, as bits of its high 32-bit word (63, 62, 61, 58): no BigInt per page.
const PM_PRESENT = 1 << 31;
const PM_SWAPPED = 1 << 30;
const PM_FILE = 1 << 29;
/** A page under an MADV_GUARD_INSTALL guard: also "swapped" (a marker), but holds nothing. */
const PM_GUARD_REGION = 1 << 26;
const PAGEMAP_CHUNK = 65536; // entries read at a time: 512 KiB

/** Which pages of an area the task's own pages image holds (see OwnPages). */
export function ownPagesOf(entry: vma_entry): OwnPages {
  if (entry.status & (VMA.VSYSCALL | VMA.VVAR)) return "none";
  // The vDSO is stored whole, as CRIU stores it: its restore reads the ELF in it.
  if (entry.status & VMA.VDSO) return "all";
  return backingOf(entry)?.ownPages(entry) ?? "present";
}

/**
 * The runs of pages a mapping needs stored in the task's own pagemap: present or swapped pages
 * that are the task's own (not the file's), or every page when its backing says so. Objects
 * stored once per dump (shared memory) are not stored with each task that maps them.
 */
export function scanPages(pagemap: Deno.FsFile, entry: vma_entry): [bigint, number][] {
  const which = ownPagesOf(entry);
  if (which === "none") return [];
  const total = Number((entry.end - entry.start) / BigInt(PAGE_SIZE));
  if (which === "all") return [[entry.start, total]];
  const runs: [bigint, number][] = [];
  const buf = new Uint8Array(Math.min(total, PAGEMAP_CHUNK) * 8);
  const words = new Uint32Array(buf.buffer);
  let runStart = -1;
  for (let base = 0; base < total; base += PAGEMAP_CHUNK) {
    const count = Math.min(PAGEMAP_CHUNK, total - base);
    const firstPage = entry.start / BigInt(PAGE_SIZE) + BigInt(base);
    pagemap.seekSync(Number(firstPage * 8n), Deno.SeekMode.Start);
    readFull(pagemap, buf.subarray(0, count * 8));
    for (let i = 0; i < count; i++) {
      const high = words[2 * i + 1]!;
      const has = (high & (PM_PRESENT | PM_SWAPPED)) !== 0 && (high & (PM_FILE | PM_GUARD_REGION)) === 0;
      const page = base + i;
      if (has && runStart < 0) runStart = page;
      if (!has && runStart >= 0) {
        runs.push([entry.start + BigInt(runStart * PAGE_SIZE), page - runStart]);
        runStart = -1;
      }
    }
  }
  if (runStart >= 0) runs.push([entry.start + BigInt(runStart * PAGE_SIZE), total - runStart]);
  return runs;
}

function readFull(f: Deno.FsFile, buf: Uint8Array): void {
  let off = 0;
  while (off < buf.length) {
    const n = f.readSync(buf.subarray(off));
    if (n === null || n === 0) throw new Error("Short read from /proc/PID/pagemap");
    off += n;
  }
}

export interface PageWriteStats {
  pages: number;
  /** Pages the target wrote itself (remote write); the rest were copied by us. */
  remotePages: number;
}

const COPY_CHUNK = 4 * 1024 * 1024;

/**
 * Writes every run's pages into `pagesPath` in order. The target writes them itself when it can
 * open the file; unreadable areas, or a target that cannot open the file (other credentials or
 * mount namespace), are copied through /proc/PID/mem in bounded chunks.
 */
export function writePages(agent: Agent, vmas: DumpedVma[], pagesPath: string): PageWriteStats {
  const stats: PageWriteStats = { pages: 0, remotePages: 0 };
  const out = createImageFile(pagesPath);
  let remoteFd = -1n;
  agent.reset();
  const opened = agent.attempt(
    `open(${pagesPath})`,
    NR.open,
    agent.string(pagesPath),
    O.WRONLY | O.APPEND | O.CLOEXEC,
    0,
  );
  if (!isSyscallError(opened)) {
    // The target resolves the path in its own mount namespace: use its fd only if it is our file.
    if (sameFile(`/proc/${agent.pid}/fd/${opened}`, out)) remoteFd = opened;
    else agent.attempt("close(pages image)", NR.close, opened);
  }
  let procMem: ProcMem | null = null;
  try {
    // Runs the task can write itself go out in writev batches; the others are copied by us, in
    // between, so the file keeps pagemap order.
    let batch: Span[] = [];
    const flush = () => {
      if (batch.length) remoteVectorIo(agent, NR.writev, remoteFd, batch, null, "writev(pages)");
      batch = [];
    };
    for (const v of vmas) {
      const readable = (v.entry.prot & PROT.READ) !== 0;
      for (const [addr, pages] of v.runs) {
        const len = pages * PAGE_SIZE;
        if (readable && remoteFd >= 0n) {
          batch.push({ addr, len });
          stats.remotePages += pages;
        } else {
          flush();
          procMem ??= new ProcMem(agent.pid);
          copyThrough(procMem, out, addr, len);
        }
        stats.pages += pages;
      }
    }
    flush();
  } finally {
    if (remoteFd >= 0n) agent.attempt("close(pages image)", NR.close, remoteFd);
    procMem?.close();
    out.close();
  }
  return stats;
}

function sameFile(procLink: string, ours: Deno.FsFile): boolean {
  try {
    const a = Deno.statSync(procLink);
    const b = ours.statSync();
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false;
  }
}

/** A range of the task's memory. */
interface Span {
  addr: bigint;
  len: number;
}

/**
 * Moves the bytes of `spans` between the task's memory and `fd` with as few remote calls as
 * possible: readv/writev-style calls of up to IOV_MAX spans, resumed after a short transfer.
 * `offset` is the file position for preadv (null: the fd's own position, for writev).
 */
function remoteVectorIo(
  agent: Agent,
  nr: number,
  fd: bigint,
  spans: readonly Span[],
  offset: bigint | null,
  what: string,
): void {
  let i = 0;
  let skip = 0; // bytes of spans[i] already moved
  let pos = offset ?? 0n;
  while (i < spans.length) {
    const count = Math.min(IOV_MAX, spans.length - i);
    const iov = new BigUint64Array(count * 2);
    for (let k = 0; k < count; k++) {
      const s = spans[i + k]!;
      const from = k === 0 ? skip : 0;
      iov[2 * k] = s.addr + BigInt(from);
      iov[2 * k + 1] = BigInt(s.len - from);
    }
    agent.reset();
    const iovAddr = agent.alloc(iov.byteLength, new Uint8Array(iov.buffer));
    let moved = Number(
      offset === null
        ? agent.call(what, nr, fd, iovAddr, count)
        : agent.call(what, nr, fd, iovAddr, count, pos, 0),
    );
    if (moved <= 0) {
      throw new Error(`${what} moved nothing at 0x${(spans[i]!.addr + BigInt(skip)).toString(16)}`);
    }
    pos += BigInt(moved);
    while (moved > 0) {
      const left = spans[i]!.len - skip;
      if (moved >= left) {
        moved -= left;
        i++;
        skip = 0;
      } else {
        skip += moved;
        moved = 0;
      }
    }
  }
}

function copyThrough(mem: ProcMem, out: Deno.FsFile, addr: bigint, len: number): void {
  out.seekSync(0, Deno.SeekMode.End);
  for (let done = 0; done < len; done += COPY_CHUNK) {
    const n = Math.min(COPY_CHUNK, len - done);
    const data = mem.read(addr + BigInt(done), n);
    let off = 0;
    while (off < n) off += out.writeSync(data.subarray(off));
  }
}

// ---------------------------------------------------------------------------------------------
// Restore

/** A mapping of the puppet as the restore sees it (from /proc maps). */
export interface LiveArea {
  start: bigint;
  end: bigint;
  path: string;
}

function isSpecial(e: vma_entry): boolean {
  return (e.status & (VMA.VDSO | VMA.VVAR)) !== 0;
}

/**
 * Adjacent special areas of one kind, seen as one: the kernel now splits the vvar data into
 * [vvar] and [vvar_vclock], which CRIU records as a single VVAR area.
 */
interface SpecialBlock {
  vdso: boolean;
  start: bigint;
  end: bigint;
  /** The areas it is made of (one for an image's block). */
  parts: { start: bigint; end: bigint }[];
}

function specialBlocks(areas: { start: bigint; end: bigint; vdso: boolean }[]): SpecialBlock[] {
  const blocks: SpecialBlock[] = [];
  for (const a of [...areas].sort((x, y) => (x.start < y.start ? -1 : 1))) {
    const last = blocks.at(-1);
    if (last && last.vdso === a.vdso && last.end === a.start) {
      last.end = a.end;
      last.parts.push(a);
    } else {
      blocks.push({ vdso: a.vdso, start: a.start, end: a.end, parts: [a] });
    }
  }
  return blocks;
}

function layoutOf(blocks: readonly SpecialBlock[]): string {
  return blocks.map((b) => `${b.vdso ? "vdso" : "vvar"} ${b.end - b.start}`).join(", ");
}

/**
 * Moves the vDSO and vvar areas the kernel gave the puppet to where the dumped task had them.
 * They go through a parking area first so a move can never land on another special area. The
 * kernel's areas must match the image's in kind and size: another kernel needs a vDSO proxy.
 */
export function moveSpecialAreas(agent: Agent, live: LiveArea[], dumped: vma_entry[], parking: bigint): void {
  const want = specialBlocks(
    dumped.filter(isSpecial).map((e) => ({ start: e.start, end: e.end, vdso: (e.status & VMA.VDSO) !== 0 })),
  );
  const have = specialBlocks(
    live.filter((a) => a.path === "[vdso]" || a.path.startsWith("[vvar"))
      .map((a) => ({ start: a.start, end: a.end, vdso: a.path === "[vdso]" })),
  );
  if (layoutOf(want) !== layoutOf(have)) {
    throw new RestoreError(
      `The vDSO layout differs from the dumped one (this kernel: ${layoutOf(have) || "none"}; image: ${
        layoutOf(want) || "none"
      }, in bytes): restoring on another kernel needs a vDSO proxy, which is not supported yet`,
    );
  }
  if (have.every((b, i) => b.start === want[i]!.start)) return; // a forked child: already in place
  const moves = have.flatMap((b, i) =>
    b.parts.map((p) => ({ from: p.start, len: p.end - p.start, to: want[i]!.start + (p.start - b.start) }))
  );
  let park = parking;
  for (const m of moves) {
    agent.call("mremap(park vdso)", NR.mremap, m.from, m.len, m.len, MREMAP.MAYMOVE | MREMAP.FIXED, park);
    m.from = park;
    park += m.len;
  }
  for (const m of moves) {
    agent.call("mremap(vdso)", NR.mremap, m.from, m.len, m.len, MREMAP.MAYMOVE | MREMAP.FIXED, m.to);
  }
}

/**
 * The runs without their pages inside vDSO areas: CRIU stores those (it may need them for a vDSO
 * proxy), but the kernel's own vDSO, moved into place, is what the task gets.
 */
export function withoutSpecialPages(runs: readonly FileRun[], vmas: readonly vma_entry[]): FileRun[] {
  const specials = vmas.filter(isSpecial);
  let out = [...runs];
  for (const s of specials) out = out.flatMap((r) => cutOut(r, s.start, s.end));
  return out;
}

/** The parts of run `r` outside [start, end). */
function cutOut(r: FileRun, start: bigint, end: bigint): FileRun[] {
  const runEnd = r.vaddr + BigInt(r.pages * PAGE_SIZE);
  if (runEnd <= start || r.vaddr >= end) return [r];
  const parts: FileRun[] = [];
  if (r.vaddr < start) {
    parts.push({ vaddr: r.vaddr, pages: Number(start - r.vaddr) / PAGE_SIZE, offset: r.offset });
  }
  if (runEnd > end) {
    const skipped = Number(end - r.vaddr);
    parts.push({ vaddr: end, pages: Number(runEnd - end) / PAGE_SIZE, offset: r.offset + skipped });
  }
  return parts;
}

/** The bits of MAP_HUGETLB's page size (log2 of it, shifted): kept as recorded. */
const MAP_HUGE_SIZE_MASK = 0x3f << 26;
/** mmap flags an image entry may carry that the restore passes on as they are. */
const KEPT_FLAGS = MAP.SHARED | MAP.PRIVATE | MAP.DROPPABLE | MAP.GROWSDOWN | MAP.NORESERVE | MAP.HUGETLB |
  MAP_HUGE_SIZE_MASK;

function mmapCall(e: vma_entry, fd: bigint): BatchCall {
  const anonymous = fd < 0n;
  // Areas we fill get PROT_WRITE until their pages are in; an object mapped from an fd has its
  // pages already (a shared file, shared memory another area of it filled).
  const prot = anonymous || ownPagesOf(e) !== "none" ? e.prot | PROT.WRITE : e.prot;
  const flags = (e.flags & KEPT_FLAGS) | (anonymous ? MAP.ANONYMOUS : 0) | MAP.FIXED;
  return {
    name: `mmap(0x${e.start.toString(16)})`,
    nr: NR.mmap,
    args: [e.start, e.end - e.start, prot, flags, fd, anonymous ? 0n : e.pgoff],
  };
}

/**
 * Maps every dumped area (but the vDSO ones) at its address, writable so pages can be filled.
 * Plain anonymous areas (thread stacks, heaps: most of them) are queued and mapped many per
 * trap, with the next call the task makes; an area with a backing is mapped once the areas
 * before it are in place, from the fd its backing opens.
 */
export function mapAreas(ctx: MappingRestoreContext, vmas: readonly vma_entry[]): void {
  const agent = ctx.agent;
  for (const e of vmas) {
    if (isSpecial(e)) continue;
    const backing = backingOf(e);
    if (!backing) {
      const c = mmapCall(e, -1n);
      agent.later(c.name, c.nr, ...c.args);
      continue;
    }
    // The anonymous areas before it are mapped first, with the open of its backing: a shared
    // object may be opened through the map_files link of an area mapped just before.
    const fd = backing.open(ctx, e);
    try {
      const m = mmapCall(e, fd);
      agent.call(m.name, m.nr, ...m.args);
    } finally {
      if (fd >= 0n) agent.later("close", NR.close, fd);
    }
  }
  agent.settle(); // the pages are written from outside next
}

/** Lets every backing finish its areas once the task's pages are in (fill objects, rebuild rings). */
export function finishBackings(ctx: MappingRestoreContext, vmas: readonly vma_entry[]): void {
  for (const b of mappingBackings()) b.finish?.(ctx, vmas);
}

/**
 * The pages image, opened in the task: by its path, or relative to the images dir's fd. A task
 * already in a user namespace of its own may be denied the images dir (runc makes it with mode
 * 0600: criu's root searches it only as CAP_DAC_OVERRIDE, which the task has only over its own
 * namespace's ids): criu then opens the image and hands the task a copy.
 */
function openPagesImage(agent: Agent, pagesPath: string, imagesDirFd: number | undefined): bigint {
  agent.reset();
  if (imagesDirFd === undefined) {
    return agent.call("open(pages image)", NR.open, agent.string(pagesPath), O.RDONLY | O.CLOEXEC, 0);
  }
  const fd = agent.attempt(
    "openat(images dir, pages image)",
    NR.openat,
    imagesDirFd,
    agent.string(pagesPath.slice(pagesPath.lastIndexOf("/") + 1)),
    O.RDONLY | O.CLOEXEC,
    0,
  );
  if (!isSyscallError(fd, "EACCES")) {
    if (isSyscallError(fd)) throw fd;
    return fd;
  }
  const ours = openFd(pagesPath, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    return BigInt(takeFromCriu({ agent }, ours));
  } finally {
    closeFd(ours);
  }
}

/**
 * Reads pages into place: the puppet preadv()s them from the pages image itself, one call per
 * IOV_MAX runs that lie back to back in the file. `offset` is where each run starts in the file.
 * With `imagesDirFd` (an fd of the images dir every puppet holds) the image is opened relative to
 * it: a task whose root was already switched to a container's cannot reach it by its path.
 */
export function fillPages(
  agent: Agent,
  pagesPath: string,
  runs: readonly FileRun[],
  imagesDirFd?: number,
): number {
  if (runs.length === 0) return 0;
  const fd = openPagesImage(agent, pagesPath, imagesDirFd);
  try {
    let group: Span[] = [];
    let groupStart = 0;
    let next = -1;
    const flush = () => {
      if (group.length) {
        remoteVectorIo(agent, NR.preadv, fd, group, BigInt(groupStart), `preadv(${pagesPath})`);
      }
      group = [];
    };
    for (const r of runs) {
      const len = r.pages * PAGE_SIZE;
      if (r.offset !== next) {
        flush();
        groupStart = r.offset;
      }
      group.push({ addr: r.vaddr, len });
      next = r.offset + len;
    }
    flush();
  } finally {
    agent.attempt("close(pages image)", NR.close, fd); // best effort: what failed before matters more
  }
  return runs.reduce((n, r) => n + r.pages, 0);
}

/** Puts back the dumped protections (where mapAreas added PROT_WRITE) and madvise hints. */
export function finishAreas(agent: Agent, vmas: readonly vma_entry[]): void {
  const calls: BatchCall[] = [];
  for (const e of vmas) {
    if (isSpecial(e)) continue;
    const len = e.end - e.start;
    // Right for every read-only area, whether mapAreas added PROT_WRITE to it or not.
    if (!(e.prot & PROT.WRITE)) {
      calls.push({ name: "mprotect", nr: NR.mprotect, args: [e.start, len, e.prot] });
    }
    const madv = e.madv ?? 0n;
    for (let advice = 0; advice < 64; advice++) {
      if (madv & (1n << BigInt(advice))) {
        calls.push({ name: `madvise(${advice})`, nr: NR.madvise, args: [e.start, len, advice] });
      }
    }
  }
  agent.reset();
  agent.batch(calls);
}

/** Where a shared anonymous object restored in one task can be mapped from by the others. */
export function mapFilesPath(pid: number, e: { start: bigint; end: bigint }): string {
  return `/proc/${pid}/map_files/${e.start.toString(16)}-${e.end.toString(16)}`;
}
