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
 * Threads: each holds its own namespaces, but the kernel lets no thread enter a time namespace
 * (setns wants a single-threaded caller), and a thread is cloned into its creator's namespace (not
 * its time_for_children) sharing its creator's time_for_children: a thread is always in its
 * leader's namespace, and only its time_for_children may differ, after an unshare of its own or of
 * its creator's (thread_core's time_for_children_ns_id, 1001, which CRIU skips). The restore clones
 * every thread from the leader (threadPlan): a namespace a thread made for its children, and one a
 * leader made while some of its threads stay in its own, is made once the threads exist: the thread
 * unshares in its batch, before its credentials, and criu writes the offsets (threadsForChildren);
 * the tasks in it enter it in their own restore before their threads (beforeTaskState), so after
 * the maker's in the images' order. Two threads sharing a namespace for children other than by
 * being cloned by the leader after its unshare (a thread that unshared, then cloned another) are
 * refused at dump.
 * A namespace's offsets are read at the dump through a thread whose children are born in it
 * (/proc/TID/timens_offsets shows those); for one that none makes its children in (each task in it
 * unshared again), a helper process enters it (setns on an fd of ours) and shows them in its own
 * (offsetsFromInside).
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
import { RemoteThread } from "../../ffi/remote.ts";
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
import { withSleepHelper } from "./sleep_helper.ts";
import type { ThreadsPidForChildren } from "./pidns.ts";
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

/** The time namespace thread `tid` is in and the one its children are born in; none once it ended. */
function threadLinksOf(tid: number): { own: string; forChildren: string } | undefined {
  try {
    return {
      own: Deno.readLinkSync(`/proc/${tid}/ns/time`),
      forChildren: Deno.readLinkSync(`/proc/${tid}/ns/time_for_children`),
    };
  } catch {
    return undefined;
  }
}

/**
 * For the core image of thread `tid` (not a leader): the id of the time namespace its next children
 * are born in, when that is not its own (it unshared, or the thread that cloned it had); else undefined.
 */
export function threadTimeForChildrenId(nsIds: NamespaceIds, tid: number): number | undefined {
  const known = surveys.get(nsIds);
  if (known) {
    const link = known.byThread.get(tid);
    return link === undefined ? undefined : nsIds.idOfLink(link);
  }
  const links = threadLinksOf(tid);
  return links && links.forChildren !== links.own ? nsIds.idOfLink(links.forChildren) : undefined;
}

/**
 * How the threads of a task come to make their children where they do (`own`: the task's namespace,
 * `leader`: the leader's time_for_children, `threads`: each other thread's; links or ids). The
 * restore clones every thread from its leader, and a thread shares its creator's time_for_children
 * when cloned: the leader makes its namespace for children before its threads (`leaderFirst`) when
 * none of them makes its children in the task's own namespace, else after them; each thread whose
 * namespace for children is not the one it was cloned with then unshares itself (`unsharing`, indices
 * in `threads`).
 */
function threadPlan<T>(
  own: T,
  leader: T,
  threads: readonly T[],
): { leaderFirst: boolean; unsharing: number[] } {
  const leaderFirst = leader !== own && threads.every((f) => f !== own);
  const cloned = leaderFirst ? leader : own;
  return { leaderFirst, unsharing: threads.flatMap((f, i) => f === cloned ? [] : [i]) };
}

/** A thread (a leader: its task's pid) whose children are born in a namespace other than its own. */
interface Maker {
  pid: number;
  tid: number;
}

/**
 * Where the live tasks and their threads are: each task's links, the one thread that made each
 * namespace it holds for its children only (by link; threadPlan), and a task in each namespace (by
 * link). A thread's own namespace is its leader's (see the top); its time_for_children may differ.
 */
interface Survey {
  tasks: { t: FrozenTask; links: { own: string; forChildren: string } }[];
  makers: Map<string, Maker>;
  members: Map<string, number>;
  /** The namespace each thread other than a leader makes its children in, where not its own. */
  byThread: Map<number, string>;
}

const surveys = new WeakMap<NamespaceIds, Survey>();

function survey(tree: FrozenTree, nsIds: NamespaceIds): Survey {
  const known = surveys.get(nsIds);
  if (known) return known;
  const out: Survey = { tasks: [], makers: new Map(), members: new Map(), byThread: new Map() };
  const addMaker = (link: string, m: Maker) => {
    const other = out.makers.get(link);
    if (other !== undefined) {
      refuse(
        m.pid,
        `time namespace for children ${link}`,
        `thread ${other.tid} of process ${other.pid} also makes its children in it from another time namespace; criu-ts clones every thread from its leader, so only the thread that unshared it (with the threads it cloned after, if it is the leader and none of its threads makes its children in its own namespace) can be restored so`,
      );
    }
    out.makers.set(link, m);
  };
  for (const t of tree.tasks) {
    const links = linksOf(nsIds, t);
    if (!links) continue;
    out.tasks.push({ t, links });
    if (!out.members.has(links.own)) out.members.set(links.own, t.pid);
    if (links.forChildren !== links.own) addMaker(links.forChildren, { pid: t.pid, tid: t.pid });
    const threads: { tid: number; forChildren: string }[] = [];
    for (const tid of t.threads) {
      if (tid === t.pid) continue;
      const theirs = threadLinksOf(tid);
      if (!theirs) continue; // the thread ended meanwhile
      if (theirs.own !== links.own) {
        refuse(
          t.pid,
          `the time namespace ${theirs.own} of thread ${tid}`,
          `it differs from its leader's (${links.own})`,
        );
      }
      threads.push({ tid, forChildren: theirs.forChildren });
      if (theirs.forChildren !== theirs.own) out.byThread.set(tid, theirs.forChildren);
    }
    const plan = threadPlan(links.own, links.forChildren, threads.map((th) => th.forChildren));
    for (const i of plan.unsharing) addMaker(threads[i]!.forChildren, { pid: t.pid, tid: threads[i]!.tid });
  }
  surveys.set(nsIds, out);
  return out;
}

/** Refuses the ways of sitting in time namespaces the restore cannot repeat (see the top). */
function checkTimeNamespaces(tree: FrozenTree, nsIds: NamespaceIds): void {
  survey(tree, nsIds);
}

/** Writes timens-ID.img of the namespace with link `link`: its clocks now, read through a thread making its children in it. */
function saveNamespace(ctx: NsDumpContext, nsIds: NamespaceIds, link: string, id: number): void {
  const { tasks, makers, members } = survey(ctx.tree, nsIds);
  const reader = makers.get(link)?.tid ?? tasks.find(({ links }) => links.forChildren === link)?.t.pid;
  let theirs: Offsets;
  if (reader !== undefined) {
    theirs = offsetsOf(reader);
    ctx.log.debug(`Saved time namespace ${id} (${link}) through thread ${reader}`);
  } else {
    // Every task in it unshared since: a helper of ours enters it to read them.
    const member = members.get(link);
    if (member === undefined) refuse(ctx.pid, `time namespace ${link}`, "no process of the tree is in it");
    theirs = offsetsFromInside(member, link);
    ctx.log.debug(`Saved time namespace ${id} (${link}) from inside, through process ${member}'s`);
  }
  const host = hostClocks();
  ctx.dir.write(KINDS.TIMENS, id, [
    create(timens_entrySchema, {
      monotonic: timespec(host.monotonic + theirs.monotonic),
      boottime: timespec(host.boottime + theirs.boottime),
    }),
  ]);
}

/**
 * The offsets of the time namespace `pid` is in, which no thread makes its children in: a helper
 * process (coreutils' sleep, which never runs its own code once seized) enters it by a remote
 * setns on an fd of ours, so its own time_for_children is that namespace, then ends.
 */
function offsetsFromInside(pid: number, link: string): Offsets {
  const NS_FD = 3;
  const nsFd = openFd(`/proc/${pid}/ns/time`, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    return withSleepHelper("Reading a time namespace from inside", { [NS_FD]: nsFd }, (helper, syscallAt) => {
      RemoteThread.enter(helper, syscallAt).call("setns(CLONE_NEWTIME)", NR.setns, NS_FD, CLONE.NEWTIME);
      const entered = Deno.readLinkSync(`/proc/${helper}/ns/time_for_children`);
      if (entered !== link) {
        throw new Error(`The time namespace reader entered ${entered}, not process ${pid}'s ${link}`);
      }
      return offsetsOf(helper);
    });
  } finally {
    closeFd(nsFd);
  }
}

/** The namespaces threads made for their children that no task is in yet (`dump` saves the others). */
function saveForChildrenOnly(ctx: NsDumpContext): void {
  const nsIds = needIds(ctx);
  const criu = nsIds.linksOf(Deno.pid).get("time");
  const { makers, members } = survey(ctx.tree, nsIds);
  for (const link of makers.keys()) {
    if (link === criu || members.has(link)) continue;
    saveNamespace(ctx, nsIds, link, nsIds.idOfLink(link));
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
  writeOffsets(agent.pid, saved);
}

/** Sets the offsets of the namespace thread `tid` unshared for its children: clocks going on from `saved`. */
function writeOffsets(tid: number, saved: timens_entry): void {
  const host = hostClocks();
  const monotonic = nanoseconds(saved.monotonic, "monotonic") - host.monotonic;
  const boottime = nanoseconds(saved.boottime, "boottime") - host.boottime;
  writeSmallFile(
    `/proc/${tid}/timens_offsets`,
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
  /** The threads (index in the task's cores) that unshare once they exist, and the namespace each makes. */
  threads: { index: number; forChildren: number }[];
  /** The leader makes its namespace for children once its threads exist (some are in its own). */
  leaderLate: boolean;
}

/** The thread that made a namespace for its children only: `index` in its task's cores, the leader 0. */
interface MadeBy {
  p: Placed;
  index: number;
}

/**
 * Puts every task in its time namespace (see the top): once the tree is forked in the root's,
 * tasks in the order of the images, each namespace made before the first task that enters it.
 * A namespace a thread made for its children (a leader too, when some of its threads make theirs in
 * its own namespace: threads are cloned with their creator's time_for_children) is made once the
 * thread exists, in its batch (threadsForChildren); a task in such a namespace, or in one a task
 * there makes, enters it in its own restore, before its threads (beforeTaskState), so after the
 * maker's.
 */
class TimePlacement {
  /** What criu opens to enter each namespace that exists, by id. */
  readonly #where = new Map<number, string>();
  readonly #state = new Map<RestoreTaskImages, "busy" | "done">();
  /** The thread that made each namespace for its children only (not in it itself), by id. */
  readonly #makers = new Map<number, MadeBy>();
  readonly #byTask = new Map<RestoreTaskImages, Placed>();
  #agents: ReadonlyMap<number, Agent> = new Map();

  constructor(
    private readonly placed: readonly Placed[],
    private readonly rootId: number,
    private readonly criuId: number | undefined,
    private readonly saved: ReadonlyMap<number, timens_entry>,
    private readonly log: Log,
  ) {
    for (const p of placed) {
      this.#byTask.set(p.t, p);
      if (p.forChildren !== p.own) this.#makers.set(p.forChildren, { p, index: 0 });
      for (const th of p.threads) this.#makers.set(th.forChildren, { p, index: th.index });
    }
  }

  /** Whether namespace `id` is made by a thread once its process's threads exist. */
  #late(id: number): boolean {
    const m = this.#makers.get(id);
    return m !== undefined && (m.index > 0 || m.p.leaderLate);
  }

  /** Whether `p` is placed in its own restore: its namespace is made late, or by a task that is. */
  #deferred(p: Placed, seen = new Set<Placed>()): boolean {
    if (p.own === this.rootId || seen.has(p)) return false;
    seen.add(p);
    if (this.#late(p.own)) return true;
    const maker = this.#makers.get(p.own);
    return maker !== undefined && this.#deferred(maker.p, seen);
  }

  placeAll(agents: ReadonlyMap<number, Agent>): void {
    this.#agents = agents;
    const root = this.placed[0]!.t;
    this.#where.set(this.rootId, `/proc/${root.hostPid}/ns/time`);
    if (this.criuId !== undefined && !this.#where.has(this.criuId)) {
      this.#where.set(this.criuId, "/proc/self/ns/time");
    }
    for (const p of this.placed) if (!this.#deferred(p)) this.#place(p);
  }

  /** In `t`'s restore, before its threads: a task placed late enters (or makes) its namespace now. */
  placeLate(t: RestoreTaskImages): void {
    const p = this.#byTask.get(t);
    if (p && this.#deferred(p)) this.#place(p);
  }

  #place(p: Placed): void {
    const state = this.#state.get(p.t);
    if (state === "done") return;
    const who = `process ${p.t.entry.pid}`;
    if (state === "busy") {
      throw new RestoreError(
        `The time namespaces of ${who} and of the ones that made them wait on each other (ids images)`,
      );
    }
    this.#state.set(p.t, "busy");
    const agent = this.#agents.get(p.t.entry.pid);
    if (!agent) throw new RestoreError(`No task was made for ${who}`);
    if (p.own !== this.rootId) {
      const maker = this.#where.has(p.own) ? undefined : this.#makers.get(p.own);
      if (maker && this.#late(p.own)) {
        throw new RestoreError(
          `Process ${p.t.entry.pid} is in time namespace ${p.own}, which thread ${
            maker.p.t.cores[maker.index]?.tid
          } of process ${maker.p.t.entry.pid} made for its children, but the namespace is not made yet (pstree.img lists the process first)`,
        );
      }
      if (maker) this.#place(maker.p);
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
    if (p.forChildren !== p.own && !p.leaderLate) {
      this.log.debug(`Process ${p.t.entry.pid} makes time namespace ${p.forChildren} for its children`);
      makeForChildren(agent, this.saved.get(p.forChildren)!, `time namespace ${p.forChildren} in ${who}`);
      this.#where.set(p.forChildren, `/proc/${p.t.hostPid}/ns/time_for_children`);
    }
    this.#state.set(p.t, "done");
  }

  /**
   * The namespaces `t`'s threads make for their children once they exist: an unshare in each one's
   * batch (before its credentials), then criu writes the offsets (threadsForChildren).
   */
  threadsOf(t: RestoreTaskImages): { index: number; id: number }[] {
    const p = this.#byTask.get(t);
    if (!p) return [];
    const out = p.threads.map((th) => ({ index: th.index, id: th.forChildren }));
    if (p.leaderLate) out.unshift({ index: 0, id: p.forChildren });
    return out;
  }

  /** Thread `tid` unshared namespace `id`: its offsets are set, and tasks placed late may enter it. */
  madeByThread(tid: number, id: number): void {
    writeOffsets(tid, this.saved.get(id)!);
    this.#where.set(id, `/proc/${tid}/ns/time_for_children`);
    this.log.debug(`Thread ${tid} made time namespace ${id} for its children`);
  }
}

/**
 * Where the live tasks' time namespaces are, checked against the images; undefined when every
 * task and thread is in the root's and makes its children there.
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
    const forChildren = t.ids?.timeForChildrenNsId || own;
    const theirs = t.cores.slice(1).map((c) => c.core.threadCore?.timeForChildrenNsId || own);
    const plan = threadPlan(own, forChildren, theirs);
    const threads = plan.unsharing.map((i) => ({ index: i + 1, forChildren: theirs[i]! }));
    placed.push({ t, own, forChildren, threads, leaderLate: forChildren !== own && !plan.leaderFirst });
  }
  if (placed.every((p) => p.own === rootId && p.forChildren === rootId && !p.threads.length)) {
    return undefined;
  }
  const saved = new Map<number, timens_entry>();
  const makers = new Map<number, string>();
  for (const p of placed) {
    const who = `Process ${p.t.entry.pid}`;
    const made = [
      ...(p.forChildren !== p.own ? [{ id: p.forChildren, by: `process ${p.t.entry.pid}` }] : []),
      ...p.threads.map((th) => ({
        id: th.forChildren,
        by: `thread ${p.t.cores[th.index]!.tid} of process ${p.t.entry.pid}`,
      })),
    ];
    for (const { id, by } of made) {
      if (id === rootId || id === criuId || makers.has(id)) {
        throw new RestoreError(
          `In the images of process ${p.t.entry.pid}, ${by} makes its children in time namespace ${id}, which it cannot have made: it is ${
            makers.get(id) ?? "the root's or criu's"
          }`,
        );
      }
      makers.set(id, `${by}'s too`);
    }
    for (const id of [p.own, ...made.map((m) => m.id)]) {
      if (id === rootId || id === criuId || saved.has(id)) continue;
      saved.set(id, readSaved(dir, id, who));
    }
  }
  return new TimePlacement(placed, rootId, criuId, saved, log);
}

/** The placement of the restore under way (set by prepareRestore): threadsForChildren reads it. */
let placing: TimePlacement | undefined;

/**
 * In a task's restore, once its threads exist (task.ts): each thread that made a time namespace for
 * its children unshares again, before its credentials (and the leader before its seccomp filter,
 * which may forbid it), and criu writes the new namespace's offsets before any task enters it. The
 * leader does so at once; every other thread in its batch, added to `others` (where the threads
 * make their children in other kinds of namespace), and criu writes those offsets once the batches
 * ran (`close`).
 */
export function threadsForChildren(
  others: ThreadsPidForChildren,
  t: RestoreTaskImages,
  agent: Agent,
  hostTids: readonly number[],
): ThreadsPidForChildren {
  const made = placing?.threadsOf(t) ?? [];
  if (!made.length) return others;
  const leader = made.find((m) => m.index === 0);
  if (leader) {
    agent.call(`unshare(CLONE_NEWTIME) for time namespace ${leader.id}`, NR.unshare, CLONE.NEWTIME);
    placing!.madeByThread(agent.pid, leader.id);
  }
  const late = made.filter((m) => m.index > 0);
  if (!late.length) return others;
  const tidOf = (index: number) => hostTids[index - 1]!;
  return {
    callsOf: (i) => [
      ...others.callsOf(i),
      ...late.filter((m) => m.index === i).map((m) => ({
        name: `unshare(CLONE_NEWTIME) in thread ${tidOf(i)} for time namespace ${m.id}`,
        nr: NR.unshare,
        args: [CLONE.NEWTIME],
      })),
    ],
    close() {
      others.close();
      for (const m of late) placing!.madeByThread(tidOf(m.index), m.id);
    },
  };
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
    placing = undefined;
    const root = ctx.tasks[0]!;
    const criuId = criuNamespace(ctx.dir);
    const rootId = ctx.id ?? criuId;
    // No image for the root's namespace: it stays in criu's (CRIU writes none there either).
    const rootSaved = ctx.id !== undefined && ctx.dir.has(KINDS.TIMENS, ctx.id)
      ? readSaved(ctx.dir, ctx.id, `Process ${root.entry.pid}`)
      : undefined;
    const nested = rootId === undefined ? undefined : planNested(ctx.dir, ctx.tasks, rootId, criuId, ctx.log);
    placing = nested;
    if (!rootSaved && !nested) return undefined;
    return {
      ...(rootSaved && {
        inCreator: (creator: Agent) =>
          makeAndEnter(creator, rootSaved, `the root's time namespace ${ctx.id}`),
        // The creator enters it as well, so a root made first (--restore-sibling) makes it for itself.
        inCreatorTakesItself: true,
      }),
      ...(!rootSaved && { onlyBelowRoot: true }),
      ...(nested && {
        afterForking: (agents: ReadonlyMap<number, Agent>) => nested.placeAll(agents),
        beforeTaskState: (t: RestoreTaskImages) => nested.placeLate(t),
      }),
    };
  },
});
