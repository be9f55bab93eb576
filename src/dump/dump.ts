/**
 * `criu dump`, as a flat list of steps:
 *   1. run the pre-dump action script
 *   2. freeze the tree (seize every thread of every task)
 *   3. check the tree can be restored (sessions, groups)
 *   4. dump each task: CPU, signals, memory, files — pages are written while it is frozen
 *   5. write the tree-wide images (pstree, files, tty-info), then stats and inventory last
 *   6. run the post-dump action script
 *   7. kill the tree, or resume it (--leave-running), or leave it stopped (--leave-stopped)
 * Any failure before step 7 resumes the tree exactly as it was and removes what was written, so
 * the images dir never holds something that looks like a good checkpoint.
 */
import { create } from "@bufbuild/protobuf";
import { compact } from "../compact.ts";
import { pstree_entrySchema } from "../images/gen/pstree_pb.ts";
import { pagemap_entrySchema, pagemap_headSchema } from "../images/gen/pagemap_pb.ts";
import { inventory_entrySchema, lsmtype } from "../images/gen/inventory_pb.ts";
import { type task_kobj_ids_entry, task_kobj_ids_entrySchema } from "../images/gen/core_pb.ts";
import { dump_stats_entrySchema, stats_entrySchema } from "../images/gen/stats_pb.ts";
import { CRTOOLS_IMAGES_V1_1, KINDS } from "../images/kinds.ts";
import { freezeTree, type FrozenTree } from "./freeze.ts";
import { type DumpedTask, dumpTask, dumpZombie } from "./task.ts";
import { FileTable } from "../objects/files.ts";
import { type DumpedVma, PE, scanSharedPages, VMA, writePages } from "../objects/memory.ts";
import { DumpError } from "../errors.ts";
import { CLOCK_BOOTTIME, clockNs } from "../../ffi/process.ts";
import { ImageDir } from "../images/dir.ts";
import { ImageWriter } from "../images/file.ts";
import { pipe_data_entrySchema } from "../images/gen/pipe-data_pb.ts";
import type { Log } from "../log.ts";
import type { Hooks } from "../actions/hooks.ts";

export interface DumpOptions {
  pid: number;
  imagesDir: string;
  leaveRunning: boolean;
  leaveStopped: boolean;
  shellJob: boolean;
  log: Log;
  hooks: Hooks;
}

export interface DumpStats {
  freezingUs: number;
  frozenUs: number;
  memdumpUs: number;
  memwriteUs: number;
  pagesScanned: number;
  pagesWritten: number;
}

const NS_KINDS = ["pid", "net", "ipc", "uts", "mnt", "user", "cgroup", "time"] as const;

/** Small ids for namespaces, the way CRIU numbers them: one per distinct namespace inode. */
class NamespaceIds {
  #ids = new Map<string, number>();
  idsOf(pid: number): Record<string, number | undefined> {
    const out: Record<string, number | undefined> = {};
    for (const ns of NS_KINDS) {
      let link: string;
      try {
        link = Deno.readLinkSync(`/proc/${pid}/ns/${ns}`);
      } catch {
        continue;
      }
      if (!this.#ids.has(link)) this.#ids.set(link, this.#ids.size + 1);
      out[ns] = this.#ids.get(link);
    }
    return out;
  }
}

function taskIds(index: number, ns: Record<string, number | undefined>): task_kobj_ids_entry {
  // Every task has its own mm, fd table, fs and sighand until sharing is detected (kcmp).
  const own = 100 + index;
  return create(
    task_kobj_ids_entrySchema,
    compact({
      vmId: own,
      filesId: own,
      fsId: own,
      sighandId: own,
      pidNsId: ns.pid,
      netNsId: ns.net,
      ipcNsId: ns.ipc,
      utsNsId: ns.uts,
      mntNsId: ns.mnt,
      userNsId: ns.user,
      cgroupNsId: ns.cgroup,
      timeNsId: ns.time,
    }),
  );
}

function checkSessions(tree: FrozenTree, shellJob: boolean): void {
  const pids = new Set(tree.tasks.map((t) => t.pid));
  for (const t of tree.tasks) {
    if (!pids.has(t.sid) && !shellJob) {
      throw new DumpError(
        `Process ${t.pid} belongs to session ${t.sid}, whose leader is not being dumped; use --shell-job (-j) for a process started from a shell`,
      );
    }
    if (!pids.has(t.pgid) && !shellJob && t.pgid !== t.sid) {
      throw new DumpError(
        `Process ${t.pid} is in process group ${t.pgid}, whose leader is not being dumped; use --shell-job (-j)`,
      );
    }
  }
}

function writeTaskImages(dir: ImageDir, t: DumpedTask): void {
  for (const { tid, core } of t.cores) dir.write(KINDS.CORE, tid, [core]);
  dir.write(KINDS.IDS, t.pid, [t.ids]);
  if (t.mm) dir.write(KINDS.MM, t.pid, [t.mm]);
  if (t.fs) dir.write(KINDS.FS, t.pid, [t.fs]);
  if (t.mm) dir.write(KINDS.FDINFO, t.ids.filesId, t.fdinfos);
}

function pagemapFor(t: DumpedTask, pagesId: number) {
  const entries = [];
  for (const v of t.vmas) {
    for (const [vaddr, n] of v.runs) {
      entries.push(
        create(pagemap_entrySchema, { vaddr, compatNrPages: n, nrPages: BigInt(n), flags: PE.PRESENT }),
      );
    }
  }
  return [create(pagemap_headSchema, { pagesId }), ...entries];
}

export function dump(opts: DumpOptions): DumpStats {
  const { log } = opts;
  const dir = new ImageDir(opts.imagesDir);
  opts.hooks.run("pre-dump");
  const t0 = performance.now();
  const tree = freezeTree(opts.pid, log);
  const frozenAt = performance.now();
  const frozenUptimeUs = clockNs(CLOCK_BOOTTIME) / 1000n;
  log.info(`Frozen ${tree.tasks.length} task(s) in ${(frozenAt - t0).toFixed(1)} ms`);
  const stats: DumpStats = {
    freezingUs: Math.round((frozenAt - t0) * 1000),
    frozenUs: 0,
    memdumpUs: 0,
    memwriteUs: 0,
    pagesScanned: 0,
    pagesWritten: 0,
  };
  // Only a tree in a network namespace of its own gets its network locked (as CRIU does).
  const ownNetns = hasOwnNetns(opts.pid);
  try {
    checkSessions(tree, opts.shellJob);
    if (ownNetns) opts.hooks.run("network-lock", opts.pid);
    const table = new FileTable();
    const nsIds = new NamespaceIds();
    let pagesId = 0;
    const shmemDone = new Set<bigint>();
    const ctx = {
      table,
      shellJob: opts.shellJob,
      log,
      writePages(agent: Parameters<typeof writePages>[0], t: DumpedTask) {
        pagesId += 1;
        const w0 = performance.now();
        const path = dir.pathFor(KINDS.PAGES, pagesId);
        dir.noteWritten(path);
        const s = writePages(agent, t.vmas, path);
        dir.write(KINDS.PAGEMAP, t.pid, pagemapFor(t, pagesId));
        stats.memwriteUs += Math.round((performance.now() - w0) * 1000);
        stats.pagesWritten += s.pages;
        stats.pagesScanned += t.vmas.reduce((n, v) => n + Number((v.entry.end - v.entry.start) / 4096n), 0);
        log.debug(`Task ${t.pid}: ${s.pages} pages (${s.remotePages} written by the task itself)`);
        for (const v of t.vmas) {
          if (!(v.entry.status & VMA.ANON_SHARED) || shmemDone.has(v.entry.shmid)) continue;
          shmemDone.add(v.entry.shmid);
          pagesId += 1;
          stats.pagesWritten += dumpSharedObject(dir, agent, t.pid, v, pagesId);
        }
      },
    };
    const m0 = performance.now();
    const dumped = tree.tasks.map((task, i) => {
      const ids = taskIds(i, nsIds.idsOf(task.pid));
      log.info(`Dumping task ${task.pid} (${task.threads.length} thread(s), ${task.state})`);
      return task.state === "zombie" ? dumpZombie(task, ids) : dumpTask(ctx, task, ids);
    });
    stats.memdumpUs = Math.round((performance.now() - m0) * 1000) - stats.memwriteUs;
    for (const t of dumped) writeTaskImages(dir, t);
    dir.write(
      KINDS.PSTREE,
      undefined,
      tree.tasks.map((t) =>
        create(pstree_entrySchema, { pid: t.pid, ppid: t.ppid, pgid: t.pgid, sid: t.sid, threads: t.threads })
      ),
    );
    dir.write(KINDS.FILES, undefined, table.entries);
    if (table.ttyInfos.length) dir.write(KINDS.TTY_INFO, undefined, table.ttyInfos);
    if (table.pipeData.size) writePipeData(dir, table);
    opts.hooks.run("post-dump");
    stats.frozenUs = Math.round((performance.now() - frozenAt) * 1000);
    writeStats(dir, stats);
    dir.write(KINDS.INVENTORY, undefined, [
      create(inventory_entrySchema, {
        imgVersion: CRTOOLS_IMAGES_V1_1,
        fdinfoPerId: true,
        nsPerId: true,
        rootIds: dumped[0]!.ids,
        lsmtype: lsmtype.NO_LSM,
        dumpUptime: frozenUptimeUs,
      }),
    ]);
  } catch (e) {
    if (ownNetns) unlockQuietly(opts);
    tree.resume();
    dir.removeWritten();
    throw e;
  }
  if (ownNetns && opts.leaveRunning) unlockQuietly(opts);
  finish(tree, opts);
  return stats;
}

function hasOwnNetns(pid: number): boolean {
  try {
    return Deno.readLinkSync(`/proc/${pid}/ns/net`) !== Deno.readLinkSync("/proc/self/ns/net");
  } catch {
    return false;
  }
}

function unlockQuietly(opts: DumpOptions): void {
  try {
    opts.hooks.run("network-unlock", opts.pid);
  } catch (e) {
    opts.log.error(`network-unlock: ${(e as Error).message}`);
  }
}

function finish(tree: FrozenTree, opts: DumpOptions): void {
  if (opts.leaveRunning) tree.resume();
  else if (opts.leaveStopped) tree.leaveStopped();
  else tree.kill();
}

/**
 * Shared anonymous memory goes once into pagemap-shmem-ID.img (addresses are offsets in the
 * object), from the first task that maps it, written by that task as its own pages are.
 */
function dumpSharedObject(
  dir: ImageDir,
  agent: Parameters<typeof writePages>[0],
  pid: number,
  v: DumpedVma,
  pagesId: number,
): number {
  const pagemap = Deno.openSync(`/proc/${pid}/pagemap`);
  let runs: [bigint, number][];
  try {
    runs = scanSharedPages(pagemap, v.entry);
  } finally {
    pagemap.close();
  }
  const path = dir.pathFor(KINDS.PAGES, pagesId);
  dir.noteWritten(path);
  writePages(agent, [{ entry: v.entry, runs }], path);
  const offset = (addr: bigint) => v.entry.pgoff + (addr - v.entry.start);
  dir.write(KINDS.SHMEM_PAGEMAP, v.entry.shmid, [
    create(pagemap_headSchema, { pagesId }),
    ...runs.map(([addr, n]) =>
      create(pagemap_entrySchema, {
        vaddr: offset(addr),
        compatNrPages: n,
        nrPages: BigInt(n),
        flags: PE.PRESENT,
      })
    ),
  ]);
  return runs.reduce((n, [, p]) => n + p, 0);
}

/** pipes-data.img: one entry per pipe with queued bytes, each followed by those bytes. */
function writePipeData(dir: ImageDir, table: FileTable): void {
  const w = ImageWriter.create(dir.path, KINDS.PIPES_DATA);
  dir.noteWritten(w.name);
  try {
    for (const [pipeId, { data, capacity }] of table.pipeData) {
      if (data.length === 0 && capacity === 65536) continue;
      w.writeEntry(create(pipe_data_entrySchema, { pipeId, bytes: data.length, size: capacity }));
      w.writeBlob(data);
    }
  } finally {
    w.close();
  }
}

function writeStats(dir: ImageDir, s: DumpStats): void {
  dir.write(KINDS.STATS, "dump", [
    create(stats_entrySchema, {
      dump: create(dump_stats_entrySchema, {
        freezingTime: s.freezingUs,
        frozenTime: s.frozenUs,
        memdumpTime: s.memdumpUs,
        memwriteTime: s.memwriteUs,
        pagesScanned: BigInt(s.pagesScanned),
        pagesSkippedParent: 0n,
        pagesWritten: BigInt(s.pagesWritten),
        pagesLazy: 0n,
      }),
    }),
  ]);
}
