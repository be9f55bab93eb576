/**
 * Words to options, as glibc's getopt_long reads them with CRIU's table (criu/config.c: the short
 * option string "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:" and the long options). Programs that drive criu
 * rely on its odd corners, so this follows glibc, not a tidier idea of a command line:
 *
 * - `-abc` is three short options; the first one that takes an argument ends the bundle and takes
 *   the rest of the word (`-Rt42`), or, for a required argument, the next word whatever it looks
 *   like (`-D -R` sets the images dir to "-R");
 * - an optional argument is only ever attached: `-v4`, `--verbosity=4`; `-v 4` is -v and a word;
 * - `--name=value`, or `--name value` for a required argument; a long name may be shortened to
 *   any prefix that names one option (`--leave-r`), and a prefix naming several is refused;
 * - `--` ends the options; `-` alone is a word;
 * - words that are not options are collected in order and the options after them still count
 *   (GNU permutation: `criu -D d dump -t 1`), unless POSIXLY_CORRECT is set, when the first
 *   word ends the options, as in glibc.
 *
 * Scanning stops at the first malformed word, but what came before it still counts: CRIU prints
 * the version for `-V --bogus`. So the error is returned with the options found up to it.
 */
import { OPTION_TABLE, type OptionSpec } from "./table.ts";

/** One option as found in the words, before its value is checked. */
export interface Occurrence {
  readonly spec: OptionSpec;
  /** Given as `--no-NAME`. */
  readonly negated: boolean;
  readonly value: string | undefined;
  /** As written, for messages: `-t` or `--tree` (the full name, also when shortened). */
  readonly display: string;
}

export interface Scan {
  readonly occurrences: Occurrence[];
  /** The words that are not options or their arguments, in order. */
  readonly positionals: string[];
  /** What is wrong with the first malformed word, if any. */
  readonly error?: string;
}

export interface ScanMode {
  /** POSIXLY_CORRECT: the first word that is not an option ends the options. */
  readonly posixlyCorrect?: boolean;
}

interface LongName {
  readonly name: string;
  readonly spec: OptionSpec;
  readonly negated: boolean;
}

const byShort = new Map(OPTION_TABLE.filter((s) => s.short !== "").map((s) => [s.short, s]));

/** Every long spelling, `no-` forms included, in table order (glibc reports them in that order). */
const longNames: readonly LongName[] = OPTION_TABLE.flatMap((spec) => {
  const names = [{ name: spec.long, spec, negated: false }];
  if (spec.arg === "none" && spec.negatable) names.push({ name: `no-${spec.long}`, spec, negated: true });
  return names;
});

/**
 * The option a long name stands for: an exact match first; otherwise the options it is a prefix
 * of. glibc takes several only when they are one and the same option (same argument kind and same
 * effect), and calls the prefix ambiguous otherwise.
 */
function findLong(name: string): LongName | string {
  const exact = longNames.find((n) => n.name === name);
  if (exact) return exact;
  const candidates = longNames.filter((n) => n.name.startsWith(name));
  const first = candidates[0];
  if (first === undefined) return `Unknown option --${name}`;
  if (candidates.every((c) => c.spec === first.spec && c.negated === first.negated)) return first;
  return `Ambiguous option --${name}: could be ${candidates.map((c) => `--${c.name}`).join(", ")}`;
}

/** Reads `words` (no program name) into options and positionals. */
export function getoptLong(words: readonly string[], mode: ScanMode = {}): Scan {
  const occurrences: Occurrence[] = [];
  const positionals: string[] = [];
  const failed = (error: string): Scan => ({ occurrences, positionals, error });
  for (let i = 0; i < words.length; i++) {
    const word = words[i] ?? "";
    if (word === "--") {
      positionals.push(...words.slice(i + 1));
      break;
    }
    if (word === "-" || !word.startsWith("-")) {
      if (mode.posixlyCorrect) {
        positionals.push(...words.slice(i));
        break;
      }
      positionals.push(word);
      continue;
    }

    if (word.startsWith("--")) {
      const eq = word.indexOf("=");
      const found = findLong(eq < 0 ? word.slice(2) : word.slice(2, eq));
      if (typeof found === "string") return failed(found);
      const { spec, negated } = found;
      const display = `--${found.name}`;
      let value = eq < 0 ? undefined : word.slice(eq + 1);
      if (spec.arg === "none" && value !== undefined) {
        return failed(`Option ${display} does not take an argument`);
      }
      if (spec.arg === "required" && value === undefined) {
        if (i + 1 >= words.length) return failed(`Option ${display} requires an argument`);
        value = words[++i];
      }
      occurrences.push({ spec, negated, value, display });
      continue;
    }

    // A bundle of short options; one that takes an argument ends the bundle.
    for (let j = 1; j < word.length; j++) {
      const letter = word[j] ?? "";
      const spec = byShort.get(letter);
      const display = `-${letter}`;
      if (spec === undefined) return failed(`Unknown option ${display}`);
      if (spec.arg === "none") {
        occurrences.push({ spec, negated: false, value: undefined, display });
        continue;
      }
      let value: string | undefined = word.slice(j + 1);
      if (value === "") {
        if (spec.arg === "optional") value = undefined;
        else if (i + 1 >= words.length) return failed(`Option ${display} requires an argument`);
        else value = words[++i];
      }
      occurrences.push({ spec, negated: false, value, display });
      break;
    }
  }
  return { occurrences, positionals };
}
