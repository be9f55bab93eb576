/** The memory stage: a task's address space and the mm fields of its prctl map (FORKING). */
import type { vma_entry } from "../../images/gen/vma_pb.ts";
import * as pt from "../../../ffi/ptrace.ts";
import { readMaps } from "../../../ffi/proc.ts";
import { prctlMmMap } from "../../../ffi/structs.ts";
import { NR, O, PR, RSEQ_FLAG_UNREGISTER } from "../../../ffi/syscalls.ts";
import { isSyscallError } from "../../../ffi/errors.ts";
import type { Agent } from "../../agent.ts";
import {
  fillPages,
  finishAreas,
  finishBackings,
  installGuards,
  mapAreas,
  moveSpecialAreas,
  PAGE_SIZE,
  VMA,
  withoutSpecialPages,
} from "../../objects/memory.ts";
import type { MappingRestoreContext } from "../../objects/mappings.ts";
import { RestoreError } from "../../errors.ts";
import type { Checkpoint, RestoreTaskImages } from "../images.ts";
import { findFreeArea, PUPPET_SCRATCH_SIZE } from "../puppet.ts";
import { dropUnlisted, inheritedAreas, patchInherited, splitRuns } from "../inherit.ts";
import { pathToOpen } from "../../objects/remap.ts";
import type { TaskRestoreContext } from "./context.ts";

function unregisterRseq(agent: Agent): void {
  const c = pt.rseqConfiguration(agent.tid);
  if (c.abiPointer === 0n) return;
  agent.call("rseq(unregister)", NR.rseq, c.abiPointer, c.abiSize, RSEQ_FLAG_UNREGISTER, c.signature);
}

/**
 * Unmaps everything the puppet inherited but the scratch page and the kernel's special areas,
 * a whole gap at a time (a puppet made from a copy of ourselves has hundreds of mappings).
 */
function clearAddressSpace(
  agent: Agent,
  scratch: bigint,
  inherited: Set<vma_entry>,
): ReturnType<typeof readMaps> {
  const live = readMaps(agent.pid).sort((a, b) => (a.start < b.start ? -1 : 1));
  const isSpecial = (m: { path: string }) => m.path === "[vdso]" || m.path.startsWith("[vvar");
  const kept = (m: { start: bigint; end: bigint; path: string }) =>
    m.start === scratch || isSpecial(m) || m.path === "[vsyscall]" ||
    [...inherited].some((e) => e.start === m.start && e.end === m.end);
  // One munmap per stretch of mappings to drop, holes included: a copy of ourselves has hundreds.
  let from: bigint | null = null;
  let to = 0n;
  const flush = () => {
    if (from !== null) agent.call("munmap", NR.munmap, from, to - from);
    from = null;
  };
  for (const m of live) {
    if (kept(m)) {
      flush();
      continue;
    }
    from ??= m.start;
    to = m.end;
  }
  flush();
  return live.filter(isSpecial);
}

/**
 * A task that had unmapped its vDSO (or its vvar pages) gets none back: the puppet's are unmapped.
 * Answers the special areas left to move into place.
 */
function dropSpecialsNotDumped(
  agent: Agent,
  live: ReturnType<typeof readMaps>,
  dumped: readonly vma_entry[],
): ReturnType<typeof readMaps> {
  const hasVdso = dumped.some((e) => e.status & VMA.VDSO);
  const hasVvar = dumped.some((e) => e.status & VMA.VVAR);
  return live.filter((m) => {
    const wanted = m.path === "[vdso]" ? hasVdso : hasVvar;
    if (!wanted) agent.call(`munmap(${m.path})`, NR.munmap, m.start, m.end - m.start);
    return wanted;
  });
}

/** What the mapping backings need to restore this task's areas. */
function mappingContext(ctx: TaskRestoreContext, agent: Agent): MappingRestoreContext {
  return {
    agent,
    dir: ctx.checkpoint.dir,
    files: ctx.checkpoint.files,
    objects: ctx.shmem,
    allVmas: allVmasOf(ctx.checkpoint),
    log: ctx.log,
    plugins: ctx.checkpoint.session.plugins,
  };
}

const allVmasCache = new WeakMap<Checkpoint, vma_entry[]>();

function allVmasOf(cp: Checkpoint): vma_entry[] {
  let all = allVmasCache.get(cp);
  if (!all) allVmasCache.set(cp, all = cp.tasks.flatMap((t) => t.mm?.vmas ?? []));
  return all;
}

/**
 * Rebuilds the task's address space. A child forked from its restored parent keeps the areas it
 * shares with it (see inherit.ts); everything else is unmapped and mapped again from the images.
 */
export function restoreMemory(
  ctx: TaskRestoreContext,
  agent: Agent,
  t: RestoreTaskImages,
  parent?: RestoreTaskImages,
): void {
  const mm = t.mm!;
  unregisterRseq(agent);
  const files = ctx.checkpoint.files;
  const inherited = parent?.mm
    ? inheritedAreas(mm.vmas, parent.mm.vmas, readMaps(agent.pid), files)
    : new Set<vma_entry>();
  const specials = dropSpecialsNotDumped(
    agent,
    clearAddressSpace(agent, ctx.master.scratch, inherited),
    mm.vmas,
  );
  const parking = findFreeArea(
    specials.reduce((n, s) => n + (s.end - s.start), 0n),
    [...mm.vmas, ...specials, {
      start: ctx.master.scratch,
      end: ctx.master.scratch + BigInt(PUPPET_SCRATCH_SIZE),
    }],
  );
  moveSpecialAreas(agent, specials, mm.vmas, parking);
  const fresh = mm.vmas.filter((e) => !inherited.has(e));
  const mappings = mappingContext(ctx, agent);
  mapAreas(mappings, fresh);
  let offset = 0;
  const runs = withoutSpecialPages(
    t.pages.map((r) => {
      const run = { ...r, offset };
      offset += r.pages * PAGE_SIZE;
      return run;
    }),
    mm.vmas,
  );
  const { own, inheritedRuns } = splitRuns(runs, inherited);
  fillPages(agent, t.pagesPath!, own, ctx.imagesDirFd);
  const cow = patchInherited(agent.pid, t.pagesPath!, inheritedRuns);
  ctx.cowStats.compared += cow.compared;
  ctx.cowStats.skipped += cow.compared - cow.written;
  ctx.cowStats.restored += own.reduce((n, r) => n + r.pages, 0) + cow.written;
  dropUnlisted(agent, inherited, runs, parent?.pages ?? []);
  if (inherited.size) {
    ctx.log.debug(
      `Task ${t.entry.pid}: kept ${inherited.size} areas from its parent; ${cow.written} of ${cow.compared} pages differed`,
    );
  }
  finishBackings(mappings, fresh);
  finishAreas(agent, fresh);
  if (t.guards?.length) installGuards(agent, t.guards);
  setMmFields(ctx, agent, t);
}

function setMmFields(ctx: TaskRestoreContext, agent: Agent, t: RestoreTaskImages): void {
  const mm = t.mm!;
  const exe = ctx.checkpoint.files.get(mm.exeFileId).reg
    ? pathToOpen(ctx.checkpoint.files, mm.exeFileId, agent.pid)
    : undefined;
  if (!exe) {
    throw new RestoreError(`The executable of ${t.entry.pid} (file ${mm.exeFileId}) is not a regular file`);
  }
  agent.reset();
  // The kernel refuses to switch exe while the old one is mapped; when the puppet already runs
  // the very same file (restoring `sleep` itself), there is nothing to switch.
  const sameExe = Deno.readLinkSync(`/proc/${agent.pid}/exe`) === exe;
  const exeFd = sameExe
    ? -1n
    : agent.attempt(`open(${exe})`, NR.open, agent.string(exe), O.RDONLY | O.CLOEXEC, 0);
  if (isSyscallError(exeFd)) {
    throw new RestoreError(`Cannot open the executable ${exe}: ${exeFd.message}`, 0, { cause: exeFd });
  }
  try {
    const auxv = new BigUint64Array(mm.mmSavedAuxv);
    const auxvAddr = agent.alloc(auxv.byteLength, new Uint8Array(auxv.buffer));
    const map = prctlMmMap({
      startCode: mm.mmStartCode,
      endCode: mm.mmEndCode,
      startData: mm.mmStartData,
      endData: mm.mmEndData,
      startBrk: mm.mmStartBrk,
      brk: mm.mmBrk,
      startStack: mm.mmStartStack,
      argStart: mm.mmArgStart,
      argEnd: mm.mmArgEnd,
      envStart: mm.mmEnvStart,
      envEnd: mm.mmEnvEnd,
      auxv: auxvAddr,
      auxvSize: auxv.byteLength,
      exeFd: Number(exeFd),
    });
    const mapAddr = agent.alloc(map.byteLength, map);
    agent.call("prctl(PR_SET_MM_MAP)", NR.prctl, PR.SET_MM, PR.SET_MM_MAP, mapAddr, map.byteLength, 0);
  } finally {
    if (exeFd >= 0n) agent.later("close(exe)", NR.close, exeFd);
  }
  if (mm.thpDisabled) agent.call("prctl(PR_SET_THP_DISABLE)", NR.prctl, PR.SET_THP_DISABLE, 1, 0, 0, 0);
}
