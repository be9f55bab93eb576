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
 *      the network, IPC and UTS namespaces a task below the root makes come from a short-lived
 *      holder cloned by the first one with those flags (giveNamespaces), which it enters;
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

  /**
   * Task `task` (below the root, just cloned in criu's user namespace) gets the namespaces of kinds
   * `flags` it makes itself (ns.cloneFlags) owned by the tree's user namespace, as they were: a
   * short-lived holder cloned from this one (inside that user namespace) is born with those flags,
   * the task enters its namespaces, and it ends. Its pid is none of the tree's, as the holder above
   * may not choose it (TreePids.createOutside).
   */
  giveNamespaces(task: Agent, flags: bigint): void {
    const above = this.master.agentFor(this.pid);
    let sub = 0;
    try {
      sub = this.master.treePids.createOutside(
        "a namespace holder",
        () => cloneBelow(this.master, above, flags),
        (pid) => this.#forget(pid),
      );
    } finally {
      above.thread.leave();
    }
    this.log.info(`Namespace holder ${sub} (clone flags 0x${flags.toString(16)}) for process ${task.pid}`);
    try {
      this.#enterOf(task, sub, flags, "its namespaces");
    } finally {
      this.#forget(sub);
    }
  }

  #forget(pid: number): void {
    const at = this.master.created.indexOf(pid);
    if (at >= 0) this.master.created.splice(at, 1);
    killAndReap([pid]);
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
    this.#enterOf(task, this.pid, flags, what);
  }

  #enterOf(task: Agent, holder: number, flags: bigint, what: string): void {
    const fd = task.call("pidfd_open(namespace holder)", NR.pidfd_open, holder, 0);
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

/** A holder cloned by holder `above` (in the tree's user namespace) with `flags`; any pid. */
function cloneBelow(master: PuppetMaster, above: Agent, flags: bigint): number {
  above.reset();
  const args = above.alloc(
    CLONE_ARGS_SIZE,
    cloneArgs({ flags: flags | BigInt(CLONE.PARENT), exitSignal: 0 }),
  );
  const r = above.attempt("clone3(namespace holder)", NR.clone3, args, CLONE_ARGS_SIZE);
  if (isSyscallError(r)) {
    throw new RestoreError(`Cannot make namespaces in the tree's user namespace: ${r.message}`, r.errno, {
      cause: r,
    });
  }
  const child = above.thread.children.pop()?.pid;
  if (child === undefined) throw new RestoreError("No clone event for a namespace holder");
  master.created.push(child);
  const st = pt.wait(child);
  if (st?.kind !== "stopped") throw new RestoreError(`Namespace holder ${child} did not stop (${st?.kind})`);
  return child;
}
