/**
 * The one-binary build, tested where a denort runtime is available (DENORT_BIN): it answers
 * --version, and it loads a TypeScript plugin that was not there when it was compiled (the example
 * perf event plugin, copied as it is into the plugin directory), dumping and restoring the
 * perf_event_held workload with it as tests/plugins_test.ts does through the launcher.
 */
import assert from "node:assert/strict";
import { exists, reap, ROOT, tempDir, Workload } from "./lib/harness.ts";

const denort = Deno.env.get("DENORT_BIN");
const BINARY = `${ROOT}/dist/criu`;

/** Builds dist/criu once for the tests of this file. */
let built: Promise<void> | undefined;
function compile(): Promise<void> {
  built ??= (async () => {
    const r = await new Deno.Command(`${ROOT}/node_modules/.bin/deno`, {
      args: ["run", "-A", `${ROOT}/scripts/compile.ts`],
    }).output();
    assert.ok(r.success, "deno task compile failed");
  })();
  return built;
}

/** Runs the compiled binary itself (not the launcher), stdin /dev/null. */
async function binary(
  args: string[],
  cwd = "/",
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(BINARY, { args, stdin: "null", stdout: "piped", stderr: "piped", cwd })
    .output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

function skipped(what: string): string {
  return `compile: ${what} skipped, DENORT_BIN is not set (no denort runtime here)`;
}

Deno.test({
  name: denort ? "deno task compile builds a criu binary that answers --version" : skipped("--version"),
  ignore: !denort,
  async fn() {
    await compile();
    const dir = tempDir();
    try {
      const v = await binary(["--version"], dir);
      assert.match(v.stdout, /^Version: \d+\.\d+\n/);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: denort
    ? "the compiled binary loads a TypeScript plugin from -L and dumps and restores a perf event with it"
    : skipped("TypeScript plugin"),
  ignore: !denort,
  async fn() {
    await compile();
    const plugins = tempDir("criu-ts-plugins-");
    const images = tempDir();
    // The plugin as a user installs it: the TypeScript file itself, unknown to the binary.
    Deno.copyFileSync(`${ROOT}/src/plugins/examples/perf_event.ts`, `${plugins}/perf_event.ts`);
    const w = await Workload.start("perf_event_held");
    try {
      const d = await binary([
        "dump",
        "-t",
        `${w.pid}`,
        "-D",
        images,
        "-L",
        plugins,
        "-o",
        "dump.log",
        "-v4",
      ]);
      const dumpLog = Deno.readTextFileSync(`${images}/dump.log`);
      assert.equal(d.code, 0, `dump failed: ${d.stderr}\n${dumpLog}`);
      assert.match(dumpLog, /Plugin "perf-event-ts" loaded from /);
      assert.match(dumpLog, /perf-event-ts: saved perf event \d+/);
      assert.ok([...Deno.readDirSync(images)].some((e) => /^perf-event-ts-\d+\.json$/.test(e.name)));
      await reap(w.pid);
      const r = await binary(["restore", "-D", images, "-d", "-L", plugins, "-o", "restore.log", "-v4"]);
      assert.equal(r.code, 0, `restore failed: ${r.stderr}\n${readIf(`${images}/restore.log`)}`);
      assert.equal(await w.finish(), "PASS");
    } finally {
      await w.kill();
      w.cleanup();
      Deno.removeSync(images, { recursive: true });
      Deno.removeSync(plugins, { recursive: true });
    }
  },
});

function readIf(path: string): string {
  return exists(path) ? Deno.readTextFileSync(path) : "";
}
