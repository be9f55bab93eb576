/**
 * Packet sockets (AF_PACKET, raw and datagram), as CRIU keeps them in files.img
 * (`packet_sock_entry`): the type and protocol, the interface bound to, TPACKET version, reserve,
 * aux data, original device, virtio-net headers, loss mode, timestamp source, copy threshold, the
 * memberships (multicast and unicast addresses, promiscuous and all-multicast modes), the fanout
 * group, the receive and transmit rings' geometry, and the socket options. sock_diag
 * (PACKET_DIAG, in the task's network namespace) tells them, as CRIU reads them.
 *
 * The obsolete SOCK_PACKET type keeps only its device (bound by name) and the socket options, as
 * in CRIU. Packets waiting in a socket's queue are not saved (CRIU drops them too: a capture loses
 * what arrived while it was checkpointed). Refused by name, as CRIU cannot take them either: a
 * membership added more than once, a membership of an unknown type. Not yet: a ring mapped into
 * memory.
 *
 * A socket belongs to the network namespace it was made in, which need not be its holder's (a task
 * may make it, then move to another namespace with setns): sock_diag is asked in the socket's own
 * namespace, and the entry records that namespace (CRIU's ns_id, found with SIOCGSKNS).
 *
 * At restore the socket is made in the task, inside the socket's namespace (socket_netns.ts), then
 * bound and set up from criu's copy of it in CRIU's order: bind, version, reserve, timestamp, copy threshold,
 * the flags, memberships, rings, fanout, file flags and socket options.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import {
  type packet_ring,
  packet_ringSchema,
  type packet_sock_entry,
  packet_sock_entrySchema,
} from "../images/gen/packet-sock_pb.ts";
import type { PacketSocketInfo } from "../../ffi/sock_diag.ts";
import { socketsInNetnsOfSocket } from "./socket_listing.ts";
import { makeSocketInTask } from "./socket_in_task.ts";
import {
  addPacketMembership,
  bindPacketSocket,
  bindPacketSocketToName,
  interfaceName,
  PACKET_MR,
  PACKET_OPT,
  PDI,
  setPacketOption,
  setPacketRing,
  SOCK_PACKET,
} from "../../ffi/packet_sock.ts";
import { AF } from "../../ffi/sockaddr.ts";
import { socketProtocolName } from "../../ffi/inet_sock.ts";
import { copyFdOf } from "../../ffi/process.ts";
import { closeFd } from "../../ffi/fd.ts";
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

/**
 * The packet sockets sock_diag lists in the network namespace of the socket at `sock` (criu's
 * copy), asked once per namespace and dump.
 */
function listed(table: FileTable, sock: number): Map<number, PacketSocketInfo> {
  return socketsInNetnsOfSocket(table, "packet", sock, (diag) => diag.packetSockets());
}

/** The protocol as socket() takes it: the ethertype in network byte order (CRIU's htons). */
function networkOrder(protocol: number): number {
  return ((protocol & 0xff) << 8) | ((protocol >> 8) & 0xff);
}

function ringEntry(numbers: readonly number[]): packet_ring {
  const [blockSize, blockNr, frameSize, frameNr, retireTmo, sizeofPriv, features] = numbers;
  return create(packet_ringSchema, {
    blockSize: blockSize ?? 0,
    blockNr: blockNr ?? 0,
    frameSize: frameSize ?? 0,
    frameNr: frameNr ?? 0,
    retireTmo: retireTmo ?? 0,
    sizeofPriv: sizeofPriv ?? 0,
    features: features ?? 0,
  });
}

const KNOWN_MEMBERSHIPS = new Set<number>(Object.values(PACKET_MR));

function memberships(pid: number, what: string, info: PacketSocketInfo) {
  return info.mclist.map((m) => {
    if (m.count !== 1) {
      refuse(pid, what, "multiple MC membership not supported (a membership added more than once)");
    }
    if (!KNOWN_MEMBERSHIPS.has(m.type)) refuse(pid, what, `unknown mc membership type ${m.type}`);
    const withAddress = m.type === PACKET_MR.MULTICAST || m.type === PACKET_MR.UNICAST;
    return { index: m.ifindex, type: m.type, addr: withAddress ? m.addr : new Uint8Array(0) };
  });
}

function dumpPacket(ctx: DumpFilesContext, fd: FdEntry): number {
  const ino = Number(SOCKET_NAME.exec(fd.target)![1]);
  const what = `fd ${fd.fd} (packet socket ${ino})`;
  const ours = copyFdOf(ctx.pid, fd.fd);
  try {
    const info = listed(ctx.table, ours).get(ino);
    if (!info) refuse(ctx.pid, what, "the kernel's list of packet sockets does not have it");
    const pdi = info.info;
    if (!pdi) refuse(ctx.pid, what, "sock_diag gave no packet socket info for it");
    const mclist = memberships(ctx.pid, what, info);
    if (info.meminfo?.rmemAlloc) {
      ctx.log.info(`${what} of process ${ctx.pid}: its queued packets are not saved, as in CRIU`);
    }
    const fields = {
      type: info.type,
      protocol: networkOrder(info.protocol),
      flags: fileFlags(fd),
      ifindex: pdi.ifindex,
      fown: emptyFown(),
      opts: readSkOpts(ours, AF.PACKET),
      ...socketNsId(ctx.session, ours),
      version: pdi.version,
      reserve: pdi.reserve,
      auxData: (pdi.flags & PDI.AUXDATA) !== 0,
      origDev: (pdi.flags & PDI.ORIGDEV) !== 0,
      vnetHdr: (pdi.flags & PDI.VNETHDR) !== 0,
      loss: (pdi.flags & PDI.LOSS) !== 0,
      timestamp: pdi.tstamp,
      copyThresh: pdi.copyThresh,
      mclist,
      ...(info.fanout !== undefined ? { fanout: info.fanout } : {}),
      ...(info.rxRing ? { rxRing: ringEntry(info.rxRing) } : {}),
      ...(info.txRing ? { txRing: ringEntry(info.txRing) } : {}),
    };
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.PACKETSK,
        id,
        psk: create(packet_sock_entrySchema, { id, ...fields }),
      }));
  } finally {
    closeFd(ours);
  }
}

function ringNumbers(r: packet_ring): number[] {
  return [r.blockSize, r.blockNr, r.frameSize, r.frameNr, r.retireTmo, r.sizeofPriv, r.features];
}

/** An obsolete SOCK_PACKET socket: bound to its device by name, then its options. */
function configureSpkt(fd: number, e: packet_sock_entry): void {
  if (e.ifindex > 0) bindPacketSocketToName(fd, interfaceName(fd, e.ifindex));
  if (e.opts) writeSkOpts(fd, e.opts);
}

/** Binds and sets up criu's copy of the new socket as the entry says, in CRIU's order. */
function configure(fd: number, e: packet_sock_entry): void {
  if (e.type === SOCK_PACKET) return configureSpkt(fd, e);
  bindPacketSocket(fd, e.ifindex);
  setPacketOption(fd, PACKET_OPT.VERSION, e.version);
  setPacketOption(fd, PACKET_OPT.RESERVE, e.reserve);
  setPacketOption(fd, PACKET_OPT.TIMESTAMP, e.timestamp);
  setPacketOption(fd, PACKET_OPT.COPY_THRESH, e.copyThresh);
  if (e.auxData) setPacketOption(fd, PACKET_OPT.AUXDATA, 1);
  if (e.origDev) setPacketOption(fd, PACKET_OPT.ORIGDEV, 1);
  if (e.vnetHdr) setPacketOption(fd, PACKET_OPT.VNET_HDR, 1);
  if (e.loss) setPacketOption(fd, PACKET_OPT.LOSS, 1);
  for (const m of e.mclist) addPacketMembership(fd, m.index, m.type, m.addr);
  if (e.rxRing) setPacketRing(fd, "rx", ringNumbers(e.rxRing));
  if (e.txRing) setPacketRing(fd, "tx", ringNumbers(e.txRing));
  if (e.fanout !== NO_FANOUT) setPacketOption(fd, PACKET_OPT.FANOUT, e.fanout | 0);
  if (e.opts) writeSkOpts(fd, e.opts);
}

/** packet_sock_entry.fanout when the socket is in no fanout group (the field's default). */
const NO_FANOUT = 0xffffffff;

export const packetSocketKind: FdKind = {
  name: "packet socket",
  type: fd_types.PACKETSK,
  detect(fd, _stat, pid) {
    return SOCKET_NAME.test(fd.target) && socketProtocolName(`/proc/${pid}/fd/${fd.fd}`) === "PACKET";
  },
  dump: dumpPacket,
  open(ctx, entry) {
    const e = entry.psk;
    if (!e) throw new RestoreError(`File ${entry.id} has no packet socket data`);
    return makeSocketInTask(ctx.agent, {
      call: `socket(AF_PACKET, ${e.type}, 0x${e.protocol.toString(16)})`,
      what: `packet socket ${e.id}`,
      family: AF.PACKET,
      type: e.type,
      protocol: e.protocol,
      flags: e.flags,
    }, (ours) => configure(ours, e));
  },
};

registerFdKind(packetSocketKind);
