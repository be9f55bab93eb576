/**
 * A C plugin: a shared library loaded as CRIU loads it (dlopen RTLD_LAZY after the plugin host,
 * see plugin_host.ts), its descriptor read, and its functions called. Only this file knows the
 * descriptor's layout and the hooks' C signatures (criu-plugin.h):
 *
 *   typedef struct {
 *     const char *name;                  //  0
 *     int (*init)(int stage);            //  8
 *     void (*exit)(int stage, int ret);  // 16
 *     unsigned int version;              // 24
 *     unsigned int max_hooks;            // 28
 *     void *hooks[CR_PLUGIN_HOOK__MAX];  // 32, 8 bytes each
 *   } cr_plugin_desc_t;
 *
 * A library without the `CR_PLUGIN_DESC` symbol is an old-API plugin: its functions are found by
 * their names, as CRIU does, and it counts as version 0.1.0.
 */
import { dlclose, dlopen, dlsym, PluginHost, RTLD } from "./plugin_host.ts";
import { addressOf, callBig, cstr, libc } from "./libc.ts";
import { NR } from "./syscalls.ts";

const DESC = { name: 0, init: 8, exit: 16, version: 24, maxHooks: 28, hooks: 32 } as const;

/** The old API's function names, by hook number (CRIU's list), then init and fini. */
const OLD_HOOK_NAMES = [
  "cr_plugin_dump_unix_sk",
  "cr_plugin_restore_unix_sk",
  "cr_plugin_dump_file",
  "cr_plugin_restore_file",
  "cr_plugin_dump_ext_mount",
  "cr_plugin_restore_ext_mount",
  "cr_plugin_dump_ext_link",
  "cr_plugin_handle_device_vma",
  "cr_plugin_update_vma_map",
  "cr_plugin_resume_devices_late",
  "cr_plugin_pause_devices",
  "cr_plugin_checkpoint_devices",
  "cr_plugin_post_forking",
  "cr_plugin_restore_init",
  "cr_plugin_dump_devices_late",
] as const;

/** sizeof(struct stat) on x86_64, what fstat(2) fills. */
const STAT_SIZE = 144;

/** What UPDATE_VMA_MAP answered: its return, the new page offset and the plugin's fd (or -1). */
export interface VmaMapUpdate {
  ret: number;
  newPgoff: bigint;
  pluginFd: number;
}

/** The C signature of each hook, by number. */
const SIGNATURES = [
  { parameters: ["i32", "i32"], result: "i32" }, // DUMP_UNIX_SK(int fd, int id)
  { parameters: ["i32"], result: "i32" }, // RESTORE_UNIX_SK(int id)
  { parameters: ["i32", "i32"], result: "i32" }, // DUMP_EXT_FILE(int fd, int id)
  { parameters: ["i32", "buffer"], result: "i32" }, // RESTORE_EXT_FILE(int id, bool *retry_needed)
  { parameters: ["buffer", "i32"], result: "i32" }, // DUMP_EXT_MOUNT(char *mountpoint, int id)
  { parameters: ["i32", "buffer", "buffer", "buffer"], result: "i32" }, // RESTORE_EXT_MOUNT(id, mnt, old_root, int *is_file)
  { parameters: ["i32", "i32", "buffer"], result: "i32" }, // DUMP_EXT_LINK(int index, int type, char *kind)
  { parameters: ["i32", "buffer"], result: "i32" }, // HANDLE_DEVICE_VMA(int fd, const struct stat *)
  { parameters: ["buffer", "u64", "u64", "buffer", "buffer"], result: "i32" }, // UPDATE_VMA_MAP(...)
  { parameters: ["i32"], result: "i32" }, // RESUME_DEVICES_LATE(int pid)
  { parameters: ["i32"], result: "i32" }, // PAUSE_DEVICES(int pid)
  { parameters: ["i32"], result: "i32" }, // CHECKPOINT_DEVICES(int pid)
  { parameters: [], result: "i32" }, // POST_FORKING(void)
  { parameters: [], result: "i32" }, // RESTORE_INIT(void)
  { parameters: ["i32"], result: "i32" }, // DUMP_DEVICES_LATE(int id)
] as const satisfies readonly Deno.UnsafeCallbackDefinition[];

/** A C function at `p` with the signature `def` (the pointer came from dlsym or the descriptor). */
function cFunction<const D extends Deno.ForeignFunction>(
  p: Deno.PointerObject,
  def: D,
): Deno.UnsafeFnPointer<D> {
  return new Deno.UnsafeFnPointer(p as Deno.PointerObject<D>, def);
}

const INIT = { parameters: ["i32"], result: "i32" } as const;
const EXIT = { parameters: ["i32", "i32"], result: "void" } as const;

export interface NativePluginDescriptor {
  name: string;
  version: number;
  maxHooks: number;
  /** Hook numbers the plugin fills. */
  hooks: number[];
  /** True when it was found by function names (the old API). */
  old: boolean;
}

/** One loaded C plugin. */
export class NativePlugin {
  readonly #handle: Deno.PointerObject;
  readonly #hooks: (Deno.PointerObject | null)[];
  readonly #init: Deno.PointerObject | null;
  readonly #exit: Deno.PointerObject | null;
  readonly descriptor: NativePluginDescriptor;

  private constructor(
    handle: Deno.PointerObject,
    d: NativePluginDescriptor,
    init: Deno.PointerObject | null,
    exit: Deno.PointerObject | null,
    hooks: (Deno.PointerObject | null)[],
  ) {
    this.#handle = handle;
    this.descriptor = d;
    this.#init = init;
    this.#exit = exit;
    this.#hooks = hooks;
  }

  /** Loads the library (the host first, so criu's symbols resolve); throws LoaderError. */
  static load(path: string, hookCount: number): NativePlugin {
    PluginHost.load();
    const handle = dlopen(path, RTLD.LAZY);
    const desc = dlsym(handle, "CR_PLUGIN_DESC");
    if (!desc) return NativePlugin.#fromNames(handle, path);
    const v = new Deno.UnsafePointerView(desc);
    const namePtr = v.getPointer(DESC.name);
    const maxHooks = v.getUint32(DESC.maxHooks);
    const hooks: (Deno.PointerObject | null)[] = [];
    // A descriptor claiming more hooks than we know is refused by the caller before any is read.
    for (let i = 0; i < Math.min(maxHooks, hookCount); i++) hooks.push(v.getPointer(DESC.hooks + 8 * i));
    const d: NativePluginDescriptor = {
      name: namePtr ? new Deno.UnsafePointerView(namePtr).getCString() : path,
      version: v.getUint32(DESC.version),
      maxHooks,
      hooks: hooks.flatMap((h, i) => (h ? [i] : [])),
      old: false,
    };
    return new NativePlugin(handle, d, v.getPointer(DESC.init), v.getPointer(DESC.exit), hooks);
  }

  static #fromNames(handle: Deno.PointerObject, path: string): NativePlugin {
    const hooks = OLD_HOOK_NAMES.map((n) => dlsym(handle, n));
    const d: NativePluginDescriptor = {
      name: path,
      version: -1, // filled by the caller with the old API's version
      maxHooks: OLD_HOOK_NAMES.length,
      hooks: hooks.flatMap((h, i) => (h ? [i] : [])),
      old: true,
    };
    return new NativePlugin(
      handle,
      d,
      dlsym(handle, "cr_plugin_init"),
      dlsym(handle, "cr_plugin_fini"),
      hooks,
    );
  }

  /** init(stage); the old API's cr_plugin_init(void) takes no stage. 0 when there is none. */
  init(stage: number): number {
    if (!this.#init) return 0;
    if (this.descriptor.old) {
      return cFunction(this.#init, { parameters: [], result: "i32" }).call();
    }
    return cFunction(this.#init, INIT).call(stage);
  }

  /** exit(stage, ret); the old API's cr_plugin_fini(void) takes neither. */
  exit(stage: number, ret: number): void {
    if (!this.#exit) return;
    if (this.descriptor.old) {
      cFunction(this.#exit, { parameters: [], result: "void" }).call();
      return;
    }
    cFunction(this.#exit, EXIT).call(stage, ret);
  }

  has(hook: number): boolean {
    return (this.#hooks[hook] ?? null) !== null;
  }

  #hook(hook: number): Deno.PointerObject {
    const p = this.#hooks[hook];
    if (!p) throw new Error(`plugin ${this.descriptor.name} has no hook ${hook}`);
    return p;
  }

  /** A hook whose arguments are all ints (fds, ids, pids) or none. */
  callInts(hook: number, ...args: number[]): number {
    const def = SIGNATURES[hook];
    if (!def || def.parameters.some((t) => t !== "i32") || def.parameters.length !== args.length) {
      throw new Error(`hook ${hook} does not take ${args.length} int argument(s)`);
    }
    const fn = cFunction(this.#hook(hook), def as Deno.ForeignFunction) as Deno.UnsafeFnPointer<
      { parameters: "i32"[]; result: "i32" }
    >;
    return fn.call(...args) as number;
  }

  /** RESTORE_EXT_FILE(id, &retry_needed): the fd (or -errno) and whether to ask again later. */
  restoreExtFile(hook: number, id: number): { ret: number; retry: boolean } {
    const retry = new Uint8Array(1);
    const ret = cFunction(this.#hook(hook), SIGNATURES[3]).call(id, retry);
    return { ret, retry: retry[0] !== 0 };
  }

  /** DUMP_EXT_MOUNT(mountpoint, id). */
  dumpExtMount(hook: number, mountpoint: string, id: number): number {
    return cFunction(this.#hook(hook), SIGNATURES[4]).call(cstr(mountpoint), id);
  }

  /** RESTORE_EXT_MOUNT(id, mountpoint, old_root, is_file): CRIU passes NULL for is_file. */
  restoreExtMount(hook: number, id: number, mountpoint: string, oldRoot: string): number {
    return cFunction(this.#hook(hook), SIGNATURES[5]).call(id, cstr(mountpoint), cstr(oldRoot), null);
  }

  /**
   * HANDLE_DEVICE_VMA(fd, &stat): the plugin is shown criu's fd on a mapped device and the
   * kernel's struct stat of it (fstat's own bytes: criu-ts never lays it out).
   */
  handleDeviceVma(hook: number, fd: number): number {
    const stat = new Uint8Array(STAT_SIZE);
    callBig("fstat", libc.syscall(BigInt(NR.fstat), BigInt(fd), addressOf(stat), 0n, 0n, 0n, 0n));
    return cFunction(this.#hook(hook), SIGNATURES[7]).call(fd, stat);
  }

  /**
   * UPDATE_VMA_MAP(path, addr, old_pgoff, &new_pgoff, &plugin_fd): 1 when the plugin moved the
   * area's offset (and may give an fd of criu's own to map from, or -1), else its answer.
   */
  updateVmaMap(hook: number, path: string, addr: bigint, pgoff: bigint): VmaMapUpdate {
    const newPgoff = new BigUint64Array(1);
    const pluginFd = new Int32Array([-1]);
    const ret = cFunction(this.#hook(hook), SIGNATURES[8]).call(
      cstr(path),
      addr,
      pgoff,
      new Uint8Array(newPgoff.buffer),
      new Uint8Array(pluginFd.buffer),
    );
    return { ret, newPgoff: newPgoff[0]!, pluginFd: pluginFd[0]! };
  }

  /** DUMP_EXT_LINK(index, type, kind). */
  dumpExtLink(hook: number, index: number, type: number, kind: string): number {
    return cFunction(this.#hook(hook), SIGNATURES[6]).call(index, type, cstr(kind));
  }

  close(): void {
    dlclose(this.#handle);
  }
}
