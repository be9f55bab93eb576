/**
 * From options to the arguments of the dump and restore cores: the one place where that mapping
 * is written, for the command line and RPC alike. The cores get the options frozen (RunOptions)
 * and hand that same object down to every task and object kind; a new option needs no new field
 * anywhere between the table and the code that acts on it.
 */
import type { DumpOptions } from "../dump/dump.ts";
import type { RestoreOptions } from "../restore/restore.ts";
import type { Log } from "../log.ts";
import type { Hooks } from "../actions/hooks.ts";
import { DumpError } from "../errors.ts";
import { freezeOptions, type Options } from "./options.ts";
import type { Plugins } from "../plugins/plugins.ts";

/** What a run needs besides its options: where it logs, and the action-script hooks. */
export interface RunServices {
  log: Log;
  hooks: Hooks;
  /** The plugins loaded for the run (none when absent). */
  plugins?: Plugins;
}

/** CRIU's images directory when none is given: the current one. */
export function imagesDirOf(options: Options): string {
  return options.imagesDir ?? ".";
}

export function dumpArguments(options: Options, services: RunServices): DumpOptions {
  if (options.tree === undefined) throw new DumpError("A dump needs the tree to dump: -t PID");
  return {
    pid: options.tree,
    imagesDir: imagesDirOf(options),
    options: freezeOptions(options),
    log: services.log,
    hooks: services.hooks,
    ...(services.plugins ? { plugins: services.plugins } : {}),
  };
}

export function restoreArguments(options: Options, services: RunServices): RestoreOptions {
  return {
    imagesDir: imagesDirOf(options),
    options: freezeOptions(options),
    log: services.log,
    hooks: services.hooks,
    ...(services.plugins ? { plugins: services.plugins } : {}),
  };
}
