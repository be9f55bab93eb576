/**
 * CRIU's configuration files. Each holds options, one per line, spelled as the long option without
 * its dashes, with an optional value after blanks:
 *
 *     tcp-established
 *     work-dir "/var/lib/criu/my \"work\" dir"   # quoted values may hold blanks and \"
 *     no-restore-sibling
 *
 * A file becomes a list of command-line words (`--tcp-established`, `--work-dir`, `/var/...`) that
 * the ordinary option parser reads, so a config file can say exactly what a command line can.
 *
 * Which files are read, in order (later ones override earlier ones, the command line overrides all):
 * /etc/criu/default.conf and $HOME/.criu/default.conf unless --no-default-config or --config is
 * given, then $CRIU_CONFIG_FILE, then the --config file. A file that does not exist is skipped.
 */
import { UsageError } from "./errors.ts";

export const GLOBAL_CONFIG_FILE = "/etc/criu/default.conf";
/** Relative to $HOME. */
export const USER_CONFIG_FILE = ".criu/default.conf";

/** What config loading needs from the outside world; tests pass their own. */
export interface ConfigEnvironment {
  /** $HOME, or undefined when it is not set. */
  readonly home: string | undefined;
  /** $CRIU_CONFIG_FILE, or undefined when it is not set. */
  readonly configFileEnv: string | undefined;
  /** The file's text, or undefined when it does not exist. */
  readFile(path: string): string | undefined;
  /** POSIXLY_CORRECT is set: getopt then stops at the first word that is not an option. */
  readonly posixlyCorrect?: boolean;
}

/** The real environment and file system. */
export function systemConfigEnvironment(): ConfigEnvironment {
  return {
    home: Deno.env.get("HOME"),
    configFileEnv: Deno.env.get("CRIU_CONFIG_FILE"),
    posixlyCorrect: Deno.env.get("POSIXLY_CORRECT") !== undefined,
    readFile(path) {
      try {
        return Deno.readTextFileSync(path);
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return undefined;
        const why = error instanceof Error ? error.message : String(error);
        throw new UsageError(`Cannot read config file ${path}: ${why}`);
      }
    },
  };
}

export interface ConfigFile {
  readonly path: string;
  /** Named by the user (--config or $CRIU_CONFIG_FILE) rather than a default location. */
  readonly explicit: boolean;
}

/** The config files to read, lowest precedence first. */
export function configFiles(
  cli: { readonly config?: string | undefined; readonly noDefaultConfig: boolean },
  env: ConfigEnvironment,
): ConfigFile[] {
  const files: ConfigFile[] = [];
  // --config replaces the default files; $CRIU_CONFIG_FILE is read either way.
  if (!cli.noDefaultConfig && cli.config === undefined) {
    files.push({ path: GLOBAL_CONFIG_FILE, explicit: false });
    if (env.home !== undefined) files.push({ path: `${env.home}/${USER_CONFIG_FILE}`, explicit: false });
  }
  if (env.configFileEnv !== undefined) files.push({ path: env.configFileEnv, explicit: true });
  if (cli.config !== undefined) files.push({ path: cli.config, explicit: true });
  return files;
}

/** Turn a config file's text into command-line words. */
export function configFileWords(text: string, path: string): string[] {
  const words: string[] = [];
  text.split("\n").forEach((line, index) => {
    try {
      words.push(...lineWords(line));
    } catch (error) {
      if (!(error instanceof UsageError)) throw error;
      throw new UsageError(`Config file ${path}, line ${index + 1}: ${error.message}`);
    }
  });
  return words;
}

const BLANK = /[ \t\v\f\r]/;

/** The words of one line: none, `--name`, or `--name` and its value. */
function lineWords(line: string): string[] {
  const statement = line.replace(/^[ \t\v\f\r]+/, "");
  if (statement === "" || statement.startsWith("#")) return [];

  // The name runs to the first blank; a '#' glued to it is part of it, as in CRIU (and then unknown).
  const end = statement.search(BLANK);
  if (end < 0) return [`--${statement}`];
  const name = `--${statement.slice(0, end)}`;
  const rest = statement.slice(end).replace(/^[ \t\v\f\r]+/, "");
  if (rest === "" || rest.startsWith("#")) return [name];

  if (rest.startsWith('"')) return [name, quotedValue(rest)];

  // Unquoted: a '#' anywhere starts a comment; one word only.
  const value = (rest.split("#")[0] ?? "").replace(/[ \t\v\f\r]+$/, "");
  if (BLANK.test(value)) {
    throw new UsageError(
      `expected one value after ${name}, found '${value}' (quote a value that has blanks)`,
    );
  }
  return [name, unescapeQuotes(value)];
}

/** `"..."` with `\"` standing for a quote; after the closing quote only blanks or a comment. */
function quotedValue(rest: string): string {
  let close = 1;
  while (close < rest.length && !(rest[close] === '"' && rest[close - 1] !== "\\")) close++;
  // A lone `"` is refused too: CRIU treats it as a format error rather than an empty value.
  if (close >= rest.length) throw new UsageError(`unterminated quoted value ${rest}`);
  const after = rest.slice(close + 1).replace(/^[ \t\v\f\r]+/, "");
  if (after !== "" && !after.startsWith("#")) {
    throw new UsageError(`unexpected '${after}' after the quoted value`);
  }
  return unescapeQuotes(rest.slice(1, close));
}

/** Only `\"` is an escape; every other backslash is kept as it is. */
function unescapeQuotes(value: string): string {
  return value.replaceAll('\\"', '"');
}
