/**
 * Starting criu-ts again as a child: the service's workers (`criu swrk 3`) and its daemon. No fork
 * is possible under Deno, so the child is a new program run with posix_spawn.
 */

function fromFileUrl(url: URL): string {
  return decodeURIComponent(url.pathname);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The argv prefix that runs this criu-ts: the sources through this Deno when they are on disk,
 * otherwise this executable itself (a `deno compile`d criu).
 */
export function selfCommand(): string[] {
  const main = new URL("../main.ts", import.meta.url);
  const config = new URL("../../deno.json", import.meta.url);
  if (main.protocol === "file:" && exists(fromFileUrl(main))) {
    const args = [Deno.execPath(), "run", "--quiet", "--no-prompt", "--allow-all"];
    if (exists(fromFileUrl(config))) args.push("--config", fromFileUrl(config));
    return [...args, fromFileUrl(main)];
  }
  return [Deno.execPath()];
}
