/**
 * What an mm image (mm-PID.img) asks of the kernel, checked before any task exists: areas the
 * restore can map where they were, and the fields PR_SET_MM_MAP takes. A damaged image is refused
 * by name instead of failing an mmap or a prctl half-way through a restore, or mapping an area
 * somewhere it should never be.
 */
import type { mm_entry } from "../images/gen/mm_pb.ts";
import type { vma_entry } from "../images/gen/vma_pb.ts";
import { MAP } from "../../ffi/syscalls.ts";
import { PAGE_SIZE, VMA } from "../objects/memory.ts";

/** A number from /proc/sys, or `fallback` when it cannot be read. */
export function sysctl(path: string, fallback: number): number {
  try {
    return Number(Deno.readTextFileSync(path).trim());
  } catch {
    return fallback;
  }
}

/** Highest user-space address on x86_64 with 4-level paging (47 bits). */
const USER_SPACE_END = 1n << 47n;
const PAGE = BigInt(PAGE_SIZE);
const PROT_ALL = 7; // PROT_READ | PROT_WRITE | PROT_EXEC
/** How many areas a process may have (vm.max_map_count). */
const MAX_MAP_COUNT = sysctl("/proc/sys/vm/max_map_count", 65530);
/** The lowest address mmap gives out (vm.mmap_min_addr). */
const MMAP_MIN_ADDR = BigInt(sysctl("/proc/sys/vm/mmap_min_addr", 65536));
/** Words of the kernel's saved auxv (AT_VECTOR_SIZE on x86_64): PR_SET_MM_MAP takes no more. */
const MAX_AUXV_WORDS = 2 * (3 + 22 + 1);
/** Areas the kernel makes (vDSO, vvar, vsyscall): moved or left, never mapped by the restore. */
/** Areas the kernel makes (and an AIO ring, which io_setup makes): their flags are the kernel's. */
const SPECIAL_AREAS = VMA.VDSO | VMA.VVAR | VMA.VSYSCALL | VMA.AIORING;
const AREA_KINDS = VMA.FILE_PRIVATE | VMA.FILE_SHARED | VMA.ANON_SHARED | VMA.ANON_PRIVATE;

function hex(x: bigint | number): string {
  return "0x" + x.toString(16);
}

/** What is wrong with an mm image, worded to follow "mm-PID.img has", or undefined. */
export function mmProblem(mm: mm_entry): string | undefined {
  return areasProblem(mm.vmas) ?? fieldsProblem(mm);
}

/** Areas sorted, page aligned, inside user space, not overlapping, each mappable as it says. */
function areasProblem(vmas: readonly vma_entry[]): string | undefined {
  if (vmas.length > MAX_MAP_COUNT) return `${vmas.length} areas, more than vm.max_map_count allows`;
  let prevEnd = 0n;
  for (const v of vmas) {
    const wrong = areaProblem(v, prevEnd);
    if (wrong) return `an area ${hex(v.start)}-${hex(v.end)} ${wrong}`;
    prevEnd = v.end;
  }
  return undefined;
}

/** The bits of mmap flags that say the mapping's type (MAP_TYPE). */
const MAP_TYPE = 0x0f;

function areaProblem(v: vma_entry, prevEnd: bigint): string | undefined {
  if (v.start % PAGE || v.end % PAGE) return "that is not page aligned";
  if (v.end <= v.start) return "that ends before it starts";
  if (v.end > USER_SPACE_END || v.start < MMAP_MIN_ADDR) return "that leaves user space";
  if (v.start < prevEnd) return "that overlaps the area before it";
  if (v.pgoff % PAGE) return `at a file offset ${hex(v.pgoff)} that is not page aligned`;
  if (v.prot & ~PROT_ALL) return `with unknown protection bits ${hex(v.prot)}`;
  if (v.status & SPECIAL_AREAS) return undefined;
  // One kind, and mmap flags that say shared exactly when the kind is.
  const kind = v.status & AREA_KINDS;
  if (kind & (kind - 1)) return `of several kinds at once (status ${hex(v.status)})`;
  const shared = (v.status & (VMA.FILE_SHARED | VMA.ANON_SHARED | VMA.SYSVIPC)) !== 0;
  // The mapping type (MAP_TYPE's bits): shared, or private, which MAP_DROPPABLE is a kind of.
  const type = v.flags & MAP_TYPE;
  const fits = shared ? type === MAP.SHARED : type === MAP.PRIVATE || type === MAP.DROPPABLE;
  if (!fits) return `whose flags ${hex(v.flags)} do not say ${shared ? "MAP_SHARED" : "MAP_PRIVATE"}`;
  return undefined;
}

/**
 * The fields PR_SET_MM_MAP sets, as the kernel checks them (kernel/sys.c,
 * validate_prctl_map_addr): each inside user space above mmap_min_addr, each pair in order, the
 * auxv no longer than the kernel keeps; and a dumpable value PR_SET_DUMPABLE takes.
 */
function fieldsProblem(mm: mm_entry): string | undefined {
  const fields = {
    start_code: mm.mmStartCode,
    end_code: mm.mmEndCode,
    start_data: mm.mmStartData,
    end_data: mm.mmEndData,
    start_brk: mm.mmStartBrk,
    brk: mm.mmBrk,
    start_stack: mm.mmStartStack,
    arg_start: mm.mmArgStart,
    arg_end: mm.mmArgEnd,
    env_start: mm.mmEnvStart,
    env_end: mm.mmEnvEnd,
  };
  for (const [name, v] of Object.entries(fields)) {
    if (v < MMAP_MIN_ADDR || v >= USER_SPACE_END - PAGE) return `${name} ${hex(v)}, outside user space`;
  }
  const pairs = [
    ["start_code", "end_code"],
    ["start_data", "end_data"],
    ["start_brk", "brk"],
    ["arg_start", "arg_end"],
    ["env_start", "env_end"],
  ] as const;
  for (const [lo, hi] of pairs) {
    // The code must not be empty; the others may.
    if (fields[lo] > fields[hi] || (lo === "start_code" && fields[lo] === fields[hi])) {
      return `${lo} ${hex(fields[lo])} after ${hi} ${hex(fields[hi])}`;
    }
  }
  if (mm.dumpable !== undefined && mm.dumpable !== 0 && mm.dumpable !== 1) {
    return `dumpable ${mm.dumpable}, which PR_SET_DUMPABLE cannot set (0 or 1)`;
  }
  const auxv = mm.mmSavedAuxv.length;
  if (auxv > MAX_AUXV_WORDS || auxv % 2) {
    return `an auxiliary vector of ${auxv} words, expected an even number up to ${MAX_AUXV_WORDS}`;
  }
  return undefined;
}
