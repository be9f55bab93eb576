/**
 * Memory mappings of every kind a backing or an advice covers, each in a workload of its own that
 * checks its memory after restore, run through the standard matrix (plain, dump and restore,
 * --leave-running, ten cycles).
 */
import { type Case, registerMatrix } from "./lib/matrix.ts";

const CASES: Case[] = [
  { name: "mem_advice" },
  { name: "mem_wipe" },
  { name: "mem_fileprot" },
  { name: "mem_shmoff" },
];

registerMatrix(CASES);
