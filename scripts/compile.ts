/**
 * deno task compile: one self-contained `dist/criu` (the RPC modes, action scripts and the image
 * tool included; nothing is read from the source tree at run time).
 *
 * `deno compile` needs the `denort` runtime, which it would download and which no reachable
 * registry has: point DENORT_BIN at a denort binary of the pinned Deno version.
 */
const root = new URL("..", import.meta.url).pathname;
const denort = Deno.env.get("DENORT_BIN");
if (!denort) {
  console.error(
    "deno task compile needs DENORT_BIN: the path of a denort binary matching Deno " + Deno.version.deno,
  );
  Deno.exit(1);
}
const out = await new Deno.Command(`${root}node_modules/.bin/deno`, {
  args: [
    "compile",
    "--allow-all",
    "--no-check",
    "--config",
    `${root}deno.json`,
    "--output",
    `${root}dist/criu`,
    `${root}src/main.ts`,
  ],
  env: { DENORT_BIN: denort },
  stdout: "inherit",
  stderr: "inherit",
}).output();
Deno.exit(out.code);
