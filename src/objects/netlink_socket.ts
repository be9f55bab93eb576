/**
 * Netlink sockets (route, generic, audit... whatever protocol a program opened), as CRIU keeps
 * them in files.img (`netlink_sk_entry`): the protocol, the port id it was bound to, the first 32
 * multicast groups it joined, the port and group it is connected to, and the socket options.
 * sock_diag (NETLINK_DIAG, in the task's network namespace) tells them; a socket never bound nor
 * connected is not listed there, and only its protocol is kept.
 *
 * A socket with messages waiting to be read is refused (CRIU refuses it too: the kernel's answers
 * cannot be put back), and so is one joined to groups above 32.
 *
 * At restore the socket is made in the task (its network namespace is the task's) and bound and
 * connected from criu's copy of it. The kernel hands out port ids: when the dumped one is taken,
 * the socket gets a new one, as CRIU does, with a warning.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { type netlink_sk_entry, netlink_sk_entrySchema } from "../images/gen/sk-netlink_pb.ts";
import type { NetlinkSocketInfo } from "../../ffi/sock_diag.ts";
import { socketsInNetnsOf } from "./socket_listing.ts";
import { makeSocketInTask } from "./socket_in_task.ts";
import { socketKind } from "../../ffi/sockopt.ts";
import { bindSocket, connectSocket, MSG, receiveBytes, SOCK } from "../../ffi/sockcall.ts";
import { AF } from "../../ffi/sockaddr.ts";
import { socketProtocolName } from "../../ffi/inet_sock.ts";
import { copyFdOf } from "../../ffi/process.ts";
import { closeFd } from "../../ffi/fd.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import { RestoreError } from "../errors.ts";
import {
  addFdFile,
  type DumpFilesContext,
  emptyFown,
  type FdKind,
  fileFlags,
  type FileTable,
  registerFdKind,
} from "./files.ts";
import { refuse } from "./refusal.ts";
import { readSkOpts, socketNsId, writeSkOpts } from "./socket_options.ts";

const SOCKET_NAME = /^socket:\[(\d+)\]$/;
/** netlink_sk_entry.state: connected to a port or group (the kernel's NETLINK_CONNECTED). */
const NETLINK_CONNECTED = 1;
const NETLINK_UNCONNECTED = 0;

/** The netlink sockets sock_diag lists, per network namespace, asked once per dump. */
function listed(table: FileTable, pid: number): Map<number, NetlinkSocketInfo> {
  return socketsInNetnsOf(table, "netlink", pid, (diag) => diag.netlinkSockets());
}

/** Does the socket have a message waiting? A peek that finds none says EAGAIN. */
function hasData(fd: number): boolean {
  try {
    receiveBytes(fd, 1, MSG.PEEK | MSG.DONTWAIT);
    return true;
  } catch (e) {
    if (isSyscallError(e, "EAGAIN")) return false;
    throw e;
  }
}

function dumpNetlink(ctx: DumpFilesContext, fd: FdEntry): number {
  const ino = Number(SOCKET_NAME.exec(fd.target)![1]);
  const what = `fd ${fd.fd} (netlink socket ${ino})`;
  const ours = copyFdOf(ctx.pid, fd.fd);
  try {
    const protocol = socketKind(ours).protocol;
    if (hasData(ours)) refuse(ctx.pid, what, "the socket has data to read");
    const info = listed(ctx.table, ctx.pid).get(ino);
    const groups = (info?.groups ?? []).slice();
    while (groups.length > 0 && groups.at(-1) === 0) groups.pop();
    if (groups.length > 1) {
      refuse(ctx.pid, what, "it has joined groups above 32, which are not supported yet");
    }
    if (groups.length > 0 && !info?.portid) {
      refuse(ctx.pid, what, "it is bound to groups but not to a port id");
    }
    const fields = {
      ino,
      protocol,
      state: info?.state === NETLINK_CONNECTED ? NETLINK_CONNECTED : NETLINK_UNCONNECTED,
      flags: fileFlags(fd),
      portid: info?.portid ?? 0,
      groups,
      dstPortid: info?.dstPortid ?? 0,
      dstGroup: info?.dstGroup ?? 0,
      fown: emptyFown(),
      ...socketNsId(ctx.session, ours),
      opts: readSkOpts(ours, AF.NETLINK),
    };
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.NETLINKSK,
        id,
        nlsk: create(netlink_sk_entrySchema, { id, ...fields }),
      }));
  } finally {
    closeFd(ours);
  }
}

/** Binds and connects criu's copy of the new socket as the entry says. */
function configure(fd: number, e: netlink_sk_entry, log: { warn(m: string): void }): void {
  if (e.portid) {
    const groups = e.groups[0] ?? 0;
    try {
      bindSocket(fd, { family: AF.NETLINK, portid: e.portid, groups });
    } catch (err) {
      if (!isSyscallError(err, "EADDRINUSE")) throw err;
      // Port ids are handed out by the kernel and few programs care which they have.
      bindSocket(fd, { family: AF.NETLINK, portid: 0, groups });
      log.warn(`Netlink socket ${e.ino}: port ${e.portid} is taken, it got a new one`);
    }
  }
  if (e.state === NETLINK_CONNECTED) {
    const dstGroups = e.dstGroup ? 1 << (e.dstGroup - 1) : 0;
    connectSocket(fd, { family: AF.NETLINK, portid: e.dstPortid, groups: dstGroups });
  }
  if (e.opts) writeSkOpts(fd, e.opts);
}

export const netlinkSocketKind: FdKind = {
  name: "netlink socket",
  type: fd_types.NETLINKSK,
  detect(fd, _stat, pid) {
    return SOCKET_NAME.test(fd.target) && socketProtocolName(`/proc/${pid}/fd/${fd.fd}`) === "NETLINK";
  },
  dump: dumpNetlink,
  open(ctx, entry) {
    const e = entry.nlsk;
    if (!e) throw new RestoreError(`File ${entry.id} has no netlink socket data`);
    return makeSocketInTask(ctx.agent, {
      call: `socket(AF_NETLINK, ${e.protocol})`,
      what: `netlink socket ${e.ino}`,
      family: AF.NETLINK,
      type: SOCK.RAW,
      protocol: e.protocol,
      flags: e.flags,
    }, (ours) => configure(ours, e, ctx.log));
  },
};

registerFdKind(netlinkSocketKind);
