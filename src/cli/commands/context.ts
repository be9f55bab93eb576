/** What every command gets: the parsed options, a log opened as CRIU opens it, the hooks. */
import type { Options } from "../options.ts";
import { Log } from "../../log.ts";
import type { Hooks } from "../../actions/hooks.ts";
import { ScriptHooks } from "../../actions/scripts.ts";

export interface CommandContext {
  options: Options;
  positionals: string[];
  log: Log;
  hooks: Hooks;
}

function join(dir: string, file: string): string {
  return file.startsWith("/") ? file : `${dir.replace(/\/$/, "")}/${file}`;
}

/** The directory -o and the stats live in: -W, or else the images dir, or else the cwd. */
export function workDir(o: Options): string {
  return o.workDir ?? o.imagesDir ?? ".";
}

export function imagesDir(o: Options): string {
  return o.imagesDir ?? ".";
}

export function openLog(o: Options): Log {
  const log = new Log(o.verbosity, o.logPid);
  if (o.logFile) log.openFile(join(workDir(o), o.logFile));
  return log;
}

export function makeContext(options: Options, positionals: string[], notes: string[]): CommandContext {
  const log = openLog(options);
  for (const n of notes) log.info(n);
  const hooks = new ScriptHooks(options.actionScripts, imagesDir(options), log);
  return { options, positionals, log, hooks };
}
