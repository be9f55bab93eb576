/**
 * The TypeScript twin of mount_plugin.c: takes the mount whose mountpoint ends in
 * CRIU_TS_PLUGIN_MOUNT (DUMP_EXT_MOUNT), records its id in the images directory, and at restore
 * binds CRIU_TS_PLUGIN_MOUNT_SOURCE where criu asks (RESTORE_EXT_MOUNT), with mount(8). Every call
 * is traced into CRIU_TS_PLUGIN_TRACE, prefixed "ts".
 */
import type { CriuPlugin } from "../../src/plugins/api.ts";

const ENOTSUP = 95;
const EIO = 5;

function trace(line: string): void {
  const path = Deno.env.get("CRIU_TS_PLUGIN_TRACE");
  if (path) Deno.writeTextFileSync(path, `ts ${line}\n`, { append: true });
}

let images = "";

const plugin: CriuPlugin = {
  name: "mount-ts",
  init(_stage, ctx) {
    images = ctx.images.path;
    return 0;
  },
  dumpExtMount(mountpoint, id) {
    trace(`dump-mount ${mountpoint} ${id}`);
    const wanted = Deno.env.get("CRIU_TS_PLUGIN_MOUNT");
    if (!wanted || !mountpoint.endsWith(wanted)) return -ENOTSUP;
    Deno.writeTextFileSync(`${images}/mount-plugin-${id}`, mountpoint);
    return 0;
  },
  restoreExtMount(id, mountpoint, oldRoot) {
    trace(`restore-mount ${id} ${mountpoint} ${oldRoot}`);
    try {
      Deno.statSync(`${images}/mount-plugin-${id}`);
    } catch {
      return -ENOTSUP;
    }
    const source = Deno.env.get("CRIU_TS_PLUGIN_MOUNT_SOURCE") ?? "";
    const out = new Deno.Command("mount", { args: ["--bind", source, mountpoint], stderr: "null" })
      .outputSync();
    return out.success ? 0 : -EIO;
  },
};

export default plugin;
