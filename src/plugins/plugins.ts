/**
 * The plugin chain of one dump or restore, as CRIU runs it: every `*.so` (C, old or new API) and
 * every `*.ts`/`*.js` module (TypeScript) of the plugin directory is loaded in name order and its
 * `init(stage)` called; a hook is asked of the plugins that have it, in load order, until one
 * answers anything but -ENOTSUP (no plugin at all answers -ENOTSUP); `exit(stage, ret)` is called
 * on every plugin at the end, with a non-zero `ret` when the operation failed.
 *
 * The directory: `-L/--libdir`, else `CRIU_LIBS_DIR`, else /usr/lib/criu when it exists. A named
 * directory that cannot be read, a plugin that does not load, a newer API than ours, or an `init`
 * that fails stops the operation with a message naming the plugin.
 */
import { stripTypeScriptTypes } from "node:module";
import { NativePlugin } from "../../ffi/native_plugin.ts";
import { PluginHost } from "../../ffi/plugin_host.ts";
import { closeFd, OPEN, openFd } from "../../ffi/fd.ts";
import { osReason } from "../../ffi/errors.ts";
import { type Log, LOG_LEVEL } from "../log.ts";
import {
  type CriuPlugin,
  ENOTSUP,
  HOOK,
  HOOK_COUNT,
  type HookName,
  PLUGIN_VERSION,
  PLUGIN_VERSION_OLD,
  type PluginContext,
  type Stage,
  type VmaMapUpdate,
} from "./api.ts";
import { ScriptPlugin } from "./script.ts";
import { PluginError } from "../errors.ts";

// Named with the other errors of criu-ts, so a plugin's failure reaches the user as a message.
export { PluginError };

/** What the chain asks of one plugin, C or TypeScript alike. */
export interface LoadedPlugin {
  readonly name: string;
  init(stage: Stage): number;
  exit(stage: Stage, ret: number): void;
  has(hook: HookName): boolean;
  /** A hook whose arguments are all ints (fds in criu, ids, pids) or none. */
  callInts(hook: HookName, ...args: number[]): number;
  /** RESTORE_EXT_FILE / RESTORE_UNIX_SK: an fd of criu's own, or -errno. */
  restoreFd(hook: "RESTORE_EXT_FILE" | "RESTORE_UNIX_SK", id: number): number;
  dumpExtLink(index: number, type: number, kind: string): number;
  /** DUMP_EXT_MOUNT(mountpoint, id). */
  dumpExtMount(mountpoint: string, id: number): number;
  /** RESTORE_EXT_MOUNT(id, mountpoint, old_root, NULL), as CRIU asks it. */
  restoreExtMount(id: number, mountpoint: string, oldRoot: string): number;
  /** HANDLE_DEVICE_VMA with criu's fd on the mapped device. */
  handleDeviceVma(fd: number): number;
  /** UPDATE_VMA_MAP for the area at `addr` mapping `path` from page offset `pgoff`. */
  updateVmaMap(path: string, addr: bigint, pgoff: bigint): VmaMapUpdate;
}

const DEFAULT_DIR = "/usr/lib/criu";

/** Where plugins come from: the option, the environment, or CRIU's default if it exists. */
export function pluginDirectory(libdir: string | undefined): string | undefined {
  if (libdir !== undefined) return libdir;
  const env = Deno.env.get("CRIU_LIBS_DIR");
  if (env) return env;
  try {
    Deno.statSync(DEFAULT_DIR);
    return DEFAULT_DIR;
  } catch {
    return undefined;
  }
}

/** The plugin files of a directory, in name order: C libraries and TypeScript modules. */
function pluginFiles(dir: string): string[] {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch (e) {
    throw new PluginError(`Unable to open the plugin directory ${dir}: ${osReason(e)}`);
  }
  return entries
    .filter((e) => !e.isDirectory && /\.(so|ts|js)$/.test(e.name))
    .map((e) => `${dir}/${e.name}`)
    .sort();
}

class Native implements LoadedPlugin {
  constructor(private readonly p: NativePlugin) {}
  get name() {
    return this.p.descriptor.name;
  }
  init(stage: Stage) {
    return this.p.init(stage);
  }
  exit(stage: Stage, ret: number) {
    this.p.exit(stage, ret);
  }
  has(hook: HookName) {
    return this.p.has(HOOK[hook]);
  }
  callInts(hook: HookName, ...args: number[]) {
    return this.p.callInts(HOOK[hook], ...args);
  }
  restoreFd(hook: "RESTORE_EXT_FILE" | "RESTORE_UNIX_SK", id: number) {
    if (hook === "RESTORE_UNIX_SK") return this.p.callInts(HOOK.RESTORE_UNIX_SK, id);
    const { ret, retry } = this.p.restoreExtFile(HOOK.RESTORE_EXT_FILE, id);
    // criu-ts opens every file in one pass; a plugin that wants to be asked again later cannot be.
    if (retry) {
      throw new PluginError(
        `Plugin ${this.name} asked to restore file ${id} later, which criu-ts does not do`,
      );
    }
    return ret;
  }
  dumpExtLink(index: number, type: number, kind: string) {
    return this.p.dumpExtLink(HOOK.DUMP_EXT_LINK, index, type, kind);
  }
  dumpExtMount(mountpoint: string, id: number) {
    return this.p.dumpExtMount(HOOK.DUMP_EXT_MOUNT, mountpoint, id);
  }
  restoreExtMount(id: number, mountpoint: string, oldRoot: string) {
    return this.p.restoreExtMount(HOOK.RESTORE_EXT_MOUNT, id, mountpoint, oldRoot);
  }
  handleDeviceVma(fd: number) {
    return this.p.handleDeviceVma(HOOK.HANDLE_DEVICE_VMA, fd);
  }
  updateVmaMap(path: string, addr: bigint, pgoff: bigint) {
    return this.p.updateVmaMap(HOOK.UPDATE_VMA_MAP, path, addr, pgoff);
  }
}

function loadNative(path: string, log: Log): LoadedPlugin {
  let p: NativePlugin;
  try {
    p = NativePlugin.load(path, HOOK_COUNT);
  } catch (e) {
    throw new PluginError(`Unable to load plugin ${path}: ${(e as Error).message}`);
  }
  const d = p.descriptor;
  if (d.old) {
    d.version = PLUGIN_VERSION_OLD;
    log.warn(
      `Generating dynamic descriptor for plugin \`${path}'. Won't work in next version of the program. Please update your plugin.`,
    );
  }
  if (d.version > PLUGIN_VERSION || d.maxHooks > HOOK_COUNT) {
    p.close();
    throw new PluginError(
      `Corrupted plugin ${path}: API version 0x${
        d.version.toString(16)
      } with ${d.maxHooks} hooks, this criu speaks 0x${PLUGIN_VERSION.toString(16)} with ${HOOK_COUNT}`,
    );
  }
  log.debug(
    `Plugin "${d.name}" (version ${d.version} hooks ${d.maxHooks}): hooks ${d.hooks.join(", ") || "none"}`,
  );
  return new Native(p);
}

/**
 * The module of a TypeScript or JavaScript plugin. Run by `deno run` (the launcher), Deno imports
 * and transpiles any file on disk itself. A `deno compile`d binary only serves the modules it
 * embedded at compile time (any other file: URL is "Module not found") and loads a data: URL as
 * JavaScript, untranspiled: there the plugin's source is read, its TypeScript turned into
 * JavaScript by the runtime's own transpiler (node:module's stripTypeScriptTypes), and imported
 * as a data: URL.
 */
async function importScript(path: string): Promise<Record<string, unknown>> {
  if (!Deno.build.standalone) return await import(new URL(`file://${path}`).href);
  return await importSource(path, Deno.readTextFileSync(path));
}

/**
 * Imports a plugin from its source, as the compiled binary does: made JavaScript (types erased;
 * enums, namespaces and parameter properties turned into JavaScript, as Deno does) and imported
 * as a data: URL. Such a module has no directory to resolve relative imports against, and the
 * binary has no other file to give: a plugin for the compiled binary is one file (type-only
 * imports are fine, they are erased). Stack traces show the data: URL, not the file.
 */
export async function importSource(path: string, source: string): Promise<Record<string, unknown>> {
  const js = path.endsWith(".ts") ? stripTypeScriptTypes(source, { mode: "transform" }) : source;
  try {
    return await import(`data:text/javascript;charset=utf-8,${encodeURIComponent(js)}`);
  } catch (e) {
    const why = (e as Error).message;
    if (!/cannot-be-a-base|Module not found/.test(why)) throw e;
    throw new Error(
      `${why.split("\n")[0]}: the compiled criu imports a plugin as one file, without the files it imports`,
    );
  }
}

async function loadScript(path: string, ctx: PluginContext): Promise<LoadedPlugin> {
  let mod: Record<string, unknown>;
  try {
    mod = await importScript(path);
  } catch (e) {
    throw new PluginError(`Unable to load plugin ${path}: ${(e as Error).message}`);
  }
  const plugin = (mod.default ?? mod.plugin) as CriuPlugin | undefined;
  if (!plugin || typeof plugin !== "object" || typeof plugin.name !== "string") {
    throw new PluginError(`Plugin ${path} exports no plugin (a default or \`plugin\` export with a name)`);
  }
  return new ScriptPlugin(plugin, ctx);
}

/** The plugins of one operation, initialised for its stage. */
export class Plugins {
  #list: LoadedPlugin[];
  #imageFd: number;
  #exited = false;

  private constructor(
    list: LoadedPlugin[],
    readonly stage: Stage,
    imageFd: number,
    private readonly log: Log,
  ) {
    this.#list = list;
    this.#imageFd = imageFd;
  }

  /** No plugin: every hook answers -ENOTSUP. */
  static none(stage: Stage, log: Log): Plugins {
    return new Plugins([], stage, -1, log);
  }

  /** Loads and initialises every plugin of the directory; on any failure, those loaded exit. */
  static async load(libdir: string | undefined, stage: Stage, imagesDir: string, log: Log): Promise<Plugins> {
    const dir = pluginDirectory(libdir);
    if (dir === undefined) return Plugins.none(stage, log);
    const files = pluginFiles(dir);
    if (files.length === 0) return Plugins.none(stage, log);
    const imageFd = openFd(imagesDir, OPEN.RDONLY | OPEN.DIRECTORY | OPEN.CLOEXEC);
    const plugins = new Plugins([], stage, imageFd, log);
    const ctx: PluginContext = {
      images: { path: imagesDir, fd: imageFd },
      log: {
        error: (t) => log.error(t),
        warn: (t) => log.warn(t),
        info: (t) => log.info(t),
        debug: (t) => log.debug(t),
      },
    };
    try {
      if (files.some((f) => f.endsWith(".so"))) {
        const host = PluginHost.load();
        host.imageDirFd = imageFd;
        host.setLog(log.level, 2, (level, text) => logAt(log, level, text.replace(/\n$/, "")));
      }
      for (const path of files) {
        const p = path.endsWith(".so") ? loadNative(path, log) : await loadScript(path, ctx);
        plugins.#list.push(p);
        const r = p.init(stage);
        if (r !== 0) {
          plugins.#list.pop();
          throw new PluginError(`Failed in init(${stage}) of "${p.name}" (${path}): it answered ${r}`);
        }
        log.info(`Plugin "${p.name}" loaded from ${path}`);
      }
    } catch (e) {
      plugins.exit(-1);
      throw e;
    }
    return plugins;
  }

  /** Does any plugin have this hook? */
  has(hook: HookName): boolean {
    return this.#list.some((p) => p.has(hook));
  }

  get names(): string[] {
    return this.#list.map((p) => p.name);
  }

  /**
   * Asks the plugins that have `hook`, in load order, until one answers anything but -ENOTSUP;
   * returns that answer (-ENOTSUP when none took it).
   */
  run(hook: HookName, ask: (p: LoadedPlugin) => number): number {
    for (const p of this.#list) {
      if (!p.has(hook)) continue;
      const r = ask(p);
      this.log.debug(`Plugin "${p.name}" answered ${r} to ${hook}`);
      if (r !== -ENOTSUP) return r;
    }
    return -ENOTSUP;
  }

  /** A hook of int arguments that may fail the operation: -ENOTSUP and 0 are fine, other negatives throw. */
  notify(hook: HookName, ...args: number[]): void {
    const r = this.run(hook, (p) => p.callInts(hook, ...args));
    if (r < 0 && r !== -ENOTSUP) {
      throw new PluginError(`A plugin failed ${hook}(${args.join(", ")}): ${r}`, -r);
    }
  }

  /** Every plugin's exit(stage, ret), once; the images directory fd is closed. Never throws. */
  exit(ret: number): void {
    if (this.#exited) return;
    this.#exited = true;
    for (const p of this.#list) {
      try {
        p.exit(this.stage, ret);
      } catch (e) {
        this.log.error(`exit of plugin "${p.name}": ${(e as Error).message}`);
      }
    }
    if (this.#imageFd >= 0) closeFd(this.#imageFd);
    this.#imageFd = -1;
  }
}

/** A plugin's message at its CRIU level (LOG_MSG 0 is always printed, as CRIU does). */
function logAt(log: Log, level: number, text: string): void {
  if (level === 0 || level === LOG_LEVEL.info) log.info(text);
  else if (level === LOG_LEVEL.error) log.error(text);
  else if (level === LOG_LEVEL.warn) log.warn(text);
  else log.debug(text);
}

/**
 * Runs `body` with the plugins of `libdir` loaded for `stage`, and calls every plugin's exit at the
 * end, with ret 0 when `body` returned and -1 when it threw, as CRIU does.
 */
export async function withPlugins<T>(
  libdir: string | undefined,
  stage: Stage,
  imagesDir: string,
  log: Log,
  body: (plugins: Plugins) => T | Promise<T>,
): Promise<T> {
  const plugins = await Plugins.load(libdir, stage, imagesDir, log);
  let ret = -1;
  try {
    const result = await body(plugins);
    ret = 0;
    return result;
  } finally {
    plugins.exit(ret);
  }
}
