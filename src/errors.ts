/** Named errors of criu-ts. Commands turn them into a message and exit status 1. */

/** A dump cannot go on; the tree is resumed before this reaches the user. */
export class DumpError extends Error {
  override name = "DumpError";
  /** The errno that best says what went wrong (RPC clients get it as cr_errno), or 0. */
  constructor(message: string, readonly errno = 0, options?: ErrorOptions) {
    super(message, options);
  }
}

/** A restore cannot go on; everything created is killed before this reaches the user. */
export class RestoreError extends Error {
  override name = "RestoreError";
  /** The errno that best says what went wrong (RPC clients get it as cr_errno), or 0. */
  constructor(message: string, readonly errno = 0, options?: ErrorOptions) {
    super(message, options);
  }
}

/** An object of a task that criu-ts (or a plugin) cannot dump, named for the user. */
export class UnsupportedObjectError extends DumpError {
  override name = "UnsupportedObjectError";
  constructor(readonly pid: number, readonly object: string, readonly why: string) {
    super(`Cannot dump ${object} of process ${pid}: ${why}`);
  }
}

/** An option or request that asks for something this build does not do. */
export class NotSupportedError extends Error {
  override name = "NotSupportedError";
}

/** A plugin failed to load, or failed the operation (src/plugins/plugins.ts). */
export class PluginError extends Error {
  override name = "PluginError";
  /** The errno CRIU's callers would see, when a hook gave one. */
  constructor(message: string, readonly errno = 0) {
    super(message);
  }
}

export function isCriuError(e: unknown): e is DumpError | RestoreError | NotSupportedError | PluginError {
  return e instanceof DumpError || e instanceof RestoreError || e instanceof NotSupportedError ||
    e instanceof PluginError;
}
