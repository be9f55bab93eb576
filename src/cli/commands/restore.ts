/** `criu restore -D DIR`: parse, validate, call the core; without -d, wait for the tree's root. */
import { restore } from "../../restore/restore.ts";
import type { CommandContext } from "./context.ts";
import { imagesDirOf, restoreArguments } from "../../options/core.ts";
import { withPlugins } from "../../plugins/plugins.ts";
import { STAGE } from "../../plugins/api.ts";
import { restoreStatsText } from "./stats.ts";

export async function restoreCommand(ctx: CommandContext): Promise<number> {
  const o = ctx.options;
  const result = await withPlugins(
    o.libdir,
    STAGE.RESTORE,
    imagesDirOf(o),
    ctx.log,
    (plugins) => restore(restoreArguments(o, { ...ctx, plugins })),
  );
  ctx.log.info(`Restore finished successfully`);
  if (ctx.options.displayStats) console.log(restoreStatsText(result));
  return result.exitCode ?? 0;
}
