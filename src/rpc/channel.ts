/**
 * One RPC connection: a SOCK_SEQPACKET socket carrying one bare protobuf message per packet (no
 * length prefix, no magic). The server receives `criu_req` and sends `criu_resp`; the client the
 * other way round. Fields this build does not know are skipped when decoding.
 */
import { type DescMessage, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import type { SeqpacketSocket } from "../../ffi/socket.ts";
import { closeFd } from "../../ffi/fd.ts";
import { RpcProtocolError } from "./errors.ts";

/** A decoded message and the fds that came with it. */
export interface Incoming<T> {
  message: T;
  fds: number[];
}

export class RpcChannel {
  constructor(readonly socket: SeqpacketSocket) {}

  send<D extends DescMessage>(schema: D, message: MessageShape<D>, fds: readonly number[] = []): void {
    this.socket.send(toBinary(schema, message), fds);
  }

  /**
   * The next message; null when the peer has closed the connection. A packet that does not decode
   * throws RpcProtocolError (the fds it carried are closed).
   */
  receive<D extends DescMessage>(schema: D): Incoming<MessageShape<D>> | null {
    const got = this.socket.receive();
    if (got === null) return null;
    try {
      return { message: fromBinary(schema, got.data), fds: got.fds };
    } catch (e) {
      got.fds.forEach(closeFd);
      throw new RpcProtocolError(
        `Cannot decode a ${schema.typeName} of ${got.data.byteLength} bytes: ${(e as Error).message}`,
      );
    }
  }

  /** Like receive(), for a caller that must not block its event loop while waiting. */
  async receiveAsync<D extends DescMessage>(schema: D): Promise<Incoming<MessageShape<D>> | null> {
    await this.socket.waitReadable();
    return this.receive(schema);
  }

  close(): void {
    this.socket.close();
  }
}
