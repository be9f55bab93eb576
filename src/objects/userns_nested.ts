/**
 * User namespaces nested below the root's (a task that unshared CLONE_NEWUSER inside a container,
 * or below a root in criu's user namespace), which CRIU 4.2 refuses to dump ("Can't dump nested
 * user namespace"). Each is saved as the root's
 * is, in userns-ID.img, with the maps criu reads from its own namespace. At dump, the first task in
 * each (parents first) must have made it below its parent process's user namespace (NS_GET_PARENT
 * says so): that is the namespace it is made below again.
 *
 * At restore every task is forked in the root's user namespace (or joins it once forked), so that
 * parents can give their children their pids. Then, before any task's state comes back:
 *   - holders make the nested namespaces: a first holder, cloned from the helper, enters the
 *     root's user namespace (unless that is criu's); each nested namespace is made by a holder cloned with CLONE_NEWUSER
 *     from the holder of the namespace above, which then writes its maps (the kernel takes them
 *     only from a task of the namespace above with CAP_SETUID there, with ids as that namespace
 *     sees them: the saved ones, criu's, are turned through the saved maps of the one above);
 *   - each task enters its own by setns, through an fd of its holder's namespace that criu hands
 *     it, once its files are back (it takes fds from tasks of the root's namespace, which a task
 *     of a namespace below may not) and before its threads and credentials (setns of a user
 *     namespace is only for a task alone in its mm and fs_struct, with every capability there).
 * Network, UTS, IPC and mount namespaces a task made in its nested namespace are made inside that
 * one when the task is forked, so that it owns them again (NS_GET_USERNS): the holders are then made
 * at that point already, and a short-lived one in the parent's mount namespace enters the nested
 * user namespace and unshares them for the task (ns_holder.ts, giveNamespacesOwnedBy).
 * The holders end with the restore; a failed one kills them with every task.
 */
import { create } from "@bufbuild/protobuf";
import { type uid_gid_extent, uid_gid_extentSchema, type userns_entry } from "../images/gen/userns_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import type { RestoreTaskImages } from "../restore/images.ts";
import type { Agent } from "../agent.ts";
import type { Log } from "../log.ts";
import { AT_FDCWD, CLONE, NR, O } from "../../ffi/syscalls.ts";
import { CLONE_ARGS_SIZE, cloneArgs } from "../../ffi/structs.ts";
import * as pt from "../../ffi/ptrace.ts";
import { killAndReap, type PuppetMaster } from "../restore/puppet.ts";
import { NamespaceHolder } from "../restore/ns_holder.ts";
import { closeFd, openFd } from "../../ffi/fd.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { RestoreError } from "../errors.ts";
import { enterNamespaceFd } from "./namespaces.ts";
import { takeFromCriu } from "./files.ts";

interface Nested {
  /** The user namespace (ids image id) it was made below. */
  parent: number;
  uidMap: uid_gid_extent[];
  gidMap: uid_gid_extent[];
}

export class NestedUserNamespaces {
  private constructor(
    private readonly tasks: readonly RestoreTaskImages[],
    private readonly rootId: number,
    private readonly nested: ReadonlyMap<number, Nested>,
    /** The root's user namespace is criu's: the first holder stays in it. */
    private readonly rootInCriu: boolean,
  ) {}

  /** PREPARE: reads the nested namespaces' maps; undefined when every task is in the root's. */
  static prepare(
    dir: ImageDir,
    tasks: readonly RestoreTaskImages[],
    rootId: number,
    rootMaps: userns_entry,
    rootInCriu: boolean,
  ): NestedUserNamespaces | undefined {
    const saved = new Map<number, userns_entry>([[rootId, rootMaps]]);
    const nested = new Map<number, Nested>();
    for (const t of tasks) {
      const id = userNsOf(t);
      if (id === undefined || saved.has(id)) continue;
      const parent = tasks.find((p) => p.entry.pid === t.entry.ppid && p !== t);
      const parentId = parent && userNsOf(parent);
      if (parentId === undefined || !saved.has(parentId)) {
        throw new RestoreError(
          `Process ${t.entry.pid} is in user namespace ${id}, which its parent's is not above in the images`,
        );
      }
      const maps = readMaps(dir, id, t.entry.pid);
      const above = saved.get(parentId)!;
      saved.set(id, maps);
      nested.set(id, {
        parent: parentId,
        uidMap: relativeTo(maps.uidMap, above.uidMap, `the uid map of userns-${id}.img`),
        gidMap: relativeTo(maps.gidMap, above.gidMap, `the gid map of userns-${id}.img`),
      });
    }
    return nested.size > 0 ? new NestedUserNamespaces(tasks, rootId, nested, rootInCriu) : undefined;
  }

  /** Whether task `t` is in a nested user namespace. */
  holds(t: RestoreTaskImages): boolean {
    const id = userNsOf(t);
    return id !== undefined && this.nested.has(id);
  }

  /** Whether makeNamespaces has run. */
  get made(): boolean {
    return this.#holders.length > 0;
  }

  /**
   * Once the tree is forked, or when a task forked before needs one (the helper still there): the
   * holders make every nested namespace. `inRoots`: a task in the root's user namespace (criu's
   * pid; none when that is criu's).
   */
  makeNamespaces(master: PuppetMaster, inRoots: number | undefined, log: Log): void {
    const base = NamespaceHolder.start(master, 0n, log);
    this.#holders.push(base.pid);
    const baseAgent = master.agentFor(base.pid);
    if (!this.rootInCriu) {
      if (inRoots === undefined) throw new RestoreError("No task is in the root's user namespace yet");
      enterUserNs(baseAgent, inRoots, "the first namespace holder");
    }
    const holderAgents = new Map<number, Agent>([[this.rootId, baseAgent]]);
    for (const [id, ns] of this.nested) {
      const above = holderAgents.get(ns.parent)!;
      const holder = cloneHolder(master, above, id);
      log.info(`Namespace holder ${holder} of user namespace ${id}`);
      this.#holders.push(holder);
      this.#holderOf.set(id, holder);
      writeMaps(above, holder, id, ns);
      holderAgents.set(id, master.agentFor(holder));
    }
  }

  /** The holder of task `t`'s nested namespace (criu's pid), once made. */
  holderOf(t: RestoreTaskImages): number {
    const id = userNsOf(t);
    const holder = id === undefined ? undefined : this.#holderOf.get(id);
    if (holder === undefined) {
      throw new RestoreError(`No holder of the user namespace of process ${t.entry.pid}`);
    }
    return holder;
  }

  /** Task `t`, its files back, enters its nested namespace (before its threads and credentials). */
  enter(t: RestoreTaskImages, agent: Agent): void {
    const id = userNsOf(t);
    const holder = id === undefined ? undefined : this.#holderOf.get(id);
    if (holder === undefined) return;
    const ours = openFd(`/proc/${holder}/ns/user`, O.RDONLY | O.CLOEXEC);
    let fd: number;
    try {
      fd = takeFromCriu({ agent }, ours);
    } finally {
      closeFd(ours);
    }
    enterNamespaceFd(agent, fd, CLONE.NEWUSER, `Process ${t.entry.pid} cannot enter its user namespace`);
  }

  /** Once every task is in its namespace for good: the holders end. */
  release(master: PuppetMaster): void {
    const holders = this.#holders.splice(0);
    for (const pid of holders) {
      const at = master.created.indexOf(pid);
      if (at >= 0) master.created.splice(at, 1);
    }
    killAndReap(holders);
  }

  readonly #holders: number[] = [];
  readonly #holderOf = new Map<number, number>();
}

function userNsOf(t: RestoreTaskImages): number | undefined {
  return t.zombie || t.helper ? undefined : t.ids?.userNsId;
}

function readMaps(dir: ImageDir, id: number, pid: number): userns_entry {
  if (!dir.has(KINDS.USERNS, id)) {
    throw new RestoreError(`Process ${pid} is in user namespace ${id}, but there is no userns-${id}.img`);
  }
  const [maps] = dir.read<userns_entry>(KINDS.USERNS, id);
  if (!maps || maps.uidMap.length === 0 || maps.gidMap.length === 0) {
    throw new RestoreError(`userns-${id}.img has no uid map or no gid map`);
  }
  return maps;
}

/**
 * Extents whose lower ids are criu's turned into ids of the namespace whose own map (also to
 * criu's ids) is `above`; an extent spanning several of the parent's is split.
 */
export function relativeTo(
  extents: readonly uid_gid_extent[],
  above: readonly uid_gid_extent[],
  what: string,
): uid_gid_extent[] {
  const out: uid_gid_extent[] = [];
  for (const e of extents) {
    for (let done = 0; done < e.count;) {
      const lower = e.lowerFirst + done;
      const p = above.find((x) => lower >= x.lowerFirst && lower - x.lowerFirst < x.count);
      if (!p) throw new RestoreError(`${what}: id ${lower} is not mapped in the namespace above`);
      const n = Math.min(e.count - done, p.lowerFirst + p.count - lower);
      out.push(
        create(uid_gid_extentSchema, {
          first: e.first + done,
          lowerFirst: p.first + lower - p.lowerFirst,
          count: n,
        }),
      );
      done += n;
    }
  }
  return out;
}

/** A task in criu's PID namespace enters the user namespace of task `pid` (criu's pid). */
function enterUserNs(agent: Agent, pid: number, what: string): void {
  const pidfd = agent.call("pidfd_open(root)", NR.pidfd_open, pid, 0);
  enterNamespaceFd(agent, pidfd, CLONE.NEWUSER, `${what} cannot enter the root's user namespace`);
}

/**
 * A holder of nested namespace `id`, cloned with CLONE_NEWUSER by the holder of the one above. That
 * one, in a user namespace below criu's, may not choose the pid (set_tid): a holder born at a pid of
 * the tree (a thread made later) is ended and made again at another (TreePids.createOutside).
 */
function cloneHolder(master: PuppetMaster, above: Agent, id: number): number {
  return master.treePids.createOutside(
    `the holder of user namespace ${id}`,
    () => cloneHolderOnce(master, above, id),
    (pid) => {
      master.created.splice(master.created.indexOf(pid), 1);
      killAndReap([pid]);
    },
  );
}

function cloneHolderOnce(master: PuppetMaster, above: Agent, id: number): number {
  above.reset();
  const flags = BigInt(CLONE.NEWUSER | CLONE.PARENT);
  const args = above.alloc(CLONE_ARGS_SIZE, cloneArgs({ flags, exitSignal: 0 }));
  const r = above.attempt(`clone3(holder of user namespace ${id})`, NR.clone3, args, CLONE_ARGS_SIZE);
  if (isSyscallError(r)) {
    throw new RestoreError(`Cannot make user namespace ${id}: ${r.message}`, r.errno, { cause: r });
  }
  const child = above.thread.children.pop()?.pid;
  if (child === undefined) throw new RestoreError(`No clone event for the holder of user namespace ${id}`);
  master.created.push(child);
  const st = pt.wait(child);
  if (st?.kind !== "stopped") throw new RestoreError(`Holder ${child} did not stop (${st?.kind})`);
  return child;
}

/** The holder of the namespace above writes the maps of `holder`'s (both see criu's /proc). */
function writeMaps(above: Agent, holder: number, id: number, ns: Nested): void {
  for (const [which, extents] of [["uid_map", ns.uidMap], ["gid_map", ns.gidMap]] as const) {
    above.reset();
    const text = extents.map((e) => `${e.first} ${e.lowerFirst} ${e.count}`).join("\n") + "\n";
    const path = above.string(`/proc/${holder}/${which}`);
    const fd = above.call(`open(/proc/${holder}/${which})`, NR.openat, AT_FDCWD, path, O.WRONLY | O.CLOEXEC);
    try {
      const bytes = new TextEncoder().encode(text);
      const buf = above.alloc(bytes.length, bytes);
      const r = above.attempt(`write(${which})`, NR.write, fd, buf, bytes.length);
      if (isSyscallError(r) || Number(r) !== bytes.length) {
        throw new RestoreError(
          `Cannot write the ${which} of userns-${id}.img: ${isSyscallError(r) ? r.message : "short write"}`,
        );
      }
    } finally {
      above.call("close", NR.close, fd);
    }
  }
}
