/** The verdict of a category check, shared by `criu check` and the RPC CHECK request. */
import type { Checked } from "./probes.ts";

const GOOD = "Looks good.";
const BAD = "Does not look good.";
const MAYBE =
  "Looks good but some kernel features are missing: dumping or restoring a process tree that uses them may fail.";

/** The lines `criu check` prints for a category run, and its exit status. */
export function summarize(checked: readonly Checked[]): { lines: string[]; code: number } {
  const missing = checked.filter((c) => !c.result.supported);
  const lines = missing.map(({ feature, result }) => {
    const note = feature.category === "optional" ? " (optional)" : "";
    return `${feature.name} is NOT supported${note}: ${result.detail}`;
  });
  if (missing.some((c) => c.feature.category === "core")) return { lines: [...lines, BAD], code: 1 };
  if (missing.some((c) => c.feature.category !== "optional")) return { lines: [...lines, MAYBE], code: 1 };
  return { lines: [...lines, GOOD], code: 0 };
}
