/**
 * Action scripts over RPC (`criu_opts.notify_scripts`): at every hook the client gets a NOTIFY
 * reply naming the hook (`notify.script`), with the root task's pid for setup-namespaces and
 * post-restore, and must answer with a NOTIFY request carrying `notify_success = true` before the
 * dump or restore goes on. Any other answer, or a closed connection, aborts the operation. The
 * action scripts of the config files and command line run after the client has agreed, as CRIU
 * runs both.
 */
import { create } from "@bufbuild/protobuf";
import type { HookName, Hooks } from "../actions/hooks.ts";
import type { Log } from "../log.ts";
import { criu_notifySchema, criu_req_type, criu_reqSchema, criu_respSchema } from "../images/gen/rpc_pb.ts";
import { closeFd } from "../../ffi/fd.ts";
import type { RpcChannel } from "./channel.ts";
import { messageOf, NotifyError } from "./errors.ts";

/** The hooks whose notification carries the root task's pid (the others never do). */
const WITH_PID: ReadonlySet<HookName> = new Set(["setup-namespaces", "post-restore"]);

export class NotifyHooks implements Hooks {
  constructor(
    private readonly channel: RpcChannel,
    private readonly scripts: Hooks,
    private readonly log: Log,
  ) {}

  run(hook: HookName, pid?: number): void {
    this.#ask(hook, pid);
    this.scripts.run(hook, pid);
  }

  /** The fd goes with the NOTIFY reply (SCM_RIGHTS); no action script runs for it, as in CRIU. */
  sendFd(hook: HookName, fd: number): void {
    this.#ask(hook, undefined, [fd]);
  }

  #ask(hook: HookName, pid?: number, fds: readonly number[] = []): void {
    const notify = create(criu_notifySchema, { script: hook });
    if (pid !== undefined && WITH_PID.has(hook)) notify.pid = pid;
    this.log.debug(`Notifying the RPC client of ${hook}${notify.pid ? ` (pid ${notify.pid})` : ""}`);
    try {
      this.channel.send(
        criu_respSchema,
        create(criu_respSchema, { type: criu_req_type.NOTIFY, success: true, notify }),
        fds,
      );
    } catch (e) {
      throw new NotifyError(`Cannot notify the RPC client of ${hook}: ${messageOf(e)}`, { cause: e });
    }
    let answer;
    try {
      answer = this.channel.receive(criu_reqSchema);
    } catch (e) {
      throw new NotifyError(
        `No valid answer from the RPC client to the ${hook} notification: ${messageOf(e)}`,
        {
          cause: e,
        },
      );
    }
    if (answer === null) {
      throw new NotifyError(`The RPC client closed the connection at the ${hook} notification`);
    }
    answer.fds.forEach(closeFd);
    const { message } = answer;
    if (message.type !== criu_req_type.NOTIFY) {
      throw new NotifyError(
        `The RPC client answered the ${hook} notification with a request of type ${
          criu_req_type[message.type] ?? message.type
        }, expected NOTIFY`,
      );
    }
    if (!message.notifySuccess) {
      throw new NotifyError(`The RPC client reported a failure at the ${hook} notification`);
    }
  }
}
