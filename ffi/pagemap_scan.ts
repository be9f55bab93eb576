/**
 * PAGEMAP_SCAN (Linux 6.7): asks /proc/PID/pagemap for the ranges of pages in given categories in
 * one ioctl, instead of reading an entry per page. Used for MADV_GUARD_INSTALL guards (category
 * PAGE_IS_GUARD, Linux 6.14), which no vma and no maps line shows.
 *
 * struct pm_scan_arg (include/uapi/linux/fs.h), 12 u64 fields:
 *   size, flags, start, end, walk_end, vec, vec_len, max_pages,
 *   category_inverted, category_mask, category_anyof_mask, return_mask
 * struct page_region: start, end, categories (u64 each).
 */
import { addressOf, call, libc } from "./libc.ts";
import { closeFd, OPEN, openFd } from "./fd.ts";
import { isSyscallError } from "./errors.ts";

const PM_SCAN_ARG_SIZE = 96;
/** _IOWR('f', 16, struct pm_scan_arg) */
const PAGEMAP_SCAN = 0xc0606610n;
export const PAGE_IS_GUARD = 1n << 8n;
const REGION_SIZE = 24;
const REGIONS_PER_CALL = 1024;
/**
 * The end of user space with 4-level paging (TASK_SIZE_MAX): the kernel refuses a range beyond
 * it. Areas above it exist only with 5-level paging, for tasks that ask for them.
 */
const SCAN_END = (1n << 47n) - 4096n;

/**
 * The [start, end) ranges of task `pid` whose pages are all in `category` (merged by the
 * kernel). Null when this kernel cannot tell (no PAGEMAP_SCAN, or no such category).
 */
export function scanCategory(pid: number, category: bigint, end = SCAN_END): [bigint, bigint][] | null {
  const fd = openFd(`/proc/${pid}/pagemap`, OPEN.RDONLY | OPEN.CLOEXEC);
  const arg = new BigUint64Array(PM_SCAN_ARG_SIZE / 8);
  const regions = new BigUint64Array((REGIONS_PER_CALL * REGION_SIZE) / 8);
  const vec = addressOf(regions);
  const out: [bigint, bigint][] = [];
  try {
    let start = 0n;
    while (start < end) {
      arg.set([
        BigInt(PM_SCAN_ARG_SIZE),
        0n, // flags
        start,
        end,
        0n, // walk_end, set by the kernel
        vec,
        BigInt(REGIONS_PER_CALL),
        0n, // max_pages: no limit
        0n, // category_inverted
        category, // category_mask: pages must be in it
        0n, // category_anyof_mask
        category, // return_mask
      ]);
      let n: number;
      try {
        n = call("ioctl(PAGEMAP_SCAN)", libc.ioctl(fd, PAGEMAP_SCAN, new Uint8Array(arg.buffer)));
      } catch (e) {
        // ENOTTY: no PAGEMAP_SCAN; EINVAL: it does not know this category
        if (isSyscallError(e, "ENOTTY") || isSyscallError(e, "EINVAL")) return null;
        throw e;
      }
      for (let i = 0; i < n; i++) out.push([regions[3 * i]!, regions[3 * i + 1]!]);
      const walkEnd = arg[4]!;
      if (walkEnd <= start) break;
      start = walkEnd;
    }
  } finally {
    closeFd(fd);
  }
  return out;
}
