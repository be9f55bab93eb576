/**
 * Plugins as criu-ts sees them, C or TypeScript: the stages and hooks of CRIU's plugin API
 * (criu-plugin.h: facts of its ABI), and the interface a plugin written in TypeScript implements.
 *
 * A TypeScript plugin is a module (`.ts` or `.js`) in the plugin directory whose default export
 * (or `plugin` export) is a `CriuPlugin`. It is asked in the same chain as C plugins, in load order,
 * until one answers anything but `-ENOTSUP`. Its hooks are synchronous: they run in the middle of
 * a dump or restore, with the tree frozen. Fds are criu's own: `PluginFd.path` opens another
 * handle on the same file with Deno's APIs (`Deno.openSync(fd.path)`), `fd.fd` is the number for
 * FFI. A restore hook gives back a file to open (`{ path, flags }`) or an fd of criu's own.
 */

/** CRIU's plugin API version this build speaks (CRIU_PLUGIN_GEN_VERSION(0, 2, 0)). */
export const PLUGIN_VERSION = (0 << 16) + (2 << 8) + 0;
/** Plugins found by function names only (no descriptor) are taken as this version. */
export const PLUGIN_VERSION_OLD = (0 << 16) + (1 << 8) + 0;

/** What the operation is, as `init(stage)` and `exit(stage, ret)` are told. */
export const STAGE = { DUMP: 0, PRE_DUMP: 1, RESTORE: 2 } as const;
export type Stage = typeof STAGE[keyof typeof STAGE];

/** The hook numbers of CR_PLUGIN_DESC.hooks[], in CRIU's order. */
export const HOOK = {
  DUMP_UNIX_SK: 0,
  RESTORE_UNIX_SK: 1,
  DUMP_EXT_FILE: 2,
  RESTORE_EXT_FILE: 3,
  DUMP_EXT_MOUNT: 4,
  RESTORE_EXT_MOUNT: 5,
  DUMP_EXT_LINK: 6,
  HANDLE_DEVICE_VMA: 7,
  UPDATE_VMA_MAP: 8,
  RESUME_DEVICES_LATE: 9,
  PAUSE_DEVICES: 10,
  CHECKPOINT_DEVICES: 11,
  POST_FORKING: 12,
  RESTORE_INIT: 13,
  DUMP_DEVICES_LATE: 14,
} as const;
export type HookName = keyof typeof HOOK;
export const HOOK_COUNT = Object.keys(HOOK).length;

/** A plugin's "not mine": the next plugin is asked. */
export const ENOTSUP = 95;

/** An fd of criu's own process that a dump hook may read (it is the dumped task's file). */
export interface PluginFd {
  /** The fd number in criu's process (for FFI). */
  readonly fd: number;
  /** `/proc/self/fd/N`: opens another handle on the same file with Deno's APIs. */
  readonly path: string;
}

/** What a restore hook gives back: a file criu opens, or an fd of criu's own (ownership passes). */
export type RestoredFile = { path: string; flags: number } | { fd: number };

/** UPDATE_VMA_MAP's answer: its return, the area's new page offset, an fd of criu's or -1. */
export interface VmaMapUpdate {
  ret: number;
  newPgoff: bigint;
  pluginFd: number;
}

/** Where the images are: a path, and an fd on the directory (criu_get_image_dir()). */
export interface PluginImages {
  readonly path: string;
  readonly fd: number;
}

/** Logging into criu's log at the plugin's level (pr_info, pr_err...). */
export interface PluginLog {
  error(text: string): void;
  warn(text: string): void;
  info(text: string): void;
  debug(text: string): void;
}

export interface PluginContext {
  readonly images: PluginImages;
  readonly log: PluginLog;
}

/**
 * A plugin in TypeScript. Every hook answers as its C counterpart: 0 (or a result) when it took
 * the object, `-ENOTSUP` when it is not its own (the next plugin is asked), any other negative
 * errno to fail the operation cleanly.
 */
export interface CriuPlugin {
  readonly name: string;
  /** Returns 0 to take part, anything else stops the operation (`init` failed). */
  init?(stage: Stage, ctx: PluginContext): number;
  /** Always called at the end; `ret` is non-zero when the operation failed. */
  exit?(stage: Stage, ret: number): void;
  /** A file no built-in kind takes; `id` goes into the images (ext_file_entry). */
  dumpExtFile?(file: PluginFd, id: number): number;
  restoreExtFile?(id: number): RestoredFile | number;
  /** A unix socket whose peer is outside the tree; `id` is its inode. */
  dumpUnixSk?(socket: PluginFd, id: number): number;
  restoreUnixSk?(id: number): RestoredFile | number;
  /**
   * A bind mount whose source is outside the tree and that no option names: `mountpoint` as CRIU
   * gives it ("./" and the path in the tree's view), `id` its mount id. 0 takes it.
   */
  dumpExtMount?(mountpoint: string, id: number): number;
  /** Mounts what was dumped as mount `id` at `mountpoint` (a path of criu's); 0 when done. */
  restoreExtMount?(id: number, mountpoint: string, oldRoot: string): number;
  /** A network link no built-in kind takes. */
  dumpExtLink?(index: number, type: number, kind: string): number;
  /**
   * A mapping of a device no built-in backing takes (HANDLE_DEVICE_VMA): 0 when the plugin
   * answers for it (its memory is then the plugin's to save), -ENOTSUP when not.
   */
  handleDeviceVma?(device: PluginFd, stat: Deno.FileInfo): number;
  /**
   * At restore, before such an area is mapped (UPDATE_VMA_MAP): 1 with a new page offset (and
   * optionally an fd of criu's own to map from), or 0 / -ENOTSUP to map the file as dumped.
   */
  updateVmaMap?(path: string, addr: bigint, pgoff: bigint): VmaMapUpdate | number;
  pauseDevices?(pid: number): number;
  checkpointDevices?(pid: number): number;
  dumpDevicesLate?(id: number): number;
  postForking?(): number;
  restoreInit?(): number;
  resumeDevicesLate?(pid: number): number;
}
