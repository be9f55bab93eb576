/** Placeholder until the RPC modes land: `swrk` and `service`. */
import { NotSupportedError } from "../errors.ts";
import type { CommandContext } from "../cli/commands/context.ts";

export function swrkCommand(_ctx: CommandContext): number {
  throw new NotSupportedError("The swrk command is not supported yet");
}

export function serviceCommand(_ctx: CommandContext): number {
  throw new NotSupportedError("The service command is not supported yet");
}
