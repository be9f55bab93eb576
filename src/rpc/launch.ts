/**
 * Starting criu-ts again as a child: the service's workers (`criu swrk 3`) and its daemon. No fork
 * is possible under Deno, so the child is a new program run with posix_spawn.
 */
import { pathExists } from "../../ffi/fd.ts";

function fromFileUrl(url: URL): string {
  return decodeURIComponent(url.pathname);
}

/**
 * The argv prefix that runs this criu-ts: the program this Deno runs (the bundle, or src/main.ts
 * with the project's deno.json) when it is on disk, otherwise this executable itself (a
 * `deno compile`d criu, whose main module is inside it).
 */
export function selfCommand(): string[] {
  const main = new URL(Deno.mainModule);
  if (main.protocol === "file:" && pathExists(fromFileUrl(main))) {
    const args = [Deno.execPath(), "run", "--quiet", "--no-prompt", "--allow-all"];
    const config = fromFileUrl(new URL("../deno.json", main)); // next to src/, for the sources
    args.push(...(pathExists(config) ? ["--config", config] : ["--no-config"]));
    return [...args, fromFileUrl(main)];
  }
  return [Deno.execPath()];
}
