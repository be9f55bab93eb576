/**
 * Reading options as CRIU does (criu/config.c, parse_options): first a pre-parse of the raw words
 * for -h/--help, --no-default-config and --config; then the config files, then the words
 * themselves, each through getopt_long with the one table; the last setting wins. The command
 * line and RPC (criu_opts.config_file) both read options here.
 */
import { type ConfigEnvironment, configFiles, configFileWords } from "./config.ts";
import { InvalidValue, UsageError } from "./errors.ts";
import { getoptLong, type Occurrence, type Scan } from "./getopt.ts";
import { defaultOptions, type Options } from "./options.ts";
import { appliesTo, type Command, type OptionSpec, supportFor } from "./table.ts";

/** An option's last use: turned on (or off with `--no-NAME`), and how it was spelled. */
export interface OptionUse {
  readonly on: boolean;
  readonly display: string;
}

export interface ReadOptions {
  readonly options: Options;
  /** The words of the command line that are not options: the command and what follows it. */
  readonly positionals: string[];
  /** Messages for the log: options read in an odd way, config values that were ignored. */
  readonly notes: string[];
  /** Every option given, in the order first seen, with its last use. */
  readonly used: Map<OptionSpec, OptionUse>;
  /** -h or -V was reached: nothing after it was read. */
  readonly stopped: boolean;
}

interface PreParse {
  help: boolean;
  noDefaultConfig: boolean;
  config?: string;
}

/**
 * CRIU looks at the raw words before getopt: `-h` or `--help` anywhere means help (even a broken
 * config file must not hide it); `--no-default-config`, `--config FILE` and `--config=FILE` choose
 * the config files. Only these exact spellings count here, as in CRIU.
 */
function preParse(argv: readonly string[]): PreParse {
  const found: PreParse = { help: false, noDefaultConfig: false };
  for (const [i, word] of argv.entries()) {
    if (word === "-h" || word === "--help") return { ...found, help: true };
    if (word === "--no-default-config") found.noDefaultConfig = true;
    const config = word === "--config"
      ? argv[i + 1]
      : word.startsWith("--config=")
      ? word.slice(9)
      : undefined;
    if (config !== undefined) {
      found.config = config;
      found.noDefaultConfig = true;
    }
  }
  return found;
}

/** Stores one occurrence; a bad value becomes a UsageError naming the option. */
function apply(options: Options, { spec, negated, value, display }: Occurrence, notes: string[]): void {
  const note = (message: string) => notes.push(message);
  try {
    if (spec.arg === "none") spec.store(options, !negated, note);
    else if (spec.arg === "optional") spec.store(options, value, note);
    else spec.store(options, value ?? "", note); // getopt never leaves a required argument undefined
  } catch (error) {
    if (!(error instanceof InvalidValue)) throw error;
    throw new UsageError(`Invalid argument for ${display}: expected ${error.expected}, found '${value}'`);
  }
}

/** Reads the config files and the command line (`argv`, without the program name). */
export function readOptions(argv: readonly string[], env: ConfigEnvironment): ReadOptions {
  const options = defaultOptions();
  const notes: string[] = [];
  const used = new Map<OptionSpec, OptionUse>();
  const pre = preParse(argv);
  if (pre.help) {
    options.help = true;
    return { options, positionals: [], notes, used, stopped: true };
  }
  if (pre.config !== undefined) options.config = pre.config;
  options.noDefaultConfig = pre.noDefaultConfig;

  const mode = { posixlyCorrect: env.posixlyCorrect === true };
  const cli = getoptLong(argv, mode);
  const sources: { scan: Scan; where: string }[] = [];
  for (const file of configFiles(options, env)) {
    const text = env.readFile(file.path);
    if (text === undefined) {
      if (file.explicit) notes.push(`Config file ${file.path} does not exist; ignored`);
      continue;
    }
    const words = getoptLong(configFileWords(text, file.path), mode);
    // getopt skips words that are neither options nor their arguments (`verbosity 4` means -v).
    for (const word of words.positionals) {
      notes.push(
        `Config file ${file.path}: ignored '${word}', which is no option's value (write name=value)`,
      );
    }
    sources.push({ scan: words, where: ` (config file ${file.path})` });
  }
  sources.push({ scan: cli, where: "" });

  for (const { scan, where } of sources) {
    for (const occurrence of scan.occurrences) {
      try {
        apply(options, occurrence, notes);
      } catch (error) {
        if (error instanceof UsageError) throw new UsageError(error.message + where);
        throw error;
      }
      // CRIU stops at -h (usage) and -V (prints the version and exits) wherever they appear.
      if (options.help || options.version) return { options, positionals: [], notes, used, stopped: true };
      used.set(occurrence.spec, { on: !occurrence.negated, display: occurrence.display });
    }
    if (scan.error !== undefined) throw new UsageError(scan.error + where);
  }
  noteConfigSpellings(cli, pre, notes);
  return { options, positionals: cli.positionals, notes, used, stopped: false };
}

/** getopt accepts `--conf F` and `--no-default`, but CRIU chooses config files from exact spellings only. */
function noteConfigSpellings(cli: Scan, pre: PreParse, notes: string[]): void {
  const given = new Set(cli.occurrences.map((o) => o.spec.long));
  if (given.has("config") && pre.config === undefined) {
    notes.push("Option --config was shortened: as in CRIU, only --config FILE or --config=FILE reads a file");
  }
  if (given.has("no-default-config") && !pre.noDefaultConfig) {
    notes.push("Option --no-default-config was shortened: as in CRIU, the default config files were read");
  }
}

/**
 * What the options mean for `command`: an option that does not apply to it is ignored and noted
 * (CRIU ignores it silently), one accepted but not acted on yet is noted, and one criu-ts refuses
 * stops the command with a UsageError. `--no-NAME` asks for the default, which is always done.
 */
export function checkSupport(read: ReadOptions, command: Command): void {
  for (const [spec, { on, display }] of read.used) {
    if (!on) continue;
    if (!appliesTo(spec, command)) {
      read.notes.push(`Option ${display} does nothing for ${command}; ignored`);
      continue;
    }
    const { support, reason } = supportFor(spec, command);
    if (support === "refused") {
      const only = spec.supportOn?.[command] !== undefined ? ` for ${command}` : "";
      throw new UsageError(
        `Option ${display} is not supported by criu-ts yet${only}` + (reason ? ` (${reason})` : ""),
      );
    }
    if (support === "accepted-and-logged") {
      read.notes.push(`Option ${display} is accepted but not acted on yet`);
    }
  }
}
