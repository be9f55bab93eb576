/**
 * The image tool, command-compatible with CRIU's crit:
 *   crit decode [-i IN] [-o OUT] [--pretty]   binary image -> JSON (stdin/stdout by default)
 *   crit encode [-i IN] [-o OUT]              JSON -> binary image
 *   crit show IN [--nopl]                     decode --pretty to stdout (--nopl: payload sizes only)
 *   crit info IN                              magic and entry count
 *   crit x DIR ps|fds|mems|rss                explore an image directory
 * critMain is the only part that prints or returns an exit status; bad input gives a one-line
 * message and status 1, never a stack trace.
 */

import { explore, type Explorer, EXPLORERS } from "./_explore.ts";
import { type JsonValue, parseJson, stringifyJson } from "./_json_text.ts";
import { isImageFormatError, isImageJsonError } from "./errors.ts";
import { type CritImage, decodeImageBytes, decodeImageFile, encodeImage, imageInfo } from "./image_json.ts";
import { isSyscallError, osReason } from "../../ffi/errors.ts";

/** Where critMain reads and writes; tests pass their own. */
export interface CritIO {
  readStdin(): Uint8Array;
  writeStdout(bytes: Uint8Array): void;
  writeStderr(text: string): void;
}

function writeAll(w: { writeSync(p: Uint8Array): number }, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) done += w.writeSync(bytes.subarray(done));
}

function readAll(r: { readSync(p: Uint8Array): number | null }): Uint8Array {
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const buf = new Uint8Array(64 * 1024);
    const n = r.readSync(buf);
    if (n === null || n === 0) break;
    parts.push(buf.subarray(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export const denoIO: CritIO = {
  readStdin: () => readAll(Deno.stdin),
  writeStdout: (bytes) => writeAll(Deno.stdout, bytes),
  writeStderr: (text) => writeAll(Deno.stderr, new TextEncoder().encode(text)),
};

const USAGE = `usage: crit {decode,encode,info,x,show} ...

CRiu Image Tool (criu-ts)

  decode [-i IN] [-o OUT] [--pretty]  convert a criu image from binary to json
  encode [-i IN] [-o OUT]             convert a criu image from json to binary
  info IN                             show the magic and entry count of an image
  x DIR {${EXPLORERS.join(",")}}              explore an image directory
  show IN [--nopl]                    convert a criu image from binary to human-readable json
`;

/** A command-line mistake: printed with the usage line, exit status 1. */
class UsageError extends Error {
  override name = "UsageError";
}

interface Options {
  in?: string;
  out?: string;
  pretty: boolean;
  nopl: boolean;
  positional: string[];
}

/** argparse-style options: "-i X", "--in X", "--in=X", flags anywhere among positionals. */
function parseOptions(args: string[], valued: readonly string[], flags: readonly string[]): Options {
  const o: Options = { pretty: false, nopl: false, positional: [] };
  const names: Record<string, "in" | "out"> = { "-i": "in", "--in": "in", "-o": "out", "--out": "out" };
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    const eq = a.startsWith("--") ? a.indexOf("=") : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (valued.includes(name)) {
      const value = eq > 0 ? a.slice(eq + 1) : args[++i];
      if (value === undefined) throw new UsageError(`argument ${name}: expected one argument`);
      o[names[name] as "in" | "out"] = value;
    } else if (flags.includes(a)) {
      if (a === "--pretty") o.pretty = true;
      if (a === "--nopl") o.nopl = true;
    } else if (a.startsWith("-") && a !== "-") {
      throw new UsageError(`unrecognized arguments: ${a}`);
    } else {
      o.positional.push(a);
    }
  }
  return o;
}

function expectPositionals(o: Options, names: readonly string[]): void {
  if (o.positional.length < names.length) {
    throw new UsageError(
      `the following arguments are required: ${names.slice(o.positional.length).join(", ")}`,
    );
  }
  if (o.positional.length > names.length) {
    throw new UsageError(`unrecognized arguments: ${o.positional.slice(names.length).join(" ")}`);
  }
}

/** Reads a whole input file, with a message naming it when it cannot be read. */
function readInput(path: string | undefined, io: CritIO): Uint8Array {
  if (path === undefined) return io.readStdin();
  try {
    return Deno.readFileSync(path);
  } catch (e) {
    throw new CritInputError(`Cannot read ${path}: ${osReason(e)}`);
  }
}

function writeOutput(path: string | undefined, bytes: Uint8Array, io: CritIO): void {
  if (path === undefined) return io.writeStdout(bytes);
  try {
    Deno.writeFileSync(path, bytes);
  } catch (e) {
    throw new CritInputError(`Cannot write ${path}: ${osReason(e)}`);
  }
}

/** Bad input found by the command layer itself (unreadable file, JSON syntax). */
class CritInputError extends Error {
  override name = "CritInputError";
}

const text = (s: string) => new TextEncoder().encode(s);

function printImage(img: CritImage, pretty: boolean, out: string | undefined, io: CritIO): void {
  // crit ends the JSON with a newline only on stdout.
  const json = stringifyJson(img as unknown as JsonValue, pretty ? 4 : undefined);
  writeOutput(out, text(out === undefined ? json + "\n" : json), io);
}

function decodeCommand(args: string[], io: CritIO): void {
  const o = parseOptions(args, ["-i", "--in", "-o", "--out"], ["--pretty"]);
  expectPositionals(o, []);
  const img = o.in === undefined
    ? decodeImageBytes(io.readStdin(), "stdin", { pretty: o.pretty })
    : decodeFile(o.in, { pretty: o.pretty });
  printImage(img, o.pretty, o.out, io);
}

function decodeFile(path: string, opts: { pretty?: boolean; noPayload?: boolean }): CritImage {
  try {
    return decodeImageFile(path, opts);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) {
      throw new CritInputError(`Cannot read ${path}: ${osReason(e)}`);
    }
    throw e;
  }
}

function encodeCommand(args: string[], io: CritIO): void {
  const o = parseOptions(args, ["-i", "--in", "-o", "--out"], []);
  expectPositionals(o, []);
  const source = readInput(o.in, io);
  let doc: JsonValue;
  try {
    doc = parseJson(new TextDecoder("utf-8", { fatal: true }).decode(source));
  } catch (e) {
    const what = o.in ?? "stdin";
    const why = e instanceof TypeError ? "not UTF-8 text (is it a binary image?)" : (e as Error).message;
    throw new CritInputError(`Cannot read JSON from ${what}: ${why}`);
  }
  writeOutput(o.out, encodeImage(doc), io);
}

function showCommand(args: string[], io: CritIO): void {
  const o = parseOptions(args, [], ["--nopl"]);
  expectPositionals(o, ["in"]);
  printImage(decodeFile(o.positional[0] as string, { pretty: true, noPayload: o.nopl }), true, undefined, io);
}

function infoCommand(args: string[], io: CritIO): void {
  const o = parseOptions(args, [], []);
  expectPositionals(o, ["in"]);
  const path = o.positional[0] as string;
  let info;
  try {
    info = imageInfo(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CritInputError(`Cannot read ${path}: ${osReason(e)}`);
    throw e;
  }
  io.writeStdout(text(stringifyJson(info, 4) + "\n"));
}

function exploreCommand(args: string[], io: CritIO): void {
  const o = parseOptions(args, [], []);
  expectPositionals(o, ["dir", "what"]);
  const [dir, what] = o.positional as [string, string];
  if (!EXPLORERS.includes(what as Explorer)) {
    throw new UsageError(`argument what: invalid choice: '${what}' (choose from ${EXPLORERS.join(", ")})`);
  }
  const lines = explore(dir, what as Explorer);
  io.writeStdout(text(lines.map((l) => l + "\n").join("")));
}

const COMMANDS: Record<string, (args: string[], io: CritIO) => void> = {
  decode: decodeCommand,
  encode: encodeCommand,
  show: showCommand,
  info: infoCommand,
  x: exploreCommand,
};

/** Runs `crit ARGS...`; returns the exit status. */
export function critMain(args: string[], io: CritIO = denoIO): number {
  const [command, ...rest] = args;
  if (command === "-h" || command === "--help" || (command !== undefined && rest.includes("--help"))) {
    io.writeStdout(text(USAGE));
    return 0;
  }
  const run = command === undefined ? undefined : COMMANDS[command];
  try {
    if (run === undefined) {
      throw new UsageError(command === undefined ? "too few arguments" : `invalid command '${command}'`);
    }
    run(rest, io);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      io.writeStderr(`${USAGE.split("\n")[0]}\ncrit: error: ${e.message}\n`);
    } else if (
      isImageFormatError(e) || isImageJsonError(e) || e instanceof CritInputError ||
      e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied ||
      e instanceof Deno.errors.BrokenPipe || isSyscallError(e)
    ) {
      io.writeStderr(`crit: ${e.message}\n`);
    } else {
      // Not bad input but a bug of ours: keep the stack for the report.
      io.writeStderr(`crit: internal error: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    }
    return 1;
  }
}

if (import.meta.main) Deno.exit(critMain(Deno.args));
