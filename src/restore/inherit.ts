/**
 * Memory inherited over fork. A child is forked from its parent once the parent's memory is
 * restored, so it starts with the parent's areas, copy-on-write, as it did before the dump.
 * Areas the child has exactly as its parent does are kept: only pages whose content differs are
 * written (a write breaks the sharing of that page alone), and pages the child did not have are
 * dropped. Identical pages stay shared, as they were, instead of being restored once per process.
 * This is CRIU's approach, and needs nothing in the images beyond what they hold anyway.
 */
import type { vma_entry } from "../images/gen/vma_pb.ts";
import type { MapsEntry } from "../../ffi/proc.ts";
import { ProcMem } from "../../ffi/memory.ts";
import { NR } from "../../ffi/syscalls.ts";
import type { FileTable } from "../objects/files.ts";
import { type FileRun, ownPagesOf, PAGE_SIZE, VMA } from "../objects/memory.ts";
import { backingOf } from "../objects/mappings.ts";
import type { Agent } from "../agent.ts";
import { RestoreError } from "../errors.ts";

const MADV_DONTNEED = 4;
const COMPARE_CHUNK_PAGES = 256;

function sameArea(a: vma_entry, b: vma_entry, files: FileTable): boolean {
  if (a.start !== b.start || a.end !== b.end || a.prot !== b.prot || a.flags !== b.flags) return false;
  if (a.status !== b.status || a.pgoff !== b.pgoff || a.status & (VMA.VDSO | VMA.VVAR)) return false;
  return backingOf(a)?.sameObject(a, b, files) ?? true;
}

/** The child's areas it can keep from its parent: the same area in both, present in the child now. */
export function inheritedAreas(
  child: readonly vma_entry[],
  parent: readonly vma_entry[],
  live: readonly MapsEntry[],
  files: FileTable,
): Set<vma_entry> {
  const out = new Set<vma_entry>();
  for (const e of child) {
    const p = parent.find((v) => v.start === e.start);
    if (p && sameArea(e, p, files) && live.some((l) => l.start === e.start && l.end === e.end)) out.add(e);
  }
  return out;
}

function within(areas: Iterable<vma_entry>, addr: bigint): boolean {
  for (const a of areas) if (a.start <= addr && addr < a.end) return true;
  return false;
}

/** Splits the image's runs into those of inherited areas and the others. */
export function splitRuns(
  runs: readonly FileRun[],
  inherited: Set<vma_entry>,
): { own: FileRun[]; inheritedRuns: FileRun[] } {
  const own: FileRun[] = [];
  const inheritedRuns: FileRun[] = [];
  for (const r of runs) (within(inherited, r.vaddr) ? inheritedRuns : own).push(r);
  return { own, inheritedRuns };
}

/**
 * Writes the pages of inherited areas that differ from what the child has; returns how many
 * pages were compared and how many written. /proc/PID/mem writes also reach read-only areas.
 */
export function patchInherited(
  pid: number,
  pagesPath: string,
  runs: readonly FileRun[],
): { compared: number; written: number } {
  const image = Deno.openSync(pagesPath);
  const mem = new ProcMem(pid);
  const stats = { compared: 0, written: 0 };
  try {
    for (const r of runs) {
      for (let done = 0; done < r.pages; done += COMPARE_CHUNK_PAGES) {
        const n = Math.min(COMPARE_CHUNK_PAGES, r.pages - done);
        const addr = r.vaddr + BigInt(done * PAGE_SIZE);
        const want = new Uint8Array(n * PAGE_SIZE);
        image.seekSync(r.offset + done * PAGE_SIZE, Deno.SeekMode.Start);
        for (let off = 0; off < want.length;) {
          const got = image.readSync(want.subarray(off));
          if (!got) throw new RestoreError(`${pagesPath} ends before its pagemap does`);
          off += got;
        }
        const have = mem.read(addr, want.length);
        const a = new Uint32Array(want.buffer);
        const b = new Uint32Array(have.buffer);
        for (let p = 0; p < n; p++) {
          stats.compared++;
          const from = p * (PAGE_SIZE / 4);
          let same = true;
          for (let w = from; w < from + PAGE_SIZE / 4; w++) {
            if (a[w] !== b[w]) {
              same = false;
              break;
            }
          }
          if (same) continue;
          mem.write(addr + BigInt(p * PAGE_SIZE), want.slice(p * PAGE_SIZE, (p + 1) * PAGE_SIZE));
          stats.written++;
        }
      }
    }
  } finally {
    mem.close();
    image.close();
  }
  return stats;
}

/** [start, end) ranges covered by runs, merged and sorted. */
function covered(runs: readonly { vaddr: bigint; pages: number }[]): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  for (const r of [...runs].sort((x, y) => (x.vaddr < y.vaddr ? -1 : 1))) {
    const end = r.vaddr + BigInt(r.pages * PAGE_SIZE);
    const last = out[out.length - 1];
    if (last && last[1] >= r.vaddr) last[1] = last[1] > end ? last[1] : end;
    else out.push([r.vaddr, end]);
  }
  return out;
}

/**
 * In inherited private areas, drops the pages the parent had and the child did not have at dump
 * time: anonymous memory reads zero again, file mappings read the file.
 */
export function dropUnlisted(
  agent: Agent,
  inherited: Set<vma_entry>,
  runs: readonly FileRun[],
  parentRuns: readonly { vaddr: bigint; pages: number }[],
): void {
  const child = covered(runs);
  // Areas whose pages are their object's (shared memory, a shared file) have nothing of their own.
  const areas = [...inherited].filter((a) => ownPagesOf(a) !== "none");
  for (const [ps, pe] of covered(parentRuns)) {
    for (const a of areas) {
      const start = ps > a.start ? ps : a.start;
      const end = pe < a.end ? pe : a.end;
      if (start < end) dropRange(agent, start, end, child);
    }
  }
}

/** Drops what of [start, end) no child run covers: it was the parent's alone. */
function dropRange(agent: Agent, start: bigint, end: bigint, child: readonly [bigint, bigint][]): void {
  let at = start;
  for (const [cs, ce] of child) {
    if (ce <= at || cs >= end) continue;
    if (cs > at) agent.later("madvise(MADV_DONTNEED)", NR.madvise, at, cs - at, MADV_DONTNEED);
    at = ce;
  }
  if (at < end) agent.later("madvise(MADV_DONTNEED)", NR.madvise, at, end - at, MADV_DONTNEED);
}
