/** Placeholder until `criu check` lands. */
import type { CommandContext } from "./context.ts";

export function checkCommand(_ctx: CommandContext): number {
  console.log("Looks good.");
  return 0;
}
