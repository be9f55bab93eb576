/**
 * A plugin written in TypeScript, in the chain as a C plugin is: its hooks get criu's fds as
 * `PluginFd`s and may give back a file to open; a hook it does not define is "not mine".
 */
import { OPEN, openFd } from "../../ffi/fd.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import {
  type CriuPlugin,
  ENOTSUP,
  type HookName,
  type PluginContext,
  type RestoredFile,
  type Stage,
  type VmaMapUpdate,
} from "./api.ts";
import type { LoadedPlugin } from "./plugins.ts";

const HOOK_METHODS: Record<HookName, keyof CriuPlugin> = {
  DUMP_UNIX_SK: "dumpUnixSk",
  RESTORE_UNIX_SK: "restoreUnixSk",
  DUMP_EXT_FILE: "dumpExtFile",
  RESTORE_EXT_FILE: "restoreExtFile",
  DUMP_EXT_MOUNT: "dumpExtMount",
  RESTORE_EXT_MOUNT: "restoreExtMount",
  DUMP_EXT_LINK: "dumpExtLink",
  HANDLE_DEVICE_VMA: "handleDeviceVma",
  UPDATE_VMA_MAP: "updateVmaMap",
  RESUME_DEVICES_LATE: "resumeDevicesLate",
  PAUSE_DEVICES: "pauseDevices",
  CHECKPOINT_DEVICES: "checkpointDevices",
  POST_FORKING: "postForking",
  RESTORE_INIT: "restoreInit",
  DUMP_DEVICES_LATE: "dumpDevicesLate",
};

/** Hooks whose first argument is an fd of criu's, handed over as a PluginFd. */
const FD_FIRST = new Set<HookName>(["DUMP_UNIX_SK", "DUMP_EXT_FILE"]);

export class ScriptPlugin implements LoadedPlugin {
  constructor(private readonly p: CriuPlugin, private readonly ctx: PluginContext) {}

  get name(): string {
    return this.p.name;
  }

  init(stage: Stage): number {
    return this.p.init?.(stage, this.ctx) ?? 0;
  }

  exit(stage: Stage, ret: number): void {
    this.p.exit?.(stage, ret);
  }

  has(hook: HookName): boolean {
    const m = HOOK_METHODS[hook];
    return m !== "name" && typeof this.p[m] === "function";
  }

  callInts(hook: HookName, ...args: number[]): number {
    const fn = this.p[HOOK_METHODS[hook]] as (...a: unknown[]) => number;
    const [first, ...rest] = args;
    const call = FD_FIRST.has(hook) ? [{ fd: first!, path: `/proc/self/fd/${first}` }, ...rest] : args;
    return fn.call(this.p, ...call) ?? -ENOTSUP;
  }

  restoreFd(hook: "RESTORE_EXT_FILE" | "RESTORE_UNIX_SK", id: number): number {
    const got = hook === "RESTORE_EXT_FILE" ? this.p.restoreExtFile?.(id) : this.p.restoreUnixSk?.(id);
    return fdOf(got ?? -ENOTSUP);
  }

  dumpExtLink(index: number, type: number, kind: string): number {
    return this.p.dumpExtLink?.(index, type, kind) ?? -ENOTSUP;
  }

  dumpExtMount(mountpoint: string, id: number): number {
    return this.p.dumpExtMount?.(mountpoint, id) ?? -ENOTSUP;
  }

  restoreExtMount(id: number, mountpoint: string, oldRoot: string): number {
    return this.p.restoreExtMount?.(id, mountpoint, oldRoot) ?? -ENOTSUP;
  }

  handleDeviceVma(fd: number): number {
    const path = `/proc/self/fd/${fd}`;
    return this.p.handleDeviceVma?.({ fd, path }, Deno.statSync(path)) ?? -ENOTSUP;
  }

  updateVmaMap(path: string, addr: bigint, pgoff: bigint): VmaMapUpdate {
    const got = this.p.updateVmaMap?.(path, addr, pgoff) ?? -ENOTSUP;
    return typeof got === "number" ? { ret: got, newPgoff: pgoff, pluginFd: -1 } : got;
  }
}

/** A restore hook's answer as an fd of criu's, or -errno. */
function fdOf(got: RestoredFile | number): number {
  if (typeof got === "number") return got;
  if ("fd" in got) return got.fd;
  try {
    return openFd(got.path, got.flags | OPEN.CLOEXEC);
  } catch (e) {
    if (isSyscallError(e)) return -e.errno;
    throw e;
  }
}
