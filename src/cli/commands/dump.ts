/** `criu dump -t PID -D DIR`: parse, validate, call the core. */
import { dump } from "../../dump/dump.ts";
import { NotSupportedError } from "../../errors.ts";
import { type CommandContext, imagesDir } from "./context.ts";

export function dumpCommand(ctx: CommandContext): number {
  const o = ctx.options;
  if (o.tree === undefined) throw new NotSupportedError("dump needs the tree to dump: -t PID");
  if (o.trackMem || o.prevImagesDir) {
    throw new NotSupportedError("--track-mem/--prev-images-dir (iterative migration) are not supported yet");
  }
  const stats = dump({
    pid: o.tree,
    imagesDir: imagesDir(o),
    leaveRunning: o.finalState === "running",
    leaveStopped: o.finalState === "stopped",
    shellJob: o.shellJob,
    log: ctx.log,
    hooks: ctx.hooks,
  });
  ctx.log.info(`Dumping finished successfully`);
  if (o.displayStats) {
    console.log(
      `Displaying dump stats:\nFreezing time: ${stats.freezingUs} us\nFrozen time: ${stats.frozenUs} us\n` +
        `Memory dump time: ${stats.memdumpUs} us\nMemory write time: ${stats.memwriteUs} us\n` +
        `Memory pages scanned: ${stats.pagesScanned}\nMemory pages written: ${stats.pagesWritten}`,
    );
  }
  return 0;
}
