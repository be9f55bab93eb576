/**
 * The `criu` command line, read as CRIU reads it (glibc getopt_long with argument permutation):
 *
 * - `--name`, `--name=value`, `--name value` (required arguments only), unambiguous prefixes of
 *   long names, and `--no-name` for CRIU's boolean options;
 * - `-x`, bundled `-Rj`, `-tPID` or `-t PID`; an optional argument only attached (`-v4`);
 * - options before or after the command; `--` ends the options;
 * - config files first (see config.ts), the command line last, the last word winning.
 *
 * The reading itself is the options module's (src/options/read.ts, getopt.ts), shared with RPC;
 * this file adds what only the command line has: the command word and the words after it.
 */
import { type ConfigEnvironment, systemConfigEnvironment } from "../options/config.ts";
import { UsageError } from "../options/errors.ts";
import type { Options } from "../options/options.ts";
import { checkSupport, readOptions } from "../options/read.ts";
import { type Command, COMMANDS } from "../options/table.ts";

export { isUsageError, UsageError } from "../options/errors.ts";

export interface ParsedCommandLine {
  /** Undefined only when help or the version was asked for (options.help / options.version). */
  readonly command: Command | undefined;
  /** The words after the command: `swrk 3` gives ["3"]; with --exec-cmd, the command to exec. */
  readonly positionals: string[];
  readonly options: Options;
  /** Messages for the log: options accepted but not acted on, config values that were ignored. */
  readonly notes: string[];
}

/** Commands CRIU still recognises only to say they are gone. */
const RETIRED_COMMANDS: Record<string, string> = {
  exec: "The exec command is gone; the Compel library replaced it",
  show: "The show command is gone; use `crit decode -i FILE --pretty` to view an image",
};

/**
 * Parse `criu`'s arguments (without the program name) together with the config files.
 * Throws UsageError for anything CRIU would reject, and for options criu-ts refuses.
 */
export function parseCommandLine(
  argv: readonly string[],
  env: ConfigEnvironment = systemConfigEnvironment(),
): ParsedCommandLine {
  const read = readOptions(argv, env);
  const { options, notes } = read;
  if (read.stopped) return { command: undefined, positionals: [], options, notes };
  const [command, positionals] = splitCommand(read.positionals);
  checkSupport(read, command);
  checkPositionals(command, positionals, options);
  return { command, positionals, options, notes };
}

/** The command is the first positional; `cpuinfo` takes its action from the second. */
function splitCommand(words: readonly string[]): [Command, string[]] {
  const [first, ...rest] = words;
  if (first === undefined) throw new UsageError(`A command is required: one of ${COMMANDS.join(", ")}`);
  const retired = RETIRED_COMMANDS[first];
  if (retired !== undefined) throw new UsageError(retired);
  if (first === "cpuinfo") {
    const action = rest.shift();
    if (action === undefined) throw new UsageError("The cpuinfo command needs an action: dump or check");
    if (action !== "dump" && action !== "check") {
      throw new UsageError(`Unknown cpuinfo action '${action}': expected dump or check`);
    }
    return [`cpuinfo ${action}`, rest];
  }
  const command = COMMANDS.find((c) => c === first);
  if (command === undefined) {
    throw new UsageError(`Unknown command '${first}': expected one of ${COMMANDS.join(", ")}`);
  }
  return [command, rest];
}

/** The same checks on extra words as CRIU makes before it starts a command. */
function checkPositionals(command: Command, positionals: string[], options: Options): void {
  if (command === "swrk") {
    const fd = positionals[0];
    if (positionals.length !== 1 || fd === undefined || !/^\d+$/.test(fd)) {
      throw new UsageError(`Usage: criu swrk FD (found '${positionals.join(" ")}')`);
    }
    return;
  }
  if (options.execCmd) {
    if (command !== "restore") throw new UsageError("Option --exec-cmd is for the restore command only");
    if (positionals.length === 0) throw new UsageError("Option --exec-cmd needs a command after --");
    if (options.restoreDetached) {
      throw new UsageError("Options --exec-cmd and --restore-detached exclude each other");
    }
    return;
  }
  if (positionals.length > 0) {
    throw new UsageError(`Unexpected argument for ${command}: '${positionals.join(" ")}'`);
  }
}
