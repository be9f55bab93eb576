/** What every command gets, whether the command line or a service started it. */
import type { Options } from "./options/options.ts";
import type { Log } from "./log.ts";
import type { Hooks } from "./actions/hooks.ts";

export interface CommandContext {
  options: Options;
  positionals: string[];
  log: Log;
  hooks: Hooks;
}
