/**
 * A TypeScript plugin for the tests: the example perf event plugin, with the same trace and failure
 * modes as the C test plugins (CRIU_TS_PLUGIN_TRACE, CRIU_TS_PLUGIN_MODE; see perf_common.h).
 */
import example from "../../src/plugins/examples/perf_event.ts";
import type { CriuPlugin } from "../../src/plugins/api.ts";

const EIO = 5;

function trace(line: string): void {
  const path = Deno.env.get("CRIU_TS_PLUGIN_TRACE");
  if (path) Deno.writeTextFileSync(path, `${line}\n`, { append: true });
}

const mode = () => Deno.env.get("CRIU_TS_PLUGIN_MODE") ?? "";

const plugin: CriuPlugin = {
  name: "perf-event-ts-test",
  init(stage, ctx) {
    trace(`init ${stage}`);
    ctx.log.info(`perf-event-ts-test: init at stage ${stage}, images fd ${ctx.images.fd}`);
    return mode() === "fail-init" ? -1 : example.init!(stage, ctx);
  },
  exit(stage, ret) {
    trace(`exit ${stage} ${ret}`);
  },
  dumpExtFile(file, id) {
    const r = example.dumpExtFile!(file, id);
    if (r === 0) trace(`dump ${id}`);
    return r === 0 && mode() === "fail-dump" ? -EIO : r;
  },
  restoreExtFile(id) {
    trace(`restore ${id}`);
    return mode() === "fail-restore" ? -EIO : example.restoreExtFile!(id);
  },
};

export default plugin;
