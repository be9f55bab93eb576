/**
 * The `criu` program: parses the command line as CRIU does and runs one command. Only this layer
 * exits the process; everything below throws named errors.
 */
import { isUsageError, parseCommandLine } from "./cli/parse.ts";
import { helpText, usageText, versionText } from "./cli/help.ts";
import { type CommandContext, makeContext } from "./cli/commands/context.ts";
import { isCriuError, NotSupportedError } from "./errors.ts";
import { isImageFormatError } from "./images/errors.ts";
import { isSyscallError } from "../ffi/errors.ts";

type Command = (ctx: CommandContext) => number | Promise<number>;

// Each command is loaded when it runs: startup time matters for short commands and runtimes
// that call criu often (the protobuf descriptors alone take tens of milliseconds to load).
const COMMANDS: Record<string, () => Promise<Command>> = {
  dump: async () => (await import("./cli/commands/dump.ts")).dumpCommand,
  restore: async () => (await import("./cli/commands/restore.ts")).restoreCommand,
  check: async () => (await import("./cli/commands/check.ts")).checkCommand,
  swrk: async () => (await import("./rpc/commands.ts")).swrkCommand,
  service: async () => (await import("./rpc/commands.ts")).serviceCommand,
};

function notYet(name: string): Command {
  return () => {
    throw new NotSupportedError(`The ${name} command is not supported yet`);
  };
}

/** Runs criu with `args`; returns the exit status. */
export async function main(args: string[], program = "criu"): Promise<number> {
  if (program.endsWith("crit") || args[0] === "crit") {
    const { critMain } = await import("./images/crit.ts");
    return critMain(program.endsWith("crit") ? args : args.slice(1));
  }
  let parsed;
  try {
    parsed = parseCommandLine(args);
  } catch (e) {
    if (isUsageError(e)) {
      console.error(`Error: ${e.message}\n${usageText()}`);
      return 1;
    }
    throw e;
  }
  const { options, positionals, notes } = parsed;
  if (options.help) {
    console.log(helpText());
    return 0;
  }
  if (options.version) {
    Deno.stdout.writeSync(new TextEncoder().encode(versionText()));
    return 0;
  }
  if (!parsed.command) {
    console.error(usageText());
    return 1;
  }
  let ctx: CommandContext;
  try {
    ctx = makeContext(options, positionals, notes);
  } catch (e) {
    if (!isUsageError(e)) throw e;
    console.error(`Error: ${e.message}`);
    return 1;
  }
  try {
    const load = COMMANDS[parsed.command];
    const command = load ? await load() : notYet(parsed.command);
    ctx.log.debug(`Loaded the ${parsed.command} command`);
    return await command(ctx);
  } catch (e) {
    if (isCriuError(e) || isImageFormatError(e) || isSyscallError(e)) {
      ctx.log.error(e.message);
      return 1;
    }
    ctx.log.error(`Internal error: ${(e as Error)?.stack ?? e}`);
    return 1;
  } finally {
    ctx.log.close();
  }
}

if (import.meta.main) {
  const program = Deno.env.get("CRIU_TS_ARGV0") ?? Deno.execPath();
  Deno.exit(await main(Deno.args, program.split("/").pop() ?? "criu"));
}
