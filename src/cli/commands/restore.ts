/** `criu restore -D DIR`: parse, validate, call the core; without -d, wait for the tree's root. */
import { restore } from "../../restore/restore.ts";
import type { CommandContext } from "./context.ts";
import { restoreArguments } from "../../options/core.ts";
import { restoreStatsText } from "./stats.ts";

export function restoreCommand(ctx: CommandContext): number {
  const result = restore(restoreArguments(ctx.options, ctx));
  ctx.log.info(`Restore finished successfully`);
  if (ctx.options.displayStats) console.log(restoreStatsText(result));
  return result.exitCode ?? 0;
}
