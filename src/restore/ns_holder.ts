/**
 * A user namespace made apart from the tree, for a tree of several tasks in a user namespace whose
 * PID namespace is criu's (a rootless-style `unshare -U -n` tree, then forks). Each task must be
 * cloned with its pid by its parent, and clone3's set_tid needs CAP_CHECKPOINT_RESTORE over the PID
 * namespace's owner, criu's user namespace: a parent already inside the new user namespace has no
 * such right. So:
 *   1. a holder task, cloned from the helper at a pid the tree does not need (free_pid.ts; it never
 *      runs), is born with CLONE_NEWUSER and the root's other CLONE_NEW* flags, as the root would be
 *      in a one-task tree: the kernel makes the user namespace first, so the others belong to it as
 *      in the original; criu writes its uid and gid maps (plan.rootCreated, given the holder's pid);
 *   2. the root is cloned in criu's namespaces and enters the holder's network, IPC, UTS and mount
 *      namespaces (setns by pidfd) before its mount tree and memory; children inherit them;
 *   3. every task is cloned with its pid by its parent, all of them still in criu's user namespace;
 *      the network, IPC, UTS and mount namespaces a task below the root makes come from a
 *      short-lived holder that enters the tree's user namespace (and, for a mount namespace, the
 *      parent's first) and unshares them (giveNamespacesOwnedBy), which the task enters; so do
 *      those a task in a user namespace nested below the root's made in it (userns_nested.ts);
 *   4. once the tree is forked, every task enters the holder's user namespace (setns(CLONE_NEWUSER)),
 *      before its threads, credentials and files come back: the kernel takes only a task alone in
 *      its mm and its fs_struct, which each is until then; then the holder is killed.
 * The one-task tree and a tree with a PID namespace of its own keep the root's single clone.
 *
 * Namespaces a root must be born in rather than cloned into (NsRestorePlan.inCreator: a cgroup
 * namespace rooted at the saved prefixes, a time namespace with its clock offsets) are made inside
 * the tree's user namespace, so that it owns them as it did before the dump (NS_GET_USERNS): by the
 * holder, whose namespaces the root then enters with the others, or, when the root's own clone
 * makes the user namespace, by the root itself right after that clone (makeInside). Made by the
 * task the root is cloned from, in criu's user namespace, they would be criu's user namespace's.
 */
import { AT_FDCWD, CLONE, NR, O } from "../../ffi/syscalls.ts";
import { CLONE_ARGS_SIZE, cloneArgs, int32ArrayBytes, INT_SIZE } from "../../ffi/structs.ts";
import * as pt from "../../ffi/ptrace.ts";
import { isSyscallError, type SyscallError } from "../../ffi/errors.ts";
import type { Agent } from "../agent.ts";
import { RestoreError } from "../errors.ts";
import type { Log } from "../log.ts";
import { enterNamespaceFd, type NsRestorePlan } from "../objects/namespaces.ts";
import { killAndReap, type PuppetMaster } from "./puppet.ts";
import { PID_ATTEMPTS } from "./free_pid.ts";
import { closeFd, openFd } from "../../ffi/fd.ts";
import { takeFromCriu } from "../objects/files.ts";

export class NamespaceHolder {
  private constructor(
    /** The holder's pid (criu's PID namespace is the tree's). */
    readonly pid: number,
    /** The CLONE_NEW* flags it was born with, CLONE_NEWUSER among them. */
    private readonly flags: bigint,
    private readonly master: PuppetMaster,
    private readonly log: Log,
  ) {}

  /**
   * Clones the holder from the helper with `flags` (CLONE_NEWUSER and the root's other kinds), at a
   * pid that no task or thread of the tree needs (clone3's set_tid: the helper is in criu's user
   * namespace), the next free one when another process takes the chosen pid first.
   */
  static start(master: PuppetMaster, flags: bigint, log: Log): NamespaceHolder {
    let pid = 0;
    master.inCreator((helper) => {
      let want = master.treePids.nextFree();
      for (let attempt = 0;; attempt++) {
        const r = cloneAt(helper, flags, want);
        if (!isSyscallError(r)) break;
        if (isSyscallError(r, "EEXIST") && attempt < PID_ATTEMPTS) {
          want = master.treePids.nextFree(want);
          continue;
        }
        throw new RestoreError(`Cannot make the user namespace of the tree: ${r.message}`, r.errno, {
          cause: r,
        });
      }
      const child = helper.thread.children.pop()?.pid;
      if (child === undefined) throw new RestoreError("No clone event for the namespace holder");
      master.created.push(child);
      const st = pt.wait(child);
      if (st?.kind !== "stopped") {
        throw new RestoreError(`Namespace holder ${child} did not stop (${st?.kind})`);
      }
      pid = child;
    });
    log.info(`Namespace holder ${pid} (clone flags 0x${flags.toString(16)})`);
    return new NamespaceHolder(pid, flags, master, log);
  }

  /** The CLONE_NEW* flags of namespaces made in the holder after its clone (makeIn). */
  #madeInside = 0n;

  /**
   * Makes the root's namespaces that the root must be born in (plans' inCreator) in the holder,
   * inside the tree's user namespace (its maps written): enterOthers takes the root into them.
   */
  makeIn(master: PuppetMaster, plans: readonly NsRestorePlan[]): void {
    if (!plans.some((p) => p.inCreator)) return;
    const agent = master.agentFor(this.pid);
    try {
      this.#madeInside |= makeInside(agent, plans);
    } finally {
      agent.thread.leave();
    }
  }

  /** The root, just cloned in criu's namespaces, enters the holder's others (not the user one yet). */
  enterOthers(root: Agent): void {
    const others = (this.flags | this.#madeInside) & ~BigInt(CLONE.NEWUSER);
    if (others !== 0n) this.#enter(root, others, "its namespaces");
  }

  /** Every task of the forked tree enters the holder's user namespace; then the holder ends. */
  joinUser(tasks: readonly Agent[]): void {
    for (const task of tasks) this.#enter(task, BigInt(CLONE.NEWUSER), "its user namespace");
    this.release();
  }

  /** Kills the holder (the namespaces live on in the tasks). */
  release(): void {
    const at = this.master.created.indexOf(this.pid);
    if (at < 0) return;
    this.master.created.splice(at, 1);
    killAndReap([this.pid]);
  }

  #enter(task: Agent, flags: bigint, what: string): void {
    const fd = task.call("pidfd_open(namespace holder)", NR.pidfd_open, this.pid, 0);
    try {
      const r = task.attempt("setns(namespace holder)", NR.setns, fd, flags);
      if (isSyscallError(r)) {
        throw new RestoreError(`Process ${task.pid} cannot enter ${what}: ${r.message}`, r.errno, {
          cause: r,
        });
      }
    } finally {
      task.call("close(pidfd)", NR.close, fd);
    }
  }
}

/**
 * Task `task` (below the root, just cloned with none of them) gets its own namespaces of kinds
 * `flags` (ns.cloneFlags) owned by the user namespace task `owner` is in, as they were when it
 * made them there (NS_GET_USERNS): the tree's, which it joins only once forked, or one nested
 * below the root's, which it enters only before its state. A short-lived holder, cloned from the
 * helper at a pid the tree does not need, enters the mount namespace of the task's parent (`parent`,
 * criu's pid: the task's mount namespace starts as a copy of it), then that user namespace, and
 * unshares them; the task enters them (it is capable there: in criu's user namespace or one
 * above), and the holder ends.
 */
export function giveNamespacesOwnedBy(
  master: PuppetMaster,
  log: Log,
  task: Agent,
  parent: number,
  owner: number,
  flags: bigint,
): void {
  const sub = NamespaceHolder.start(master, 0n, log);
  try {
    const agent = master.agentFor(sub.pid);
    try {
      const failure = `The holder of the namespaces of process ${task.pid}`;
      if (flags & BigInt(CLONE.NEWNS)) {
        const fd = agent.call("pidfd_open(parent)", NR.pidfd_open, parent, 0);
        enterNamespaceFd(agent, fd, CLONE.NEWNS, `${failure} cannot enter its parent's mount namespace`);
      }
      const fd = agent.call("pidfd_open(owner)", NR.pidfd_open, owner, 0);
      enterNamespaceFd(agent, fd, CLONE.NEWUSER, `${failure} cannot enter their user namespace`);
      const r = agent.attempt(`unshare(0x${flags.toString(16)})`, NR.unshare, flags);
      if (isSyscallError(r)) {
        throw new RestoreError(`${failure} cannot make them in their user namespace: ${r.message}`, r.errno, {
          cause: r,
        });
      }
    } finally {
      agent.thread.leave();
    }
    const kinds = `0x${flags.toString(16)}`;
    log.info(
      `Holder ${sub.pid} made namespaces ${kinds} in the user namespace of ${owner} for process ${task.pid}`,
    );
    // By fds criu hands over: a task in a PID namespace of its own cannot name the holder.
    for (const [kind, flag] of MADE_INSIDE) {
      if (!(flags & BigInt(flag))) continue;
      const ours = openFd(`/proc/${sub.pid}/ns/${kind}`, O.RDONLY | O.CLOEXEC);
      let fd: number;
      try {
        fd = takeFromCriu({ agent: task }, ours);
      } finally {
        closeFd(ours);
      }
      enterNamespaceFd(task, fd, flag, `Process ${task.pid} cannot enter its ${kind} namespace`);
    }
  } finally {
    sub.release();
  }
}

/** clone3 of a holder from `helper` with `flags`, as pid `pid` of criu's PID namespace. */
function cloneAt(helper: Agent, flags: bigint, pid: number): bigint | SyscallError {
  helper.reset();
  const setTid = helper.alloc(INT_SIZE, int32ArrayBytes([pid]));
  const args = helper.alloc(
    CLONE_ARGS_SIZE,
    cloneArgs({ flags: flags | BigInt(CLONE.PARENT), exitSignal: 0, setTid, setTidSize: 1 }),
  );
  return helper.attempt(`clone3(namespace holder, pid ${pid})`, NR.clone3, args, CLONE_ARGS_SIZE);
}

/** The kinds a task's namespaces may change by inCreator work, with their flags. */
const MADE_INSIDE = [
  ["cgroup", CLONE.NEWCGROUP],
  ["time", CLONE.NEWTIME],
  ["net", CLONE.NEWNET],
  ["ipc", CLONE.NEWIPC],
  ["uts", CLONE.NEWUTS],
  ["mnt", CLONE.NEWNS],
] as const;

/**
 * Runs the plans' inCreator work in `agent`'s task, which is in the tree's user namespace (the
 * holder, or a root whose clone made that namespace), so that what it makes belongs to that user
 * namespace; a time namespace made for its children it then enters itself (a task alone in its mm,
 * which it is). Returns the CLONE_NEW* flags of the kinds whose namespace it changed.
 */
export function makeInside(agent: Agent, plans: readonly NsRestorePlan[]): bigint {
  const before = linksOf(agent.pid);
  for (const plan of plans) {
    if (!plan.inCreator) continue;
    agent.reset();
    plan.inCreator(agent);
  }
  if (Deno.readLinkSync(`/proc/${agent.pid}/ns/time_for_children`) !== before.get("time")) {
    agent.reset();
    const path = agent.string("/proc/self/ns/time_for_children");
    const fd = agent.call("open(time_for_children)", NR.openat, AT_FDCWD, path, O.RDONLY | O.CLOEXEC);
    enterNamespaceFd(
      agent,
      fd,
      CLONE.NEWTIME,
      `Process ${agent.pid} cannot enter the time namespace it made`,
    );
  }
  const after = linksOf(agent.pid);
  let changed = 0n;
  for (const [kind, flag] of MADE_INSIDE) if (after.get(kind) !== before.get(kind)) changed |= BigInt(flag);
  return changed;
}

function linksOf(pid: number): Map<string, string> {
  return new Map(MADE_INSIDE.map(([kind]) => [kind, Deno.readLinkSync(`/proc/${pid}/ns/${kind}`)]));
}
