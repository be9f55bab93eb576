/** `criu restore -D DIR`: parse, validate, call the core; without -d, wait for the tree's root. */
import { restore } from "../../restore/restore.ts";
import { type CommandContext, imagesDir } from "./context.ts";

export function restoreCommand(ctx: CommandContext): number {
  const o = ctx.options;
  const result = restore({
    imagesDir: imagesDir(o),
    detached: o.restoreDetached,
    sibling: o.restoreSibling,
    shellJob: o.shellJob,
    sockets: o,
    emptyNetNs: o.emptyNetNs,
    ...(o.pidfile ? { pidfile: o.pidfile } : {}),
    log: ctx.log,
    hooks: ctx.hooks,
  });
  ctx.log.info(`Restore finished successfully`);
  return result.exitCode ?? 0;
}
