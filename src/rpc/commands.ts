/**
 * The RPC commands. `criu swrk FD` serves the SOCK_SEQPACKET socket it inherited as FD (libcriu,
 * pycriu, go-criu and runc start it so) until the client closes it; `criu service` listens on a
 * socket and serves each connection in a `criu swrk` worker (service.ts).
 */
import type { CommandContext } from "../command.ts";
import { SeqpacketSocket } from "../../ffi/socket.ts";
import { RpcChannel } from "./channel.ts";
import { serveConnection } from "./server.ts";
import { runService, WORKER_ENV } from "./service.ts";

export async function swrkCommand(ctx: CommandContext): Promise<number> {
  const fd = Number(ctx.positionals[0]);
  const socket = SeqpacketSocket.adopt(fd);
  // A worker of `criu service` serves a client that is not its parent; children must not see the mark.
  const mode = Deno.env.get(WORKER_ENV) === "1" ? "service" : "swrk";
  Deno.env.delete(WORKER_ENV);
  const channel = new RpcChannel(socket);
  try {
    const ok = await serveConnection({
      channel,
      base: ctx.options,
      log: ctx.log,
      mode,
      peer: socket.peerCredentials(),
    });
    return ok ? 0 : 1;
  } finally {
    channel.close();
  }
}

export function serviceCommand(ctx: CommandContext): number {
  return runService(ctx);
}
