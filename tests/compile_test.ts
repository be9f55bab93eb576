/** The one-binary build, tested where a denort runtime is available (DENORT_BIN). */
import assert from "node:assert/strict";
import { ROOT, tempDir } from "./lib/harness.ts";

const denort = Deno.env.get("DENORT_BIN");

Deno.test({
  name: denort
    ? "deno task compile builds a criu binary that answers --version"
    : "compile: skipped, DENORT_BIN is not set (no denort runtime here)",
  ignore: !denort,
  async fn() {
    const r = await new Deno.Command(`${ROOT}/node_modules/.bin/deno`, {
      args: ["run", "-A", `${ROOT}/scripts/compile.ts`],
    }).output();
    assert.ok(r.success);
    const dir = tempDir();
    try {
      const v = await new Deno.Command(`${ROOT}/dist/criu`, {
        args: ["--version"],
        cwd: dir,
        stdout: "piped",
      }).output();
      assert.match(new TextDecoder().decode(v.stdout), /^Version: \d+\.\d+\n/);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
