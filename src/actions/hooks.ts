/**
 * Hooks: the moments of a dump or restore at which action scripts run (or, over RPC, the client
 * is notified). A hook that fails aborts the operation; the caller undoes what it did.
 */

export type HookName =
  | "pre-dump"
  | "post-dump"
  | "pre-restore"
  | "post-restore"
  | "network-lock"
  | "network-unlock"
  | "setup-namespaces"
  | "post-setup-namespaces"
  | "pre-resume"
  | "post-resume"
  | "orphan-pts-master"
  | "status-ready";

export interface Hooks {
  /** Runs every script for `hook`; throws when one fails. `pid` is the root task's, when there is one. */
  run(hook: HookName, pid?: number): void;
  /**
   * Hands `fd` to the RPC client with the notification of `hook` (CRIU does this for
   * orphan-pts-master only); the client must agree. Absent when no client takes notifications:
   * the caller then does without.
   */
  sendFd?(hook: HookName, fd: number): void;
}

export const noHooks: Hooks = { run() {} };
