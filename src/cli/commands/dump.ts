/** `criu dump -t PID -D DIR`: parse, validate, call the core. */
import { dumpHeld } from "../../dump/dump.ts";
import { DumpError, NotSupportedError } from "../../errors.ts";
import { type CommandContext, imagesDir } from "./context.ts";
import { signalIgnored } from "../../../ffi/process.ts";
import { SIG } from "../../../ffi/syscalls.ts";

/**
 * Signals that would kill criu while a task runs our syscalls with our registers: that task
 * would then die of the batch runner's trap. Held back while the dump works; one that came in
 * cancels the dump before the tree is released, so Ctrl-C leaves the tree as it was. Those we
 * were started ignoring (nohup, a background job) stay ignored: each still gets a listener that
 * does nothing, since Deno, once it listens for any signal, exits on a SIGINT nobody listens to.
 */
const INTERRUPTS = { SIGHUP: SIG.HUP, SIGINT: SIG.INT, SIGTERM: SIG.TERM } as const;

/** Listens for the interrupts while `body` runs; `body` learns from `interrupted()` whether one came. */
async function holdingInterrupts<T>(
  body: (interrupted: () => Deno.Signal | undefined) => Promise<T>,
): Promise<T> {
  let interrupted: Deno.Signal | undefined;
  const listeners = (Object.keys(INTERRUPTS) as (keyof typeof INTERRUPTS)[]).map((signal) => ({
    signal,
    note: signalIgnored(INTERRUPTS[signal]) ? () => {} : () => interrupted ??= signal,
  }));
  for (const l of listeners) Deno.addSignalListener(l.signal, l.note);
  try {
    return await body(() => interrupted);
  } finally {
    for (const l of listeners) Deno.removeSignalListener(l.signal, l.note);
  }
}

export async function dumpCommand(ctx: CommandContext): Promise<number> {
  const o = ctx.options;
  const pid = o.tree;
  if (pid === undefined) throw new NotSupportedError("dump needs the tree to dump: -t PID");
  if (o.trackMem || o.prevImagesDir) {
    throw new NotSupportedError("--track-mem/--prev-images-dir (iterative migration) are not supported yet");
  }
  return await holdingInterrupts(async (interrupted) => {
    const held = dumpHeld({
      pid,
      imagesDir: imagesDir(o),
      leaveRunning: o.finalState === "running",
      leaveStopped: o.finalState === "stopped",
      shellJob: o.shellJob,
      sockets: o,
      log: ctx.log,
      hooks: ctx.hooks,
    });
    // The dump ran without a break; a signal that came in meanwhile is delivered now.
    await new Promise((r) => setTimeout(r, 0));
    const signal = interrupted();
    if (signal) {
      held.cancel();
      throw new DumpError(`Interrupted by ${signal}: the tree runs on as before and no checkpoint was kept`);
    }
    held.release();
    ctx.log.info(`Dumping finished successfully`);
    if (o.displayStats) printStats(held.stats);
    return 0;
  });
}

function printStats(stats: ReturnType<typeof dumpHeld>["stats"]): void {
  console.log(
    `Displaying dump stats:\nFreezing time: ${stats.freezingUs} us\nFrozen time: ${stats.frozenUs} us\n` +
      `Memory dump time: ${stats.memdumpUs} us\nMemory write time: ${stats.memwriteUs} us\n` +
      `Memory pages scanned: ${stats.pagesScanned}\nMemory pages written: ${stats.pagesWritten}`,
  );
}
