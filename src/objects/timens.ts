/**
 * Time namespaces. A tree in a time namespace of its own gets a new one on restore in which its
 * monotonic and boot-time clocks go on from where they stood at the dump, as CRIU does:
 * timens-ID.img holds the namespace's two clock readings at the dump (not its offsets), and the
 * restore sets the new namespace's offsets to the reading minus the host's clock at that moment.
 *
 * A namespace's offsets can only be written before any task enters it, and only unshare makes
 * one (clone(CLONE_NEWTIME) puts the child in it at once, its offsets frozen at zero); unshare
 * makes it for the caller's children only, setns into it (a single-threaded task) moves the
 * caller too. So the root's namespace is made by the task the root is cloned from: it unshares
 * CLONE_NEWTIME, criu writes its /proc/PID/timens_offsets, it enters the namespace by setns on
 * its own time_for_children, and the root's clone is born there (NsRestorePlan.inCreator). With
 * --restore-sibling the root itself does the same, being made first.
 *
 * Tasks below the root may sit in time namespaces of their own (they unshared and forked, or a
 * child entered a parent's time_for_children), and a task's time_for_children may differ from
 * its own namespace (it unshared and has not forked since; the ids image's
 * time_for_children_ns_id, which CRIU has not). Every such namespace is saved under its id. The
 * restore forks the whole tree in the root's, then, once every task exists and before any has a
 * second thread (setns of a time namespace wants a single-threaded caller), places each task:
 *   - a namespace that a task made for its children only is made by that task (unshare, then
 *     criu writes its offsets): the task that holds it as its time_for_children but is not in it
 *     (only unshare leaves the two different, so there is one such task);
 *   - any other namespace is made by the first task in it, which then enters it itself;
 *   - every other task in it enters it with setns, as do tasks back in criu's own.
 * A namespace's offsets are read at the dump through a task whose children are born in it
 * (/proc/PID/timens_offsets shows those): a namespace that no task makes its children in is refused.
 */
import { create } from "@bufbuild/protobuf";
import { type timens_entry, timens_entrySchema } from "../images/gen/timens_pb.ts";
import type { inventory_entry } from "../images/gen/inventory_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import { CLOCK_BOOTTIME, clockNs } from "../../ffi/process.ts";
import { writeSmallFile } from "../../ffi/nsenter.ts";
import { closeFd, OPEN, openFd } from "../../ffi/fd.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { CLONE, NR } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import { refuse } from "./refusal.ts";
import {
  enterNamespaceFd,
  type NamespaceIds,
  type NsDumpContext,
  registerNamespaceKind,
} from "./namespaces.ts";
import { takeFromCriu } from "./files.ts";
import type { Agent } from "../agent.ts";
import type { FrozenTask, FrozenTree } from "../dump/freeze.ts";
import type { RestoreTaskImages } from "../restore/images.ts";
import type { Log } from "../log.ts";

const CLOCK_MONOTONIC = 1;
const NS_PER_SEC = 1_000_000_000n;

interface Offsets {
  monotonic: bigint;
  boottime: bigint;
}

/** The offsets of the time namespace `pid`'s children are born in (ns), from /proc/PID/timens_offsets. */
function offsetsOf(pid: number): Offsets {
  const path = `/proc/${pid}/timens_offsets`;
  const out: Partial<Offsets> = {};
  for (const line of Deno.readTextFileSync(path).split("\n")) {
    const m = /^(monotonic|boottime)\s+(-?\d+)\s+(\d+)$/.exec(line.trim());
    if (m) out[m[1] as keyof Offsets] = BigInt(m[2]!) * NS_PER_SEC + BigInt(m[3]!);
  }
  if (out.monotonic === undefined || out.boottime === undefined) {
    throw new Error(`${path} does not hold a monotonic and a boottime offset`);
  }
  return out as Offsets;
}

/** The host's clocks (those of the initial time namespace), in ns: ours minus our namespace's offsets. */
function hostClocks(): Offsets {
  const ours = offsetsOf(Deno.pid);
  return {
    monotonic: clockNs(CLOCK_MONOTONIC) - ours.monotonic,
    boottime: clockNs(CLOCK_BOOTTIME) - ours.boottime,
  };
}

function timespec(ns: bigint): { tvSec: bigint; tvNsec: bigint } {
  return { tvSec: ns / NS_PER_SEC, tvNsec: ns % NS_PER_SEC };
}

function nanoseconds(ts: { tvSec: bigint; tvNsec: bigint } | undefined, what: string): bigint {
  if (!ts) throw new RestoreError(`The time namespace image has no ${what} clock`);
  return ts.tvSec * NS_PER_SEC + ts.tvNsec;
}

/** "CLOCK SECONDS NANOSECONDS" with the nanoseconds in [0, 1e9), as the kernel takes an offset. */
function offsetLine(clockId: number, ns: bigint): string {
  let sec = ns / NS_PER_SEC;
  let nsec = ns % NS_PER_SEC;
  if (nsec < 0n) {
    nsec += NS_PER_SEC;
    sec -= 1n;
  }
  return `${clockId} ${sec} ${nsec}\n`;
}

// ---- dump ----

/** The time namespace a task is in and the one its children are born in (links); none for a zombie. */
function linksOf(nsIds: NamespaceIds, t: FrozenTask): { own: string; forChildren: string } | undefined {
  if (t.state === "zombie") return undefined;
  const own = nsIds.linksOf(t.pid).get("time");
  if (own === undefined) return undefined;
  try {
    return { own, forChildren: Deno.readLinkSync(`/proc/${t.pid}/ns/time_for_children`) };
  } catch {
    return undefined; // ended meanwhile: its parent is frozen, so it waits as a zombie
  }
}

/** The id of the namespace a task's next children are born in (the ids image), when not its own. */
export function timeForChildrenId(nsIds: NamespaceIds, t: FrozenTask): number | undefined {
  const links = linksOf(nsIds, t);
  return links && links.forChildren !== links.own ? nsIds.idOfLink(links.forChildren) : undefined;
}

/** Refuses the ways of sitting in time namespaces the restore cannot repeat (see the top). */
function checkTimeNamespaces(tree: FrozenTree, nsIds: NamespaceIds): void {
  const criu = nsIds.linksOf(Deno.pid).get("time");
  const makers = new Map<string, number>();
  const readable = new Set<string>();
  const inUse = new Map<string, number>();
  const live = tree.tasks.map((t) => ({ t, links: linksOf(nsIds, t) }));
  // The threads are read only for a tree with a time namespace of its own (thousands cost ms).
  const anyOwn = live.some(({ links }) => links && (links.own !== criu || links.forChildren !== criu));
  for (const { t, links } of live) {
    if (!links) continue;
    if (anyOwn) checkThreads(t, links);
    readable.add(links.forChildren);
    for (const link of [links.own, links.forChildren]) if (!inUse.has(link)) inUse.set(link, t.pid);
    if (links.forChildren === links.own) continue;
    const other = makers.get(links.forChildren);
    if (other !== undefined) {
      refuse(
        t.pid,
        `time namespace for children ${links.forChildren}`,
        `process ${other} also makes its children in it from another time namespace; only the one task that unshared it can be restored so`,
      );
    }
    makers.set(links.forChildren, t.pid);
  }
  for (const [link, pid] of inUse) {
    if (link === criu || readable.has(link)) continue;
    refuse(
      pid,
      `time namespace ${link}`,
      "no process of the tree makes its children in it, so its clocks' offsets cannot be read",
    );
  }
}

/** Each thread holds its own namespaces: the restore gives every thread the leader's. */
function checkThreads(t: FrozenTask, leader: { own: string; forChildren: string }): void {
  for (const tid of t.threads) {
    if (tid === t.pid) continue;
    for (const [name, link] of [["time", leader.own], ["time_for_children", leader.forChildren]] as const) {
      let theirs: string;
      try {
        theirs = Deno.readLinkSync(`/proc/${t.pid}/task/${tid}/ns/${name}`);
      } catch {
        continue; // the thread ended meanwhile
      }
      if (theirs !== link) {
        refuse(
          t.pid,
          `the ${name} namespace ${theirs} of thread ${tid}`,
          `it differs from its leader's (${link})`,
        );
      }
    }
  }
}

/** Writes timens-ID.img of the namespace with link `link`: its clocks now, read through a task making its children in it. */
function saveNamespace(ctx: NsDumpContext, nsIds: NamespaceIds, link: string, id: number): void {
  const reader = ctx.tree.tasks.find((t) => linksOf(nsIds, t)?.forChildren === link);
  if (!reader) refuse(ctx.pid, `time namespace ${link}`, "no process of the tree makes its children in it");
  const theirs = offsetsOf(reader.pid);
  const host = hostClocks();
  ctx.dir.write(KINDS.TIMENS, id, [
    create(timens_entrySchema, {
      monotonic: timespec(host.monotonic + theirs.monotonic),
      boottime: timespec(host.boottime + theirs.boottime),
    }),
  ]);
  ctx.log.debug(`Saved time namespace ${id} (${link}) through process ${reader.pid}`);
}

/** The namespaces tasks made for their children that no task is in yet (`dump` saves the others). */
function saveForChildrenOnly(ctx: NsDumpContext): void {
  const nsIds = needIds(ctx);
  const criu = nsIds.linksOf(Deno.pid).get("time");
  const live = ctx.tree.tasks.map((t) => linksOf(nsIds, t)).filter((l) => l !== undefined);
  const entered = new Set(live.map((l) => l.own));
  const done = new Set<string>();
  for (const { forChildren } of live) {
    if (forChildren === criu || entered.has(forChildren) || done.has(forChildren)) continue;
    done.add(forChildren);
    saveNamespace(ctx, nsIds, forChildren, nsIds.idOfLink(forChildren));
  }
}

function needIds(ctx: NsDumpContext): NamespaceIds {
  if (!ctx.nsIds) throw new Error("The time namespaces are dumped without the tree's namespace ids");
  return ctx.nsIds;
}

// ---- restore ----

/** Makes a time namespace for `agent`'s children with clocks going on from `saved`. */
function makeForChildren(agent: Agent, saved: timens_entry, what: string): void {
  const r = agent.attempt("unshare(CLONE_NEWTIME)", NR.unshare, CLONE.NEWTIME);
  if (isSyscallError(r)) throw new RestoreError(`Cannot make ${what}: ${r.message}`, r.errno, { cause: r });
  const host = hostClocks();
  const monotonic = nanoseconds(saved.monotonic, "monotonic") - host.monotonic;
  const boottime = nanoseconds(saved.boottime, "boottime") - host.boottime;
  writeSmallFile(
    `/proc/${agent.pid}/timens_offsets`,
    offsetLine(CLOCK_MONOTONIC, monotonic) + offsetLine(CLOCK_BOOTTIME, boottime),
  );
}

/** `agent`'s task (single-threaded) enters the time namespace criu reaches at `path`. */
function enter(agent: Agent, path: string, failure: string): void {
  let ours: number;
  try {
    ours = openFd(path, OPEN.RDONLY | OPEN.CLOEXEC);
  } catch (e) {
    throw new RestoreError(`${failure}: cannot open ${path}: ${(e as Error).message}`);
  }
  try {
    enterNamespaceFd(agent, takeFromCriu({ agent }, ours), CLONE.NEWTIME, failure);
  } finally {
    closeFd(ours);
  }
}

/** Makes a namespace for the creator's children and moves the creator into it too. */
function makeAndEnter(creator: Agent, saved: timens_entry, what: string): void {
  makeForChildren(creator, saved, what);
  enter(creator, `/proc/${creator.pid}/ns/time_for_children`, `Cannot enter ${what}`);
}

/** The saved clocks of time namespace `id`. */
function readSaved(dir: ImageDir, id: number, who: string): timens_entry {
  if (!dir.has(KINDS.TIMENS, id)) {
    throw new RestoreError(`${who} is in time namespace ${id}, but there is no timens-${id}.img`);
  }
  const [saved] = dir.read<timens_entry>(KINDS.TIMENS, id);
  if (!saved) throw new RestoreError(`timens-${id}.img is empty`);
  return saved;
}

/** The time namespace of the criu that dumped (inventory's root_ids): tasks there go back to ours. */
function criuNamespace(dir: ImageDir): number | undefined {
  if (!dir.has(KINDS.INVENTORY)) return undefined;
  return dir.read<inventory_entry>(KINDS.INVENTORY)[0]?.rootIds?.timeNsId || undefined;
}

interface Placed {
  t: RestoreTaskImages;
  own: number;
  forChildren: number;
}

/**
 * Puts every task in its time namespace once the tree is forked in the root's (see the top):
 * tasks in the order of the images, each namespace made before the first task that enters it.
 */
class TimePlacement {
  /** What criu opens to enter each namespace that exists, by id. */
  readonly #where = new Map<number, string>();
  readonly #state = new Map<RestoreTaskImages, "busy" | "done">();
  /** The task that made each namespace for its children only (not in it itself), by id. */
  readonly #makers = new Map<number, Placed>();

  constructor(
    private readonly placed: readonly Placed[],
    private readonly rootId: number,
    private readonly criuId: number | undefined,
    private readonly saved: ReadonlyMap<number, timens_entry>,
    private readonly log: Log,
  ) {
    for (const p of placed) if (p.forChildren !== p.own) this.#makers.set(p.forChildren, p);
  }

  placeAll(agents: ReadonlyMap<number, Agent>): void {
    const root = this.placed[0]!.t;
    this.#where.set(this.rootId, `/proc/${root.hostPid}/ns/time`);
    if (this.criuId !== undefined && !this.#where.has(this.criuId)) {
      this.#where.set(this.criuId, "/proc/self/ns/time");
    }
    for (const p of this.placed) this.#place(p, agents);
  }

  #place(p: Placed, agents: ReadonlyMap<number, Agent>): void {
    const state = this.#state.get(p.t);
    if (state === "done") return;
    const who = `process ${p.t.entry.pid}`;
    if (state === "busy") {
      throw new RestoreError(
        `The time namespaces of ${who} and of the ones that made them wait on each other (ids images)`,
      );
    }
    this.#state.set(p.t, "busy");
    const agent = agents.get(p.t.entry.pid);
    if (!agent) throw new RestoreError(`No task was made for ${who}`);
    if (p.own !== this.rootId) {
      const maker = this.#where.has(p.own) ? undefined : this.#makers.get(p.own);
      if (maker) this.#place(maker, agents);
      if (this.#where.has(p.own)) {
        this.log.debug(`Process ${p.t.entry.pid} enters time namespace ${p.own}`);
        enter(
          agent,
          this.#where.get(p.own)!,
          `Process ${p.t.entry.pid} cannot enter its time namespace ${p.own}`,
        );
      } else {
        this.log.debug(`Process ${p.t.entry.pid} makes time namespace ${p.own} and enters it`);
        makeAndEnter(agent, this.saved.get(p.own)!, `time namespace ${p.own} in ${who}`);
        this.#where.set(p.own, `/proc/${p.t.hostPid}/ns/time`);
      }
    }
    if (p.forChildren !== p.own) {
      this.log.debug(`Process ${p.t.entry.pid} makes time namespace ${p.forChildren} for its children`);
      makeForChildren(agent, this.saved.get(p.forChildren)!, `time namespace ${p.forChildren} in ${who}`);
      this.#where.set(p.forChildren, `/proc/${p.t.hostPid}/ns/time_for_children`);
    }
    this.#state.set(p.t, "done");
  }
}

/**
 * Where the live tasks' time namespaces are, checked against the images; undefined when every
 * task is in the root's and makes its children there.
 */
function planNested(
  dir: ImageDir,
  tasks: readonly RestoreTaskImages[],
  rootId: number,
  criuId: number | undefined,
  log: Log,
): TimePlacement | undefined {
  const placed: Placed[] = [];
  for (const t of tasks) {
    if (t.zombie || t.helper) continue;
    const own = t.ids?.timeNsId || rootId;
    placed.push({ t, own, forChildren: t.ids?.timeForChildrenNsId || own });
  }
  if (placed.every((p) => p.own === rootId && p.forChildren === rootId)) return undefined;
  const saved = new Map<number, timens_entry>();
  const makers = new Map<number, number>();
  for (const p of placed) {
    const who = `Process ${p.t.entry.pid}`;
    if (p.forChildren !== p.own) {
      if (p.forChildren === rootId || p.forChildren === criuId || makers.has(p.forChildren)) {
        throw new RestoreError(
          `${who} makes its children in time namespace ${p.forChildren} (ids-${p.t.entry.pid}.img), which it cannot have made: it is ${
            makers.has(p.forChildren) ? `process ${makers.get(p.forChildren)}'s too` : "the root's or criu's"
          }`,
        );
      }
      makers.set(p.forChildren, p.t.entry.pid);
    }
    for (const id of [p.own, p.forChildren]) {
      if (id === rootId || id === criuId || saved.has(id)) continue;
      saved.set(id, readSaved(dir, id, who));
    }
  }
  return new TimePlacement(placed, rootId, criuId, saved, log);
}

registerNamespaceKind({
  name: "time",
  words: "time",
  cloneFlag: CLONE.NEWTIME,
  nested: true,
  // Made by unshare and entered by setns once the tree is forked (TimePlacement), never by a clone flag.
  nestsByItself: true,
  check: checkTimeNamespaces,
  dump(ctx) {
    const nsIds = needIds(ctx);
    const link = nsIds.linksOf(ctx.pid).get("time")!;
    saveNamespace(ctx, nsIds, link, ctx.id);
    if (ctx.ofRoot) saveForChildrenOnly(ctx);
  },
  dumpBelow: saveForChildrenOnly,
  prepareRestore(ctx) {
    const root = ctx.tasks[0]!;
    const criuId = criuNamespace(ctx.dir);
    const rootId = ctx.id ?? criuId;
    // No image for the root's namespace: it stays in criu's (CRIU writes none there either).
    const rootSaved = ctx.id !== undefined && ctx.dir.has(KINDS.TIMENS, ctx.id)
      ? readSaved(ctx.dir, ctx.id, `Process ${root.entry.pid}`)
      : undefined;
    const nested = rootId === undefined ? undefined : planNested(ctx.dir, ctx.tasks, rootId, criuId, ctx.log);
    if (!rootSaved && !nested) return undefined;
    return {
      ...(rootSaved && {
        inCreator: (creator: Agent) =>
          makeAndEnter(creator, rootSaved, `the root's time namespace ${ctx.id}`),
        // The creator enters it as well, so a root made first (--restore-sibling) makes it for itself.
        inCreatorTakesItself: true,
      }),
      ...(!rootSaved && { onlyBelowRoot: true }),
      ...(nested && { afterForking: (agents: ReadonlyMap<number, Agent>) => nested.placeAll(agents) }),
    };
  },
});
