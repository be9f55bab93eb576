/**
 * An example plugin in TypeScript: it takes signalfds (which criu-ts does not dump itself) and
 * brings them back with the same signals and flags. Copy it into the plugin directory (-L DIR)
 * as it is, or use it as the shape of your own: a default export implementing `CriuPlugin`.
 *
 * What it keeps: one small JSON file per signalfd in the images directory, named by the file's
 * id. The restore makes a new signalfd in criu's own process (libc's signalfd through FFI) and
 * hands its fd over; criu gives the restored task a copy at the dumped number.
 */
import type { CriuPlugin, PluginContext, PluginFd, RestoredFile } from "../api.ts";

const ENOTSUP = 95;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;

let images = "";
let log: PluginContext["log"] | undefined;

interface Saved {
  mask: string;
  flags: number;
}

function savedPath(id: number): string {
  return `${images}/signalfd-ts-${id}.json`;
}

/** The mask and flags of a signalfd, from its fdinfo; undefined for any other file. */
function describe(file: PluginFd): Saved | undefined {
  const info = Deno.readTextFileSync(`/proc/self/fdinfo/${file.fd}`);
  const mask = /^sigmask:\s*([0-9a-f]+)$/m.exec(info)?.[1];
  const flags = /^flags:\s*([0-7]+)$/m.exec(info)?.[1];
  return mask === undefined ? undefined : { mask, flags: parseInt(flags ?? "0", 8) };
}

/** A new signalfd of criu's own: signalfd(-1, &mask, flags) through libc. */
function newSignalfd(saved: Saved): number {
  const libc = Deno.dlopen("libc.so.6", {
    signalfd: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  });
  try {
    const mask = new BigUint64Array([BigInt(`0x${saved.mask}`)]);
    return libc.symbols.signalfd(-1, mask, saved.flags & (O_NONBLOCK | O_CLOEXEC));
  } finally {
    libc.close();
  }
}

const plugin: CriuPlugin = {
  name: "signalfd-ts",
  init(_stage, ctx) {
    images = ctx.images.path;
    log = ctx.log;
    return 0;
  },
  dumpExtFile(file, id) {
    const saved = describe(file);
    if (!saved) return -ENOTSUP;
    Deno.writeTextFileSync(savedPath(id), JSON.stringify(saved));
    log?.info(`signalfd-ts: saved signalfd ${id} (mask ${saved.mask})`);
    return 0;
  },
  restoreExtFile(id): RestoredFile | number {
    let saved: Saved;
    try {
      saved = JSON.parse(Deno.readTextFileSync(savedPath(id)));
    } catch {
      return -ENOTSUP; // not one of ours
    }
    const fd = newSignalfd(saved);
    return fd < 0 ? -1 : { fd };
  },
};

export default plugin;
