/** `--display-stats`: what was written to stats-dump or stats-restore, in the lines CRIU prints. */
import type { DumpStats } from "../../dump/dump.ts";
import type { RestoreResult } from "../../restore/restore.ts";

/** "12 (0xc)": CRIU prints page counts in decimal and hex. */
function count(n: number): string {
  return `${n} (0x${n.toString(16)})`;
}

export function dumpStatsText(s: DumpStats): string {
  return [
    "Displaying dump stats:",
    `Freezing time: ${s.freezingUs} us`,
    `Frozen time: ${s.frozenUs} us`,
    `Memory dump time: ${s.memdumpUs} us`,
    `Memory write time: ${s.memwriteUs} us`,
    `IRMAP resolve time: ${s.irmapResolveUs} us`,
    `Memory pages scanned: ${count(s.pagesScanned)}`,
    `Memory pages skipped from parent: ${count(s.pagesSkippedParent)}`,
    `Memory pages written: ${count(s.pagesWritten)}`,
    `Lazy memory pages: ${count(s.pagesLazy)}`,
  ].join("\n");
}

export function restoreStatsText(r: RestoreResult): string {
  return [
    "Displaying restore stats:",
    `Pages compared: ${count(r.pages.compared)}`,
    `Pages skipped COW: ${count(r.pages.skipped)}`,
    `Pages restored: ${count(r.pages.restored)}`,
    `Restore time: ${r.restoreUs} us`,
    `Forking time: ${r.forkingUs} us`,
  ].join("\n");
}
