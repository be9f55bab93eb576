/**
 * Mapping backings: what a memory area is mapped from (a regular file, a shared memory object,
 * an AIO ring; later memfd, deleted files, SysV shm, a plugin's device). Each backing is a module
 * exporting a `MappingBacking`, registered here as the fd kinds are in files.ts: `detect` looks at
 * the area in /proc/PID/smaps, `dump` fills in what the image says about it, `open` gives the
 * restored task an fd to map it from. Plain anonymous memory and the kernel's own areas (vDSO,
 * vvar, vsyscall) have no backing. An area with an object behind it that no backing recognises is
 * refused here, by name; that refusal is where a plugin will be asked.
 */
import { refuse } from "./refusal.ts";
import type { vma_entry } from "../images/gen/vma_pb.ts";
import type { mm_entry } from "../images/gen/mm_pb.ts";
import type { MapsEntry } from "../../ffi/proc.ts";
import type { ImageDir } from "../images/dir.ts";

import type { Agent } from "../agent.ts";
import type { FilesSession, FileTable } from "./files.ts";
import type { Log } from "../log.ts";
import type { Plugins } from "../plugins/plugins.ts";

export interface MappingDumpContext {
  pid: number;
  table: FileTable;
  /** What the kinds of file are told (a mapped file whose name is gone is carried as one of them). */
  files?: FilesSession;
}

/** A dumped area: its image entry and the runs of pages the task's own pages image holds. */
export interface DumpedVma {
  entry: vma_entry;
  /** Pages to store: [address, page count] runs, ascending. */
  runs: [bigint, number][];
}

/** What a backing needs to store an object once per dump (shared memory's pages). */
export interface ObjectDumpContext {
  dir: ImageDir;
  /** Objects already stored in this dump, by the key the backing chose. */
  done: Set<string>;
  /** A fresh pages image id. */
  nextPagesId(): number;
}

/** A shared object restored in some task, from which the other tasks map it. */
export interface RestoredObject {
  /** /proc/PID/map_files path of the area that holds it. */
  path: string;
  vma: vma_entry;
  filled: boolean;
}

export interface MappingRestoreContext {
  agent: Agent;
  dir: ImageDir;
  files: FileTable;
  /** Objects restored so far in any task, by a key of the backing's. */
  objects: Map<string, RestoredObject>;
  /** Every area of every task of the checkpoint (the same array for the whole restore). */
  allVmas: readonly vma_entry[];
  log: Log;
  /** The restore's plugins (UPDATE_VMA_MAP for a plugin's device area); none in a bare look. */
  plugins?: Plugins;
}

/** Which pages of an area the task's own pages image holds. */
export type OwnPages =
  /** None: the backing object has them (a shared file, shared memory stored once). */
  | "none"
  /** Present or swapped pages that are the task's own, not the file's. */
  | "present"
  /** Every page, present or not (the kernel keeps writing to it: an AIO ring). */
  | "all";

export interface MappingBacking {
  readonly name: string;
  /** Is this area (from /proc/PID/smaps) backed by this kind of object? */
  detect(m: MapsEntry): boolean;
  /**
   * Sets what the image says about the backing (status bits, flags, shmid, pgoff, fdflags) and
   * adds its file to the table. Throws UnsupportedObjectError for a case it cannot save.
   */
  dump(ctx: MappingDumpContext, m: MapsEntry, entry: vma_entry): void;
  /** Which pages of the area go into the task's pages image. */
  ownPages(entry: vma_entry): OwnPages;
  /** Adds what mm-ID.img records about the area beyond its vma entry (an AIO ring's entry). */
  dumpMm?(mm: mm_entry, v: DumpedVma): void;
  /** Stores the object behind the area once per dump; what it wrote, or undefined when it was stored already. */
  dumpObject?(ctx: ObjectDumpContext, pid: number, v: DumpedVma): ObjectPages | undefined;
  /** Is this image entry this backing's? */
  owns(entry: vma_entry): boolean;
  /** Refuses an image entry that cannot be restored, before anything is created. */
  check?(pid: number, entry: vma_entry, files: FileTable, checked: Set<number>): void;
  /**
   * Do two image entries (a parent's and its child's, at the same place) map the same object?
   * A child keeps such an area from its parent instead of mapping it again.
   */
  sameObject(a: vma_entry, b: vma_entry, files: FileTable): boolean;
  /** Opens the object in the restored task: a temporary fd to map from, or -1n for anonymous memory. */
  open(ctx: MappingRestoreContext, entry: vma_entry): bigint;
  /** Once the task's pages are in: fills objects it created, rebuilds kernel state (AIO rings). */
  finish?(ctx: MappingRestoreContext, vmas: readonly vma_entry[]): void;
}

/** What dumping an object wrote (stats-dump's shpages): pages looked at, written, and runs written. */
export interface ObjectPages {
  scanned: number;
  written: number;
  runs: number;
}

const backings: MappingBacking[] = [];

export function registerMappingBacking(b: MappingBacking): void {
  backings.push(b);
}

/** Every registered backing, in registration order. */
export function mappingBackings(): readonly MappingBacking[] {
  return backings;
}

/**
 * The backing of an area of a running task, or undefined for plain anonymous memory. An area
 * that has an object behind it (an inode, or a path that is not one of the kernel's [names])
 * and that no backing recognises is refused, naming it.
 */
export function backingOfArea(pid: number, m: MapsEntry): MappingBacking | undefined {
  const found = backings.find((b) => b.detect(m));
  if (found) return found;
  const anonymous = m.inode === 0 && (m.path === "" || m.path.startsWith("["));
  if (anonymous) return undefined;
  refuse(
    pid,
    `the mapping of ${m.path || `inode ${m.inode}`} at 0x${m.start.toString(16)}-0x${m.end.toString(16)}`,
    "this kind of mapping is not supported yet",
  );
}

/** The backing of an image entry, or undefined for anonymous memory and the kernel's areas. */
export function backingOf(entry: vma_entry): MappingBacking | undefined {
  return backings.find((b) => b.owns(entry));
}
