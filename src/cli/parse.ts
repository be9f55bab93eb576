/**
 * The `criu` command line, read as CRIU reads it (glibc getopt_long with argument permutation):
 *
 * - `--name`, `--name=value`, `--name value` (required arguments only), unambiguous prefixes of
 *   long names, and `--no-name` for CRIU's boolean options;
 * - `-x`, bundled `-Rj`, `-tPID` or `-t PID`; an optional argument only attached (`-v4`);
 * - options before or after the command; `--` ends the options;
 * - config files first (see config.ts), the command line last, the last word winning.
 */
import { type ConfigEnvironment, configFiles, configFileWords, systemConfigEnvironment } from "./config.ts";
import { InvalidValue, UsageError } from "./errors.ts";
import {
  type Command,
  COMMANDS,
  defaultOptions,
  OPTION_TABLE,
  type Options,
  type OptionSpec,
} from "./options.ts";

export { isUsageError, UsageError } from "./errors.ts";

export interface ParsedCommandLine {
  /** Undefined only when help or the version was asked for (options.help / options.version). */
  readonly command: Command | undefined;
  /** The words after the command: `swrk 3` gives ["3"]; with --exec-cmd, the command to exec. */
  readonly positionals: string[];
  readonly options: Options;
  /** Messages for the log: options accepted but not acted on, config values that were ignored. */
  readonly notes: string[];
}

/** One option as found in the words, before its value is checked. */
interface Occurrence {
  readonly spec: OptionSpec;
  /** Given as `--no-NAME`. */
  readonly negated: boolean;
  readonly value: string | undefined;
  /** As the user would recognise it: `-t` or `--tree`. */
  readonly display: string;
}

interface Scan {
  readonly occurrences: Occurrence[];
  readonly positionals: string[];
  /**
   * The first malformed word. getopt stops there, but what came before still counts (CRIU prints
   * the version for `-V --bogus`), so the error is raised only when applying reaches it.
   */
  readonly error?: string;
}

const byShort = new Map(OPTION_TABLE.filter((s) => s.short !== "").map((s) => [s.short, s]));

/** Every long spelling, `no-` forms included. */
const longNames = OPTION_TABLE.flatMap((spec) => {
  const names = [{ name: spec.long, spec, negated: false }];
  if (spec.arg === "none" && spec.negatable) names.push({ name: `no-${spec.long}`, spec, negated: true });
  return names;
});

/** Exact match first; otherwise a prefix that names one option only, as getopt_long allows. */
function findLong(name: string): { name: string; spec: OptionSpec; negated: boolean } | string {
  const exact = longNames.find((n) => n.name === name);
  if (exact) return exact;
  const candidates = name === "" ? [] : longNames.filter((n) => n.name.startsWith(name));
  const first = candidates[0];
  if (first === undefined) return `Unknown option --${name}`;
  if (candidates.every((c) => c.spec === first.spec && c.negated === first.negated)) return first;
  return `Ambiguous option --${name}: could be ${candidates.map((c) => `--${c.name}`).join(", ")}`;
}

/** Split words into options and positionals; stop at the first malformed one. */
function scan(words: readonly string[]): Scan {
  const occurrences: Occurrence[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const word = words[i] ?? "";
    if (word === "--") {
      positionals.push(...words.slice(i + 1));
      break;
    }
    if (word === "-" || !word.startsWith("-")) {
      positionals.push(word);
      continue;
    }

    if (word.startsWith("--")) {
      const eq = word.indexOf("=");
      const found = findLong(eq < 0 ? word.slice(2) : word.slice(2, eq));
      if (typeof found === "string") return { occurrences, positionals, error: found };
      const { spec, negated } = found;
      const display = `--${found.name}`;
      let value = eq < 0 ? undefined : word.slice(eq + 1);
      if (spec.arg === "none" && value !== undefined) {
        return { occurrences, positionals, error: `Option ${display} does not take an argument` };
      }
      // A required argument may be the next word, whatever it looks like (getopt does the same).
      if (spec.arg === "required" && value === undefined) value = words[++i];
      if (spec.arg === "required" && value === undefined) {
        return { occurrences, positionals, error: `Option ${display} requires an argument` };
      }
      occurrences.push({ spec, negated, value, display });
      continue;
    }

    // A bundle of short options; one that takes an argument ends the bundle.
    for (let j = 1; j < word.length; j++) {
      const letter = word[j] ?? "";
      const spec = byShort.get(letter);
      const display = `-${letter}`;
      if (spec === undefined) return { occurrences, positionals, error: `Unknown option ${display}` };
      if (spec.arg === "none") {
        occurrences.push({ spec, negated: false, value: undefined, display });
        continue;
      }
      let value: string | undefined = word.slice(j + 1);
      if (value === "") value = spec.arg === "required" ? words[++i] : undefined;
      if (spec.arg === "required" && value === undefined) {
        return { occurrences, positionals, error: `Option ${display} requires an argument` };
      }
      occurrences.push({ spec, negated: false, value, display });
      break;
    }
  }
  return { occurrences, positionals };
}

/** Store one occurrence; a bad value becomes a UsageError naming the option. */
function apply(options: Options, { spec, negated, value, display }: Occurrence): void {
  try {
    if (spec.arg === "none") spec.store(options, !negated);
    else if (spec.arg === "optional") spec.store(options, value);
    else spec.store(options, value ?? ""); // scan() never leaves a required argument undefined
  } catch (error) {
    if (!(error instanceof InvalidValue)) throw error;
    throw new UsageError(`Invalid argument for ${display}: expected ${error.expected}, found '${value}'`);
  }
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
  const options = defaultOptions();
  const notes: string[] = [];

  // Help wins over everything, even a broken config file.
  const beforeDashes = argv.includes("--") ? argv.slice(0, argv.indexOf("--")) : argv;
  if (beforeDashes.some((w) => w === "-h" || w === "--help")) {
    options.help = true;
    return { command: undefined, positionals: [], options, notes };
  }

  const cli = scan(argv);
  for (const { spec, value } of cli.occurrences) {
    if (spec.long === "config") options.config = value ?? "";
    if (spec.long === "no-default-config") options.noDefaultConfig = true;
  }

  const sources: { scan: Scan; where: string }[] = [];
  for (const file of configFiles(options, env)) {
    const text = env.readFile(file.path);
    if (text === undefined) {
      if (file.explicit) notes.push(`Config file ${file.path} does not exist; ignored`);
      continue;
    }
    const words = scan(configFileWords(text, file.path));
    // getopt skips words that are neither options nor their arguments (`verbosity 4` means -v).
    for (const word of words.positionals) {
      notes.push(
        `Config file ${file.path}: ignored '${word}', which is no option's value (write name=value)`,
      );
    }
    sources.push({ scan: words, where: ` (config file ${file.path})` });
  }
  sources.push({ scan: cli, where: "" });

  // Apply in order; the last setting wins. Remember each option's last use for refusal and notes.
  const lastUse = new Map<OptionSpec, { on: boolean; display: string }>();
  for (const { scan, where } of sources) {
    for (const occurrence of scan.occurrences) {
      try {
        apply(options, occurrence);
      } catch (error) {
        if (error instanceof UsageError) throw new UsageError(error.message + where);
        throw error;
      }
      // CRIU stops at -h (usage) and -V (prints the version and exits) wherever they appear.
      if (options.help || options.version) return { command: undefined, positionals: [], options, notes };
      lastUse.set(occurrence.spec, { on: !occurrence.negated, display: occurrence.display });
    }
    if (scan.error !== undefined) throw new UsageError(scan.error + where);
  }

  for (const [spec, { on, display }] of lastUse) {
    if (!on) continue; // `--no-NAME` asks for the default, which we always do
    if (spec.support === "refused") {
      throw new UsageError(
        `Option ${display} is not supported by criu-ts yet` + (spec.reason ? ` (${spec.reason})` : ""),
      );
    }
    if (spec.support === "accepted-and-logged") {
      notes.push(`Option ${display} is accepted but not acted on yet`);
    }
  }

  const [command, positionals] = splitCommand(cli.positionals);
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
