/**
 * The restore of a socket kind whose state is set with plain socket calls (netlink, packet): the
 * socket is made inside the restored task, so that it belongs to the task's network namespace and
 * fd table, then set up through criu's own copy of it, where ffi/ reaches it directly.
 */
import type { Agent } from "../agent.ts";
import { copyFdOf } from "../../ffi/process.ts";
import { closeFd } from "../../ffi/fd.ts";
import { F, NR, O } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";

export interface SocketInTask {
  /** For the calls' names and messages ("socket(AF_NETLINK, 0)", "netlink socket 7"). */
  call: string;
  what: string;
  family: number;
  type: number;
  protocol: number;
  /** The file's dumped flags: O_NONBLOCK is set again once the socket is set up. */
  flags: number;
}

/** Makes the socket in the task and sets it up with `configure` (on criu's copy): its fd in the task. */
export function makeSocketInTask(agent: Agent, s: SocketInTask, configure: (ours: number) => void): number {
  const fd = Number(agent.call(s.call, NR.socket, s.family, s.type | O.CLOEXEC, s.protocol));
  const ours = copyFdOf(agent.pid, fd);
  try {
    configure(ours);
  } catch (err) {
    throw new RestoreError(`Cannot restore ${s.what}: ${(err as Error).message}`, 0, { cause: err });
  } finally {
    closeFd(ours);
  }
  if (s.flags & O.NONBLOCK) agent.call("fcntl(F_SETFL)", NR.fcntl, fd, F.SETFL, O.NONBLOCK);
  return fd;
}
