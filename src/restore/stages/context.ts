/** What every stage of a task's restore is handed, and what the thread stage hands to RESUME. */
import type { core_entry } from "../../images/gen/core_pb.ts";
import type { Agent } from "../../agent.ts";
import type { RestoredObject } from "../../objects/mappings.ts";
import type { FilesSession, SharedFiles } from "../../objects/files.ts";
import type { Checkpoint, RestoreTaskImages } from "../images.ts";
import type { PuppetMaster } from "../puppet.ts";
import type { Log } from "../../log.ts";
import type { RunOptions } from "../../options/options.ts";
import type { SeccompPlan } from "../../objects/seccomp.ts";

export interface TaskRestoreContext {
  checkpoint: Checkpoint;
  master: PuppetMaster;
  log: Log;
  /** What every kind of file is told, from PREPARE to the end. */
  files: FilesSession;
  /** Files open in the tasks restored so far. */
  shared: SharedFiles;
  /** Pages compared with the parent's and left shared, and pages filled from the images (stats-restore). */
  cowStats: { compared: number; skipped: number; restored: number };
  /**
   * The securebits every puppet has until its own credentials are set: each is a copy of the
   * helper (or of the sibling root), so they are asked once.
   */
  puppetSecbits?: number;
  /** Objects behind mappings (shared memory) restored so far, by their backing's key. */
  shmem: Map<string, RestoredObject>;
  /** The restore's options, read-only, as the object kinds get them. */
  options: RunOptions;
  /**
   * An fd of the images dir at this number in every puppet until its files are restored (the
   * helper gets it from us, the sibling root inherits ours): pages are read through it.
   */
  imagesDirFd?: number;
  /** Once the task's files are back, before its state: the namespace kinds' part (nested user namespaces). */
  beforeTaskState?: (t: RestoreTaskImages, agent: Agent) => void;
  /** Each thread's seccomp chain still to install (objects/seccomp.ts), by its core. */
  seccomp?: Map<core_entry, SeccompPlan>;
}

/** A thread ready to be resumed: its agent (still inside) and the core it must end up with. */
export interface PendingThread {
  agent: Agent;
  core: core_entry;
}
