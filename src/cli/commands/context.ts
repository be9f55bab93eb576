/** What every command gets: the parsed options, a log opened as CRIU opens it, the hooks. */
import type { Options } from "../../options/options.ts";
import { Log } from "../../log.ts";
import type { CommandContext } from "../../command.ts";
import { ScriptHooks } from "../../actions/scripts.ts";
import { unusableDirectory } from "../../dirs.ts";
import { osReason } from "../../../ffi/errors.ts";
import { UsageError } from "../../options/errors.ts";

export type { CommandContext } from "../../command.ts";

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

/** The log, in the file -o names (in the work dir unless absolute); a file we cannot create is a UsageError. */
export function openLog(o: Options): Log {
  const log = new Log(o.verbosity, o.logPid);
  if (o.logFile) {
    const path = join(workDir(o), o.logFile);
    try {
      log.openFile(path);
    } catch (e) {
      throw new UsageError(`Cannot open the log file ${path}: ${osReason(e)}`);
    }
  }
  return log;
}

/**
 * The command's context. A work dir (-W) that is not there is refused here, before anything
 * else, as CRIU refuses one it cannot change into.
 */
export function makeContext(options: Options, positionals: string[], notes: string[]): CommandContext {
  const unusable = options.workDir === undefined
    ? undefined
    : unusableDirectory("work directory", options.workDir);
  if (unusable !== undefined) throw new UsageError(unusable);
  const log = openLog(options);
  for (const n of notes) log.info(n);
  const hooks = new ScriptHooks(options.actionScripts, imagesDir(options), log);
  return { options, positionals, log, hooks };
}
