/**
 * sk_opts_entry, the socket-level options CRIU keeps for every socket kind, read from and written
 * to a socket criu holds a copy of (ffi/sockopt.ts does the getsockopt/setsockopt work). The
 * linger time is CRIU's so_linger: seconds when lingering is on, absent otherwise.
 */
import { create, isFieldSet } from "@bufbuild/protobuf";
import { type sk_opts_entry, sk_opts_entrySchema } from "../images/gen/sk-opts_pb.ts";
import {
  decodeBpf,
  encodeBpf,
  readSocketOptions,
  type SocketOptions,
  writeSocketOptions,
} from "../../ffi/sockopt.ts";
import { socketNetns } from "../../ffi/netdev.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import type { FilesSession } from "./files.ts";

/**
 * CRIU's ns_id of a socket entry: the id of the network namespace the socket at `fd` belongs to
 * (which a restore makes it in); nothing when the dump has no ids to give.
 */
export function socketNsId(session: FilesSession, fd: number): { nsId?: number } {
  if (!session.nsIdOfLink) return {};
  let link: string;
  try {
    link = socketNetns(fd);
  } catch (e) {
    // A kernel without SIOCGSKNS: the entry says nothing, which CRIU reads as the root's namespace.
    if (!isSyscallError(e)) throw e;
    return {};
  }
  return { nsId: session.nsIdOfLink(link) };
}

/** The options of the socket at `fd` (of address family `family`), as an image entry. */
export function readSkOpts(fd: number, family: number): sk_opts_entry {
  const o = readSocketOptions(fd, family);
  return create(sk_opts_entrySchema, {
    soSndbuf: o.sndbuf,
    soRcvbuf: o.rcvbuf,
    soSndTmoSec: BigInt(o.sndTimeout.sec),
    soSndTmoUsec: BigInt(o.sndTimeout.usec),
    soRcvTmoSec: BigInt(o.rcvTimeout.sec),
    soRcvTmoUsec: BigInt(o.rcvTimeout.usec),
    reuseaddr: o.reuseaddr,
    soPriority: o.priority,
    soRcvlowat: o.rcvlowat,
    soMark: o.mark,
    soPasscred: o.passcred ?? false,
    soPasssec: o.passsec ?? false,
    soDontroute: o.dontroute,
    soNoCheck: o.noCheck,
    ...(o.boundDevice ? { soBoundDev: o.boundDevice } : {}),
    soFilter: o.filter.map(encodeBpf),
    soReuseport: o.reuseport,
    soBroadcast: o.broadcast,
    soKeepalive: o.keepalive,
    soOobinline: o.oobinline ? 1 : 0,
    ...(o.linger.on ? { soLinger: o.linger.seconds } : {}),
    soBufLock: o.bufLock,
  });
}

/** Writes an entry's options on the socket at `fd` (buffer sizes before their lock). */
export function writeSkOpts(fd: number, e: sk_opts_entry): void {
  const o: Partial<SocketOptions> = {
    sndbuf: e.soSndbuf,
    rcvbuf: e.soRcvbuf,
    sndTimeout: { sec: Number(e.soSndTmoSec), usec: Number(e.soSndTmoUsec) },
    rcvTimeout: { sec: Number(e.soRcvTmoSec), usec: Number(e.soRcvTmoUsec) },
    reuseaddr: e.reuseaddr ?? false,
    reuseport: e.soReuseport ?? false,
    keepalive: e.soKeepalive ?? false,
    priority: e.soPriority ?? 0,
    rcvlowat: e.soRcvlowat || 1,
    mark: e.soMark ?? 0,
    broadcast: e.soBroadcast ?? false,
    oobinline: (e.soOobinline ?? 0) !== 0,
    noCheck: e.soNoCheck ?? false,
    dontroute: e.soDontroute ?? false,
    filter: e.soFilter.map(decodeBpf),
  };
  if (isFieldSet(e, sk_opts_entrySchema.field.soBufLock)) o.bufLock = e.soBufLock;
  if (e.soPasscred) o.passcred = true;
  if (e.soPasssec) o.passsec = true;
  if (e.soBoundDev) o.boundDevice = e.soBoundDev;
  if (isFieldSet(e, sk_opts_entrySchema.field.soLinger)) o.linger = { on: true, seconds: e.soLinger! };
  writeSocketOptions(fd, o);
}
