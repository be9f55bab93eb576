/** `criu dump -t PID -D DIR`: parse, validate, call the core. */
import { dumpHeld } from "../../dump/dump.ts";
import { DumpError } from "../../errors.ts";
import type { CommandContext } from "./context.ts";
import { dumpArguments } from "../../options/core.ts";
import { withPlugins } from "../../plugins/plugins.ts";
import { STAGE } from "../../plugins/api.ts";
import { dumpStatsText } from "./stats.ts";
import { signalIgnored } from "../../../ffi/process.ts";
import { SIG } from "../../../ffi/syscalls.ts";

/**
 * Signals that would kill criu while a task runs our syscalls with our registers: that task
 * would then die of the batch runner's trap. Held back while the dump works; one that came in
 * cancels the dump before the tree is released, so Ctrl-C leaves the tree as it was. Those we
 * were started ignoring (nohup, a background job) stay ignored: each still gets a listener that
 * does nothing, since Deno, once it listens for any signal, exits on a SIGINT nobody listens to.
 */
/** Event-loop turns a signal that came in during the dump may take to reach its listener. */
const SIGNAL_TURNS = 5;

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
  const args = dumpArguments(o, ctx);
  return await withPlugins(
    o.libdir,
    STAGE.DUMP,
    args.imagesDir,
    ctx.log,
    (plugins) =>
      holdingInterrupts(async (interrupted) => {
        const held = dumpHeld({ ...args, plugins });
        // The dump ran without a break; a signal that came in meanwhile is delivered now. The
        // runtime notices it while polling and hands it to the listener a turn or two later:
        // a few turns of the event loop let it arrive, whatever the load.
        for (let turn = 0; turn < SIGNAL_TURNS && !interrupted(); turn++) {
          await new Promise((r) => setTimeout(r, 0));
        }
        const signal = interrupted();
        if (signal) {
          held.cancel();
          throw new DumpError(
            `Interrupted by ${signal}: the tree runs on as before and no checkpoint was kept`,
          );
        }
        held.release();
        ctx.log.info(`Dumping finished successfully`);
        if (o.displayStats) console.log(dumpStatsText(held.stats));
        return 0;
      }),
  );
}
