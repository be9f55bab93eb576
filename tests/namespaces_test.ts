/**
 * Namespaces other than criu's that are saved and made again: UTS (host and domain names), time
 * (the clocks' offsets) and IPC (its sysctls and SysV objects). Each workload unshares its
 * namespace itself, so the dump's root is the process in it, and checks its own view after restore.
 */
import { type Case, registerMatrix } from "./lib/matrix.ts";

const CASES: Case[] = [
  { name: "utsns" },
  { name: "timens" },
  { name: "ipcns" },
];

registerMatrix(CASES);
