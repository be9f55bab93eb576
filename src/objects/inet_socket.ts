/**
 * IPv4 and IPv6 TCP and UDP sockets (files.img `isk` entries, type INETSK): unbound, bound,
 * listening (with backlog), UDP connected, and with --tcp-established, established TCP
 * connections (tcp_stream.ts), with the socket options CRIU keeps.
 *
 * Criu-ts works on a copy of the socket in its own process (pidfd_getfd: the same socket): at dump
 * it reads names, options and state there; at restore the socket is made in the task by a remote
 * socket() (so it belongs to the task's network namespace) and everything else (options, bind,
 * listen, connect, the repair of a connection and its queues) is done on criu's copy, without
 * copying anything through the task's memory.
 *
 * Established connections stay in repair mode from the moment they are read until the dump ends:
 * the tasks then die without their connections sending a thing (a socket closed in repair mode
 * just goes), or, for a failed dump or --leave-running, repair is turned off again. Their packets
 * are held back by the network lock meanwhile, and until the restore is complete.
 */
import { create } from "@bufbuild/protobuf";
import { socketNsId } from "./socket_options.ts";
import { socketNetns } from "../../ffi/netdev.ts";
import { fd_types, type file_entry, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import {
  type inet_sk_entry,
  inet_sk_entrySchema,
  type ip_opts_entry,
  ip_opts_entrySchema,
} from "../images/gen/sk-inet_pb.ts";
import { type sk_opts_entry, sk_opts_entrySchema } from "../images/gen/sk-opts_pb.ts";
import {
  type tcp_opts_entry,
  tcp_opts_entrySchema,
  type tcp_stream_entry,
} from "../images/gen/tcp-stream_pb.ts";
import { AF, formatIPv4, formatIPv6, type InetAddress, parseIP } from "../../ffi/sockaddr.ts";
import {
  bindTo,
  connectTo,
  copyFdOf,
  filterLength,
  getBoundDevice,
  getIntOption,
  getIntOptionIfAny,
  getLinger,
  getTimeout,
  IP,
  IPV6,
  listenOn,
  localName,
  remoteName,
  setBoundDevice,
  setIntOption,
  setLinger,
  setNonBlocking,
  setTimeout,
  SO,
  socketProtocolName,
  SOL,
  TCP,
  TCP_STATE,
  tcpInfo,
} from "../../ffi/inet_sock.ts";
import { closeFd } from "../../ffi/fd.ts";
import { SOCK } from "../../ffi/sockcall.ts";
import { IPPROTO } from "../../ffi/sock_diag.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import {
  addFdFile,
  type DumpFilesContext,
  emptyFown,
  type FdKind,
  fileFlags,
  type FilesSession,
  type FileTable,
  registerFdKind,
  type RestoreFilesContext,
} from "./files.ts";
import { refuse } from "./refusal.ts";
import {
  type Connection,
  connectionText,
  lockConnection,
  type LockScope,
  nftTableOf,
  onTheWire,
  unlockConnection,
} from "./network_lock.ts";
import {
  dumpStream,
  readStreamEntry,
  repairOff,
  repairOn,
  replayFins,
  restoreSequences,
  restoreStream,
  STREAM_STATES,
} from "./tcp_stream.ts";
import { rawSocketFor } from "../../ffi/tcp_segment.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { SyscallError } from "../../ffi/errors.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import type { inventory_entry } from "../images/gen/inventory_pb.ts";
import { NETWORK_LOCK_METHOD, type NetworkLock } from "../options/options.ts";
import { KINDS } from "../images/kinds.ts";

const SOCKET_NAME = /^socket:\[(\d+)\]$/;

/** The sockets this kind takes, by the protocol name the kernel gives them. */
const FLAVOURS: Record<string, { family: typeof AF.INET | typeof AF.INET6; type: number; proto: number }> = {
  TCP: { family: AF.INET, type: SOCK.STREAM, proto: IPPROTO.TCP },
  TCPv6: { family: AF.INET6, type: SOCK.STREAM, proto: IPPROTO.TCP },
  UDP: { family: AF.INET, type: SOCK.DGRAM, proto: IPPROTO.UDP },
  UDPv6: { family: AF.INET6, type: SOCK.DGRAM, proto: IPPROTO.UDP },
};

const STATE_NAMES = Object.fromEntries(Object.entries(TCP_STATE).map(([k, v]) => [v, k]));

/** The options the socket kinds read: --tcp-established, --tcp-close, --skip-in-flight, --network-lock. */
function socketOpts(session: FilesSession) {
  return session.opts;
}

/**
 * How the dump locked the connections: the restore unlocks them the same way, whatever its own
 * options say (as CRIU, which takes the method from the inventory and only warns about the option).
 */
function dumpedLockMethod(session: FilesSession): NetworkLock {
  const [inventory] = session.dir.readOptional<inventory_entry>(KINDS.INVENTORY);
  const recorded = Object.entries(NETWORK_LOCK_METHOD).find(([, n]) => n === inventory?.networkLockMethod)
    ?.[0];
  return (recorded as NetworkLock | undefined) ?? socketOpts(session).networkLock;
}

/** How this dump locks its connections: the method asked for, in the checkpoint's own nft table. */
function dumpLockScope(session: FilesSession): LockScope {
  return { method: socketOpts(session).networkLock, nftTable: nftTableOf(session.runId) };
}

/** A connection in repair mode: criu's copy of it, and its lock. */
interface Repaired {
  fd: number;
  ino: number;
  connection: Connection;
}

/** The kind's tree-wide state: connections held in repair mode, and those locked. */
interface InetState {
  repaired: Repaired[];
  locked: Connection[];
}

function inetState(table: FileTable): InetState {
  return table.stateOf("inet", () => ({ repaired: [], locked: [] }));
}

/** The address words of an image (network byte order, as the kernel keeps them). */
function addressWords(addr: InetAddress): number[] {
  const bytes = parseIP(addr.address, addr.family);
  const v = new DataView(bytes.buffer);
  return Array.from({ length: bytes.length / 4 }, (_, i) => v.getUint32(4 * i, true));
}

function addressOfWords(family: number, words: readonly number[], port: number): InetAddress {
  const n = family === AF.INET ? 1 : 4;
  if (words.length !== n) {
    throw new RestoreError(
      `Refusing the images: an inet address of family ${family} in files.img has ${words.length} words`,
    );
  }
  const bytes = new Uint8Array(new Uint32Array(words).buffer);
  const text = family === AF.INET ? formatIPv4(bytes) : formatIPv6(bytes);
  return { family: family as typeof AF.INET | typeof AF.INET6, address: text, port, scopeId: 0, flowinfo: 0 };
}

function connectionOf(e: inet_sk_entry): Connection {
  const local = addressOfWords(e.family, e.srcAddr, e.srcPort);
  const peer = addressOfWords(e.family, e.dstAddr, e.dstPort);
  const wire = onTheWire(e.family === AF.INET ? 4 : 6, local.address, peer.address);
  return { ...wire, localPort: e.srcPort, peerPort: e.dstPort };
}

function describeFd(fd: FdEntry, what: string): string {
  return `fd ${fd.fd} (${what})`;
}

// ---------------------------------------------------------------------------------------------
// Dump

/** The socket options CRIU keeps, read on criu's copy. */
function readSocketOptions(s: number): sk_opts_entry {
  const int = (level: number, name: number) => getIntOption(s, level, name);
  const snd = getTimeout(s, SO.SNDTIMEO);
  const rcv = getTimeout(s, SO.RCVTIMEO);
  const linger = getLinger(s);
  const boundDev = getBoundDevice(s);
  const bufLock = getIntOptionIfAny(s, SOL.SOCKET, SO.BUF_LOCK);
  return create(sk_opts_entrySchema, {
    soSndbuf: int(SOL.SOCKET, SO.SNDBUF),
    soRcvbuf: int(SOL.SOCKET, SO.RCVBUF),
    soSndTmoSec: snd.sec,
    soSndTmoUsec: snd.usec,
    soRcvTmoSec: rcv.sec,
    soRcvTmoUsec: rcv.usec,
    reuseaddr: int(SOL.SOCKET, SO.REUSEADDR) !== 0,
    soPriority: int(SOL.SOCKET, SO.PRIORITY),
    soRcvlowat: int(SOL.SOCKET, SO.RCVLOWAT),
    soMark: int(SOL.SOCKET, SO.MARK),
    // Newer kernels keep these two for unix and netlink sockets only.
    soPasscred: (getIntOptionIfAny(s, SOL.SOCKET, SO.PASSCRED) ?? 0) !== 0,
    soPasssec: (getIntOptionIfAny(s, SOL.SOCKET, SO.PASSSEC) ?? 0) !== 0,
    soDontroute: int(SOL.SOCKET, SO.DONTROUTE) !== 0,
    soNoCheck: int(SOL.SOCKET, SO.NO_CHECK) !== 0,
    soReuseport: int(SOL.SOCKET, SO.REUSEPORT) !== 0,
    soBroadcast: int(SOL.SOCKET, SO.BROADCAST) !== 0,
    soKeepalive: int(SOL.SOCKET, SO.KEEPALIVE) !== 0,
    soOobinline: int(SOL.SOCKET, SO.OOBINLINE),
    ...(linger !== undefined ? { soLinger: linger } : {}),
    ...(bufLock !== undefined ? { soBufLock: bufLock } : {}),
    ...(boundDev ? { soBoundDev: boundDev } : {}),
  });
}

function readIpOptions(s: number, family: number): ip_opts_entry {
  // IPv6 sockets keep the IPv4 options too (for v4-mapped traffic); the kernel answers both.
  return create(ip_opts_entrySchema, {
    freebind: getIntOption(s, SOL.IP, IP.FREEBIND) !== 0,
    pktinfo: getIntOption(s, SOL.IP, IP.PKTINFO) !== 0,
    tos: family === AF.INET ? getIntOption(s, SOL.IP, IP.TOS) : 0,
    ttl: getIntOption(s, SOL.IP, IP.TTL),
  });
}

/** TCP's own options; the keepalive values only when set, as CRIU 4.x writes them (here, not in sk_opts). */
function readTcpOptions(s: number): tcp_opts_entry {
  const t = create(tcp_opts_entrySchema, {
    cork: getIntOption(s, SOL.TCP, TCP.CORK) !== 0,
    nodelay: getIntOption(s, SOL.TCP, TCP.NODELAY) !== 0,
  });
  const keepcnt = getIntOption(s, SOL.TCP, TCP.KEEPCNT);
  const keepidle = getIntOption(s, SOL.TCP, TCP.KEEPIDLE);
  const keepintvl = getIntOption(s, SOL.TCP, TCP.KEEPINTVL);
  if (keepcnt) t.keepcnt = keepcnt;
  if (keepidle) t.keepidle = keepidle;
  if (keepintvl) t.keepintvl = keepintvl;
  return t;
}

/** The socket's TCP or UDP state as CRIU writes it, refusing what cannot be restored. */
function socketState(
  ctx: DumpFilesContext,
  fd: FdEntry,
  s: number,
  tcp: boolean,
  connected: boolean,
): { state: number; backlog: number } {
  if (!tcp) return { state: connected ? TCP_STATE.ESTABLISHED : TCP_STATE.CLOSE, backlog: 0 };
  const info = tcpInfo(s);
  const opts = socketOpts(ctx.session);
  const name = describeFd(fd, "TCP socket");
  switch (info.state) {
    case TCP_STATE.CLOSE:
      return { state: info.state, backlog: 0 };
    case TCP_STATE.LISTEN:
      if (info.unacked > 0 && !opts.skipInFlight) {
        refuse(
          ctx.pid,
          name,
          `the listener has ${info.unacked} connection(s) not accepted yet; in-flight connections are not supported, use --skip-in-flight to skip them`,
        );
      }
      return { state: info.state, backlog: info.sacked };
    case TCP_STATE.ESTABLISHED:
    case TCP_STATE.FIN_WAIT1:
    case TCP_STATE.FIN_WAIT2:
    case TCP_STATE.CLOSE_WAIT:
    case TCP_STATE.LAST_ACK:
    case TCP_STATE.CLOSING:
      // Half-closed and closing ones too, as CRIU: tcp_stream.ts replays their FINs.
      // --tcp-close alone: the connection is noted, to come back closed; nothing is locked or read.
      if (!opts.tcpEstablished && !opts.tcpClose) {
        refuse(ctx.pid, name, "connected TCP socket, consider using --tcp-established option");
      }
      return { state: info.state, backlog: 0 };
    default:
      return refuse(
        ctx.pid,
        name,
        `a TCP socket in state ${
          STATE_NAMES[info.state] ?? info.state
        } is not supported yet (only closed, listening, established and half-closed ones)`,
      );
  }
}

function dumpInetSocket(ctx: DumpFilesContext, fd: FdEntry): number {
  try {
    return dumpOne(ctx, fd);
  } catch (e) {
    if (!(e instanceof SyscallError)) throw e;
    throw new DumpError(`Cannot dump fd ${fd.fd} (${fd.target}) of process ${ctx.pid}: ${e.message}`);
  }
}

function dumpOne(ctx: DumpFilesContext, fd: FdEntry): number {
  const ino = Number(SOCKET_NAME.exec(fd.target)![1]);
  const flavour = FLAVOURS[socketProtocolName(`/proc/${ctx.pid}/fd/${fd.fd}`) ?? ""]!;
  const tcp = flavour.proto === IPPROTO.TCP;
  const s = copyFdOf(ctx.pid, fd.fd);
  let keep = false;
  try {
    if (filterLength(s) > 0) {
      refuse(ctx.pid, describeFd(fd, "inet socket"), "a socket filter (SO_ATTACH_FILTER) is not saved yet");
    }
    const local = localName(s) as InetAddress;
    const peer = remoteName(s) as InetAddress | null;
    const { state, backlog } = socketState(ctx, fd, s, tcp, peer !== null);
    const entry = create(inet_sk_entrySchema, {
      id: 0,
      ino,
      family: flavour.family,
      type: flavour.type,
      proto: flavour.proto,
      state,
      srcPort: local.port,
      dstPort: peer?.port ?? 0,
      flags: fileFlags(fd),
      backlog,
      srcAddr: addressWords(local),
      // CRIU's restore wants both addresses, the peer's zero when there is none.
      dstAddr: addressWords(peer ?? { ...local, address: flavour.family === AF.INET ? "0.0.0.0" : "::" }),
      fown: emptyFown(),
      ...socketNsId(ctx.session, s),
      opts: readSocketOptions(s),
      ipOpts: readIpOptions(s, flavour.family),
      ...(flavour.family === AF.INET6 ? { v6only: getIntOption(s, SOL.IPV6, IPV6.V6ONLY) !== 0 } : {}),
      ...(tcp ? { tcpOpts: readTcpOptions(s) } : {}),
    });
    if (tcp && STREAM_STATES.includes(state) && socketOpts(ctx.session).tcpEstablished) {
      dumpConnection(ctx, s, entry);
      keep = true;
    }
    return addFdFile(ctx, fd, (id) => {
      entry.id = id;
      return create(file_entrySchema, { type: fd_types.INETSK, id, isk: entry });
    });
  } finally {
    // A copy in repair mode is endInetDump's to close, after it left repair mode, even when its
    // stream image failed: closed here, the task's socket would stay in repair mode.
    if (!keep && !inetState(ctx.table).repaired.some((r) => r.fd === s)) closeFd(s);
  }
}

/**
 * Locks the connection's packets out, puts it in repair mode (it stays so until the dump ends,
 * with criu's copy kept for that) and writes its stream image. The lock's rules go in criu's
 * netfilter, which sees only the packets of its own network namespace: a connection of another
 * one (the tree's, or one nested in it) is not locked there, as CRIU does not (the root's
 * namespace is locked as a whole by the network-lock scripts; a CRIU restore would not lift rules
 * it did not expect).
 */
function dumpConnection(ctx: DumpFilesContext, s: number, entry: inet_sk_entry): void {
  const state = inetState(ctx.table);
  const connection = connectionOf(entry);
  if (inCriuNetns(s)) {
    state.locked.push(connection);
    lockConnection(dumpLockScope(ctx.session), connection, ctx.log);
  } else {
    ctx.log.debug(
      `Socket ${entry.ino}: ${connectionText(connection)} is not in criu's network namespace: not locked`,
    );
  }
  repairOn(s);
  state.repaired.push({ fd: s, ino: entry.ino, connection });
  ctx.log.debug(`Socket ${entry.ino}: ${connectionText(connection)} in repair mode`);
  dumpStream(s, entry.ino, ctx.session.dir);
}

/** Whether the socket at `s` belongs to criu's own network namespace (not knowing: it does). */
function inCriuNetns(s: number): boolean {
  try {
    return socketNetns(s) === Deno.readLinkSync("/proc/self/ns/net");
  } catch (e) {
    if (!(e instanceof SyscallError)) throw e;
    return true;
  }
}

function endInetDump(session: FilesSession, tasksGoOn: boolean): void {
  const state = inetState(session.table);
  for (const r of state.repaired) {
    try {
      if (tasksGoOn) repairOff(r.fd);
    } catch (e) {
      session.log.error(`Socket ${r.ino}: cannot leave repair mode: ${(e as Error).message}`);
    } finally {
      closeFd(r.fd);
    }
  }
  state.repaired.length = 0;
  // Killed or stopped tasks keep their connections locked until the restore unlocks them.
  if (tasksGoOn) {
    for (const c of state.locked) unlockConnection(dumpLockScope(session), c, session.log);
  }
  state.locked.length = 0;
}

// ---------------------------------------------------------------------------------------------
// Restore

/** Sets an int option only when the new socket's value differs (setting some locks autotuning). */
function setIfDifferent(s: number, level: number, name: number, want: number): void {
  const now = getIntOptionIfAny(s, level, name);
  if (now === undefined ? want !== 0 : now !== want) setIntOption(s, level, name, want);
}

/** The buffer sizes and their locks (SO_BUF_LOCK: which sizes autotuning leaves alone). */
function restoreBuffers(s: number, o: sk_opts_entry): void {
  // The kernel doubles what it is given for a buffer size and reports the doubled value.
  if (getIntOption(s, SOL.SOCKET, SO.SNDBUF) !== o.soSndbuf) {
    setIntOption(s, SOL.SOCKET, SO.SNDBUFFORCE, o.soSndbuf / 2);
  }
  if (getIntOption(s, SOL.SOCKET, SO.RCVBUF) !== o.soRcvbuf) {
    setIntOption(s, SOL.SOCKET, SO.RCVBUFFORCE, o.soRcvbuf / 2);
  }
  // Setting a size above locked it, which only the dumped lock bits may undo.
  const lock = getIntOptionIfAny(s, SOL.SOCKET, SO.BUF_LOCK);
  if (lock !== undefined && lock !== o.soBufLock) setIntOption(s, SOL.SOCKET, SO.BUF_LOCK, o.soBufLock);
}

function restoreSocketOptions(s: number, o: sk_opts_entry | undefined, tcp: boolean): void {
  if (!o) return;
  restoreBuffers(s, o);
  if (o.soSndTmoSec || o.soSndTmoUsec) setTimeout(s, SO.SNDTIMEO, o.soSndTmoSec, o.soSndTmoUsec);
  if (o.soRcvTmoSec || o.soRcvTmoUsec) setTimeout(s, SO.RCVTIMEO, o.soRcvTmoSec, o.soRcvTmoUsec);
  const flags: [number, boolean][] = [
    [SO.REUSEPORT, o.soReuseport],
    [SO.PASSCRED, o.soPasscred],
    [SO.PASSSEC, o.soPasssec],
    [SO.DONTROUTE, o.soDontroute],
    [SO.NO_CHECK, o.soNoCheck],
    [SO.BROADCAST, o.soBroadcast],
    [SO.KEEPALIVE, o.soKeepalive],
  ];
  for (const [name, on] of flags) setIfDifferent(s, SOL.SOCKET, name, on ? 1 : 0);
  setIfDifferent(s, SOL.SOCKET, SO.PRIORITY, o.soPriority);
  setIfDifferent(s, SOL.SOCKET, SO.RCVLOWAT, o.soRcvlowat || 1);
  setIfDifferent(s, SOL.SOCKET, SO.MARK, o.soMark);
  setIfDifferent(s, SOL.SOCKET, SO.OOBINLINE, o.soOobinline);
  if (tcp && o.tcpKeepcnt) setIfDifferent(s, SOL.TCP, TCP.KEEPCNT, o.tcpKeepcnt);
  if (tcp && o.tcpKeepidle) setIfDifferent(s, SOL.TCP, TCP.KEEPIDLE, o.tcpKeepidle);
  if (tcp && o.tcpKeepintvl) setIfDifferent(s, SOL.TCP, TCP.KEEPINTVL, o.tcpKeepintvl);
  if (o.soLinger || getLinger(s) !== undefined) setLinger(s, o.soLinger);
  if (o.soBoundDev) setBoundDevice(s, o.soBoundDev);
}

function restoreIpOptions(s: number, e: inet_sk_entry): void {
  const ip = e.ipOpts;
  if (e.family === AF.INET6) setIfDifferent(s, SOL.IPV6, IPV6.V6ONLY, e.v6only ? 1 : 0);
  if (!ip) return;
  setIfDifferent(s, SOL.IP, IP.FREEBIND, ip.freebind ? 1 : 0);
  setIfDifferent(s, SOL.IP, IP.PKTINFO, ip.pktinfo ? 1 : 0);
  if (e.family === AF.INET && ip.tos) setIfDifferent(s, SOL.IP, IP.TOS, ip.tos);
  if (ip.ttl) setIfDifferent(s, SOL.IP, IP.TTL, ip.ttl);
}

function restoreTcpOptions(s: number, t: tcp_opts_entry | undefined): void {
  if (!t) return;
  setIfDifferent(s, SOL.TCP, TCP.NODELAY, t.nodelay ? 1 : 0);
  setIfDifferent(s, SOL.TCP, TCP.CORK, t.cork ? 1 : 0);
  if (t.keepcnt) setIfDifferent(s, SOL.TCP, TCP.KEEPCNT, t.keepcnt);
  if (t.keepidle) setIfDifferent(s, SOL.TCP, TCP.KEEPIDLE, t.keepidle);
  if (t.keepintvl) setIfDifferent(s, SOL.TCP, TCP.KEEPINTVL, t.keepintvl);
}

function isConnection(e: inet_sk_entry): boolean {
  return e.proto === IPPROTO.TCP && STREAM_STATES.includes(e.state);
}

/** Restore-wide: the stream entries read at PREPARE, the connections held in repair mode. */
interface InetRestoreState {
  streams: Map<number, tcp_stream_entry>;
  repaired: Repaired[];
  /** Connections of the images whose lock the restore lifts at its end. */
  locked: Connection[];
}

function restoreState(table: FileTable): InetRestoreState {
  return table.stateOf("inet-restore", () => ({ streams: new Map(), repaired: [], locked: [] }));
}

function loadInetImages(session: FilesSession): void {
  const opts = socketOpts(session);
  const state = restoreState(session.table);
  for (const f of session.table.entries) {
    const e = f.isk;
    if (f.type !== fd_types.INETSK || !e) continue;
    if (!FLAVOURS[flavourName(e)]) {
      throw new RestoreError(
        `Refusing the images: inet socket ${e.ino} of files.img has family ${e.family}, type ${e.type}, protocol ${e.proto} (only TCP and UDP are restored)`,
      );
    }
    if (!isConnection(e)) continue;
    state.locked.push(connectionOf(e));
    if (!opts.tcpEstablished && !opts.tcpClose) {
      throw new RestoreError(
        `The images hold established TCP connection ${
          connectionText(connectionOf(e))
        }: restore with --tcp-established (or --tcp-close)`,
      );
    }
    if (opts.tcpEstablished) state.streams.set(e.ino, readStreamEntry(session.dir, e.ino));
  }
}

function flavourName(e: inet_sk_entry): string {
  return Object.entries(FLAVOURS).find(([, f]) =>
    f.family === e.family && f.type === e.type && f.proto === e.proto
  )?.[0] ?? "";
}

function openInetSocket(ctx: RestoreFilesContext, entry: file_entry): number {
  const e = entry.isk;
  if (!e) throw new RestoreError(`File ${entry.id} has no inet socket data`);
  try {
    return openOne(ctx, e);
  } catch (err) {
    if (!(err instanceof SyscallError)) throw err;
    throw new RestoreError(`Cannot restore inet socket ${e.ino}: ${err.message}`);
  }
}

function openOne(ctx: RestoreFilesContext, e: inet_sk_entry): number {
  const fd = Number(
    ctx.agent.call(`socket(inet ${e.ino})`, NR.socket, e.family, e.type | O.CLOEXEC, e.proto),
  );
  const s = copyFdOf(ctx.agent.pid, fd);
  let keep = false;
  try {
    keep = configure(ctx, s, e);
  } finally {
    if (!keep) closeFd(s);
  }
  return fd;
}

/** Makes criu's copy `s` of a new socket into the dumped one; true when it is kept in repair mode. */
function configure(ctx: RestoreFilesContext, s: number, e: inet_sk_entry): boolean {
  const tcp = e.proto === IPPROTO.TCP;
  const state = restoreState(ctx.table);
  const stream = isConnection(e) ? state.streams.get(e.ino) : undefined;
  // IP_TOS sets the priority as well: SO_PRIORITY comes after it.
  restoreIpOptions(s, e);
  restoreSocketOptions(s, e.opts, tcp);
  const local = addressOfWords(e.family, e.srcAddr, e.srcPort);
  if (stream) {
    // In repair mode a bind always succeeds (the listener that accepted it may hold the port).
    repairOn(s);
    bindTo(s, local);
    restoreSequences(s, stream, e.state);
    const peer = addressOfWords(e.family, e.dstAddr, e.dstPort);
    connectTo(s, peer);
    restoreStream(s, e.ino, stream, e.state, ctx.session.dir);
    replayFins(s, e.ino, stream, e.state, local, peer, () => rawSocketOfTask(ctx, peer));
    // The queues went in with bigger buffers.
    if (e.opts) restoreBuffers(s, e.opts);
    state.repaired.push({ fd: s, ino: e.ino, connection: connectionOf(e) });
  } else {
    // Set until every socket is bound: the dumped process may have had several on one port.
    setIntOption(s, SOL.SOCKET, SO.REUSEADDR, 1);
    // A connection restored closed (--tcp-close) is not bound: its listener may hold the port.
    if (e.srcPort !== 0 && !isConnection(e)) bindTo(s, local);
    if (e.state === TCP_STATE.LISTEN && tcp) listenOn(s, e.backlog);
    if (!tcp && e.state === TCP_STATE.ESTABLISHED) {
      connectTo(s, addressOfWords(e.family, e.dstAddr, e.dstPort));
    }
    setIntOption(s, SOL.SOCKET, SO.REUSEADDR, e.opts?.reuseaddr ? 1 : 0);
  }
  restoreTcpOptions(s, e.tcpOpts);
  if (e.flags & O.NONBLOCK) setNonBlocking(s, true);
  ctx.log.debug(`Socket ${e.ino} restored${stream ? " (established, in repair mode)" : ""}`);
  return stream !== undefined;
}

/**
 * A raw socket for the segments that replay a connection's FINs, made by the task so that it is
 * in the task's network namespace; criu keeps a copy, the task's fd is closed.
 */
function rawSocketOfTask(ctx: RestoreFilesContext, from: InetAddress): number {
  const { domain, type, protocol } = rawSocketFor(from);
  const theirs = Number(ctx.agent.call("socket(raw)", NR.socket, domain, type, protocol));
  try {
    return copyFdOf(ctx.agent.pid, theirs);
  } finally {
    ctx.agent.call("close", NR.close, theirs);
  }
}

/** Every task has its sockets: the connections leave repair mode with their dumped SO_REUSEADDR. */
function releaseConnections(session: FilesSession): void {
  const state = restoreState(session.table);
  for (const r of state.repaired) {
    repairOff(r.fd);
    const e = session.table.entries.find((f) => f.isk?.ino === r.ino)?.isk;
    if (e?.opts?.reuseaddr) setIntOption(r.fd, SOL.SOCKET, SO.REUSEADDR, 1);
  }
}

function endInetRestore(session: FilesSession): void {
  const state = restoreState(session.table);
  for (const r of state.repaired) closeFd(r.fd);
  state.repaired.length = 0;
  const scope = { method: dumpedLockMethod(session), nftTable: nftTableOf(session.runId) };
  for (const c of state.locked) unlockConnection(scope, c, session.log);
  state.locked.length = 0;
}

export const inetSocketKind: FdKind = {
  name: "inet socket",
  type: fd_types.INETSK,
  detect(fd, _stat, pid) {
    if (!SOCKET_NAME.test(fd.target)) return false;
    const name = socketProtocolName(`/proc/${pid}/fd/${fd.fd}`);
    return name !== null && FLAVOURS[name] !== undefined;
  },
  dump: dumpInetSocket,
  open: openInetSocket,
  endDump: endInetDump,
  loadImages: loadInetImages,
  afterAllFds: releaseConnections,
  endRestore: endInetRestore,
};

registerFdKind(inetSocketKind);
