/** The launcher (scripts/criu): runnable through a symlink from anywhere, and never runs a stale bundle. */
import assert from "node:assert/strict";
import { ROOT, tempDir } from "./lib/harness.ts";

const BUNDLE = `${ROOT}/dist/bundle/current`;

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  const r = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  assert.ok(r.success, `${cmd} ${args.join(" ")}: ${dec.decode(r.stderr)}`);
  return dec.decode(r.stdout);
}

Deno.test("the launcher runs as `criu` through a symlink, from any directory", async () => {
  const dir = tempDir();
  try {
    Deno.symlinkSync(`${ROOT}/scripts/criu`, `${dir}/criu`);
    assert.match(await run(`${dir}/criu`, ["--version"], "/"), /^Version: \d+\.\d+\n/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the launcher rebuilds the bundle when a source file is newer", async () => {
  const before = Deno.readLinkSync(BUNDLE);
  const source = `${ROOT}/src/main.ts`;
  const touched = new Date();
  Deno.utimeSync(source, touched, touched);
  const out = await run(`${ROOT}/scripts/criu`, ["--version"], "/");
  assert.match(out, /^Version: /);
  assert.notEqual(Deno.readLinkSync(BUNDLE), before, "a new bundle directory");
  const built = Deno.statSync(`${BUNDLE}/main.js`).mtime!;
  assert.ok(built >= Deno.statSync(source).mtime!, "the bundle is newer than the source");
  // The previous build stays for criu processes that still load chunks from it.
  assert.ok(Deno.statSync(`${ROOT}/dist/bundle/${before}/main.js`).isFile);
});
