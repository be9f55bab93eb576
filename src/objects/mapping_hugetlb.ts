/**
 * Anonymous hugetlb memory (MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB): the kernel shows it as a
 * deleted file "/anon_hugepage" of its internal hugetlbfs, with VmFlags "ht". It is private
 * anonymous memory in the image, as CRIU records it: flags MAP_HUGETLB with the page size bits
 * (MAP_HUGE_2MB, ...), its pages in the task's pages image. The restore maps it again from the
 * kernel's pool of huge pages, which must have enough free: that is checked first, by name.
 *
 * Shared hugetlb memory (MAP_SHARED|MAP_HUGETLB) is refused: its object cannot be written through
 * a file as shared memory is (hugetlbfs has no write), and CRIU needs memfd_create(MFD_HUGETLB) for it.
 */
import { refuse } from "./refusal.ts";
import type { MapsEntry } from "../../ffi/proc.ts";
import { MAP } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import { type MappingBacking, registerMappingBacking } from "./mappings.ts";
import { VMA } from "./memory.ts";

const MAP_HUGE_SHIFT = 26;
const MAP_HUGE_MASK = 0x3f;

/** MAP_HUGE_* bits for a page size: log2 of the size in bytes, shifted. */
function hugeSizeBits(pid: number, m: MapsEntry): number {
  const kib = m.kernelPageKiB ?? 0;
  const log2 = Math.log2(kib * 1024);
  if (!Number.isInteger(log2) || log2 <= 12) {
    refuse(
      pid,
      `the hugetlb mapping at 0x${m.start.toString(16)}`,
      `its page size (${kib} kB in smaps) is not a huge page size`,
    );
  }
  return log2 << MAP_HUGE_SHIFT;
}

/** Page size in KiB of an image entry's huge pages (0: the kernel's default size). */
function pageKiB(flags: number): number {
  const log2 = (flags >>> MAP_HUGE_SHIFT) & MAP_HUGE_MASK;
  return log2 ? 2 ** (log2 - 10) : 0;
}

function defaultHugePageKiB(): number {
  const m = /Hugepagesize:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/meminfo"));
  return m ? Number(m[1]) : 0;
}

/** Huge pages of this size the kernel's pool can still hand out (free and not reserved). */
function availableHugePages(kib: number): number {
  const dir = `/sys/kernel/mm/hugepages/hugepages-${kib}kB`;
  try {
    const read = (f: string) => Number(Deno.readTextFileSync(`${dir}/${f}`).trim());
    return read("free_hugepages") - read("resv_hugepages");
  } catch {
    return 0; // no pool of this size on this kernel
  }
}

export const hugetlbMapping: MappingBacking = {
  name: "hugetlb memory",
  detect(m) {
    return m.path.startsWith("/anon_hugepage") && m.vmFlags.includes("ht");
  },
  dump(ctx, m, entry) {
    if (m.perms[3] === "s") {
      refuse(
        ctx.pid,
        `shared hugetlb memory at 0x${m.start.toString(16)}-0x${m.end.toString(16)}`,
        "shared MAP_HUGETLB mappings are not supported yet",
      );
    }
    entry.status |= VMA.ANON_PRIVATE;
    entry.flags |= MAP.ANONYMOUS | MAP.HUGETLB | hugeSizeBits(ctx.pid, m);
  },
  ownPages() {
    return "present";
  },
  owns(entry) {
    return (entry.flags & MAP.HUGETLB) !== 0 && (entry.status & VMA.ANON_PRIVATE) !== 0;
  },
  sameObject() {
    return true; // private memory: the child's pages are compared as any others
  },
  open(ctx, e) {
    const kib = pageKiB(e.flags) || defaultHugePageKiB();
    const needed = Number(e.end - e.start) / (kib * 1024);
    const available = availableHugePages(kib);
    if (available < needed) {
      throw new RestoreError(
        `Process ${ctx.agent.pid} maps ${needed} huge page(s) of ${kib} kB at 0x${
          e.start.toString(16)
        }, but the kernel has ${Math.max(available, 0)} free (raise /proc/sys/vm/nr_hugepages)`,
      );
    }
    return -1n; // anonymous: mapAreas maps it with the recorded MAP_HUGETLB flags
  },
};

registerMappingBacking(hugetlbMapping);
