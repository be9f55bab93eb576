/**
 * Action scripts (--action-script): each runs through /bin/sh -c at every hook, with the hook's
 * name in CRTOOLS_SCRIPT_ACTION, the images dir in CRTOOLS_IMAGE_DIR and the root task's pid in
 * CRTOOLS_INIT_PID where there is one. A script that fails aborts the dump or restore.
 */
import type { HookName, Hooks } from "./hooks.ts";
import type { Log } from "../log.ts";
import { NotSupportedError } from "../errors.ts";

export class ActionScriptError extends NotSupportedError {
  override name = "ActionScriptError";
}

export class ScriptHooks implements Hooks {
  constructor(
    private readonly scripts: readonly string[],
    private readonly imagesDir: string,
    private readonly log: Log,
  ) {}

  run(hook: HookName, pid?: number): void {
    for (const script of this.scripts) {
      const env: Record<string, string> = {
        CRTOOLS_SCRIPT_ACTION: hook,
        CRTOOLS_IMAGE_DIR: this.#imagesDir(),
      };
      if (pid !== undefined) env.CRTOOLS_INIT_PID = String(pid);
      this.log.debug(`Running action script for ${hook}: ${script}`);
      const r = new Deno.Command("/bin/sh", {
        args: ["-c", script],
        env,
        stdin: "null",
        stdout: "inherit",
        stderr: "inherit",
      })
        .outputSync();
      if (!r.success) {
        const how = r.signal ? `was killed by ${r.signal}` : `exited with status ${r.code}`;
        throw new ActionScriptError(`Action script "${script}" ${how} at the ${hook} hook`);
      }
    }
  }

  #imagesDir(): string {
    try {
      return Deno.realPathSync(this.imagesDir);
    } catch {
      return this.imagesDir;
    }
  }
}
