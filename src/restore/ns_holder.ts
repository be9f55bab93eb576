/**
 * A user namespace made apart from the tree, for a tree of several tasks in a user namespace whose
 * PID namespace is criu's (a rootless-style `unshare -U -n` tree, then forks). Each task must be
 * cloned with its pid by its parent, and clone3's set_tid needs CAP_CHECKPOINT_RESTORE over the PID
 * namespace's owner, criu's user namespace: a parent already inside the new user namespace has no
 * such right. So:
 *   1. a holder task, cloned from the helper (any pid, never run), is born with CLONE_NEWUSER and
 *      the root's other CLONE_NEW* flags, as the root would be in a one-task tree: the kernel makes
 *      the user namespace first, so the others belong to it as in the original; criu writes its uid
 *      and gid maps (plan.rootCreated, given the holder's pid);
 *   2. the root is cloned in criu's namespaces and enters the holder's network, IPC, UTS and mount
 *      namespaces (setns by pidfd) before its mount tree and memory; children inherit them;
 *   3. every task is cloned with its pid by its parent, all of them still in criu's user namespace;
 *   4. once the tree is forked, every task enters the holder's user namespace (setns(CLONE_NEWUSER)),
 *      before its threads, credentials and files come back: the kernel takes only a task alone in
 *      its mm and its fs_struct, which each is until then; then the holder is killed.
 * The one-task tree and a tree with a PID namespace of its own keep the root's single clone.
 */
import { CLONE, NR } from "../../ffi/syscalls.ts";
import { CLONE_ARGS_SIZE, cloneArgs, int32ArrayBytes, INT_SIZE } from "../../ffi/structs.ts";
import * as pt from "../../ffi/ptrace.ts";
import { isSyscallError, type SyscallError } from "../../ffi/errors.ts";
import type { Agent } from "../agent.ts";
import { RestoreError } from "../errors.ts";
import type { Log } from "../log.ts";
import { killAndReap, type PuppetMaster } from "./puppet.ts";
import { PID_ATTEMPTS } from "./free_pid.ts";

export class NamespaceHolder {
  private constructor(
    /** The holder's pid (criu's PID namespace is the tree's). */
    readonly pid: number,
    /** The CLONE_NEW* flags it was born with, CLONE_NEWUSER among them. */
    private readonly flags: bigint,
    private readonly master: PuppetMaster,
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
    return new NamespaceHolder(pid, flags, master);
  }

  /** The root, just cloned in criu's namespaces, enters the holder's others (not the user one yet). */
  enterOthers(root: Agent): void {
    const others = this.flags & ~BigInt(CLONE.NEWUSER);
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
