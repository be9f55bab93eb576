/**
 * Threads, process trees, sessions and zombies: every workload through the standard matrix
 * (plain, dump+restore, --leave-running, ten cycles).
 */
import { registerMatrix } from "./lib/matrix.ts";

registerMatrix([
  { name: "threads", args: ["1"] },
  { name: "threads", args: ["2"] },
  { name: "threads", args: ["64"] },
  { name: "threads", args: ["500"] },
  { name: "tree" },
  { name: "waiter" },
  { name: "shared_files" },
]);
