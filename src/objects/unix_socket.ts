/**
 * Unix sockets (stream, datagram, seqpacket), as CRIU keeps them: one `unix_sk_entry` per socket
 * in files.img (type UNIXSK), and the bytes waiting in each receive queue in sk-queues.img (an
 * `sk_packet_entry` naming the receiving socket's file id, then the raw bytes).
 *
 * Dump. The kernel's own list of a namespace's unix sockets (sock_diag) tells a socket's type,
 * state, name, peer, the connections waiting in a listener's backlog and its shutdown state; a
 * connection still in a backlog has no peer of its own and is tied to its listener through the
 * listener's list, as CRIU does. Options and queued data come from a copy of the socket taken into
 * criu's own process (pidfd_getfd): the queue is peeked with the socket's peek offset, which is
 * put back after, so nothing is consumed, and each piece goes straight to the image. Peers are
 * checked once every task is dumped: a peer outside the tree is refused, or with --ext-unix-sk a
 * datagram socket's peer is recorded as an external socket (CRIU's USK_EXTERN entry) to be
 * reconnected by name.
 *
 * Restore. The sockets linked by peers form a component, created whole in the first task that
 * needs any of them: a pair connected to each other with socketpair(), anything else with
 * socket(). Its ends are parked in that task, and every fd of them, in any task, is a copy, so
 * sockets shared between processes stay shared. Creation happens in the task (a socket belongs to
 * its creator's network namespace); the rest is done from criu's process on copies of the new
 * sockets: bind (a stale socket file at the path goes first), listen, connect (connections waiting
 * in a backlog, datagram sockets to their bound peer), the removal of a bound path that was gone
 * at dump time, the queued data sent from the peer so that it lands in the right queue, shutdown,
 * and the options.
 */
import { create, isFieldSet } from "@bufbuild/protobuf";
import { socketNsId } from "./socket_options.ts";
import { fd_types, type file_entry, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import {
  type file_perms_entry,
  file_perms_entrySchema,
  type unix_sk_entry,
  unix_sk_entrySchema,
} from "../images/gen/sk-unix_pb.ts";
import { type sk_opts_entry, sk_opts_entrySchema, sk_shutdown } from "../images/gen/sk-opts_pb.ts";
import { scm_entrySchema, type sk_packet_entry, sk_packet_entrySchema } from "../images/gen/sk-packet_pb.ts";
import type { FdEntry } from "../../ffi/proc.ts";
import { SHUTDOWN, type UnixSocketInfo } from "../../ffi/sock_diag.ts";
import { socketsInNetnsOf } from "./socket_listing.ts";
import { AF, encodeSockaddr, unixNameText } from "../../ffi/sockaddr.ts";
import { TCP_STATE } from "../../ffi/inet_sock.ts";
import {
  getFilter,
  getIntOption,
  getLinger,
  getTimeout,
  peekQueue,
  sendSome,
  setFilePerms,
  setFilter,
  setIntOption,
  setLinger,
  setNonblocking,
  setTimeout,
  SO,
  socketProtocolName,
} from "../../ffi/unix_sk.ts";
import { bindSocket, connectSocket, listenSocket, shutdownSocket, SOCK } from "../../ffi/sockcall.ts";
import { closeFd, OPEN, openFd, preadFull } from "../../ffi/fd.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import { SyscallError } from "../../ffi/errors.ts";
import { KINDS } from "../images/kinds.ts";
import { type ByteSink, createImageFile, ImageReader, ImageWriter } from "../images/file.ts";
import {
  addFdFile,
  type DumpFilesContext,
  dumpHeldFile,
  emptyFown,
  type FdKind,
  fileFlags,
  type FilesSession,
  type FileTable,
  grabFd,
  holdFile,
  registerFdKind,
  type RestoreFilesContext,
  takeFromCriu,
} from "./files.ts";
import { refuse } from "./refusal.ts";
import { ownerInside, ownerOutside, type TreeIds } from "./tree_ids.ts";
import { criuPrefixOf } from "./remap.ts";
import type { Agent, BatchCall } from "../agent.ts";
import { idsInUserNamespaceOf, userNamespaceRootOf } from "./userns.ts";
import { copyFdOf } from "../../ffi/process.ts";
import { ENOTSUP } from "../plugins/api.ts";
import { PluginError } from "../plugins/plugins.ts";
import { RestoreError } from "../errors.ts";
import { FD_PAIR_SIZE, parseFdPair, SCM_RIGHTS } from "../../ffi/structs.ts";

const SOCKET_NAME = /^socket:\[(\d+)\]$/;
/** A unix socket's state as sock_diag gives it is a TCP state number. */
const STATE = TCP_STATE;
/** unix_sk_entry.uflags: the socket is outside the tree, a datagram socket's peer (--ext-unix-sk). */
const USK_EXTERN = 1;
/** unix_sk_entry.uflags: a plugin took the socket (DUMP_UNIX_SK) and gives it back (RESTORE_UNIX_SK). */
const USK_CALLBACK = 4;
/** Buffer sizes while queues are refilled, as CRIU takes them (the kernel doubles what it is given). */
const FILL_BUFFER = 0x3fffffff;
/** The largest piece of a stream queue sent at once at restore. */
const SEND_CHUNK = 64 * 1024;
/** shutdown()'s `how` for each recorded state: SHUT_RD, SHUT_WR, SHUT_RDWR. */
const SHUT_FOR: Record<number, number> = {
  [sk_shutdown.READ]: 0,
  [sk_shutdown.WRITE]: 1,
  [sk_shutdown.BOTH]: 2,
};
const TYPE_NAMES: Record<number, string> = { 1: "stream", 2: "datagram", 5: "seqpacket" };

// ---------------------------------------------------------------------------------------------
// Dump

/** A dumped socket: its entry, where it was found, and its namespace's list for finding its peer. */
interface DumpedSocket {
  entry: unix_sk_entry;
  pid: number;
  fd: number;
  namespace: Map<number, UnixSocketInfo>;
}

interface DumpState {
  dumped: Map<number, DumpedSocket>;
  queues?: ImageWriter;
  /** Our copies of the files in flight, open until the dump ends (later fds are compared with them). */
  held: number[];
}

function dumpState(table: FileTable): DumpState {
  return table.stateOf("unix-dump", () => ({ dumped: new Map(), held: [] }));
}

/** A socket's name for people: "/path", "@abstract", or "unnamed". */
function nameText(name: Uint8Array | undefined): string {
  const text = unixNameText(trimPath(name ?? new Uint8Array(0)));
  return text === "" ? "unnamed" : text;
}

/** A path name as the kernel reports it may end in its NUL; abstract names are kept whole. */
function trimPath(name: Uint8Array): Uint8Array {
  if (name.length === 0 || name[0] === 0) return name;
  const nul = name.indexOf(0);
  return nul >= 0 ? name.subarray(0, nul) : name;
}

function pathOf(name: Uint8Array): string | null {
  if (name.length === 0 || name[0] === 0) return null;
  return new TextDecoder().decode(trimPath(name));
}

function describe(fd: number, info: UnixSocketInfo): string {
  return `fd ${fd} (unix ${TYPE_NAMES[info.type] ?? "socket"} socket ${info.ino}, ${nameText(info.name)})`;
}

/** What CRIU refuses to dump whatever the options: other types, transient states. */
function checkDumpable(pid: number, what: string, info: UnixSocketInfo): void {
  if (!(info.type in TYPE_NAMES)) {
    refuse(pid, what, `unsupported type ${info.type}: only stream, datagram and seqpacket sockets are`);
  }
  if (info.state !== STATE.LISTEN && info.state !== STATE.ESTABLISHED && info.state !== STATE.CLOSE) {
    refuse(pid, what, `unknown state ${info.state} for a unix socket`);
  }
  if (info.state === STATE.LISTEN && info.icons.includes(0)) {
    refuse(pid, what, "a connection closed before it was accepted waits in its backlog");
  }
}

/**
 * The inode of the socket's peer, 0 for none. A connection still waiting in a listener's backlog
 * has no peer of its own yet: its peer is the listener, where restore connects it again.
 */
function peerOf(
  pid: number,
  what: string,
  info: UnixSocketInfo,
  sockets: Map<number, UnixSocketInfo>,
): number {
  if (info.peer) return info.peer;
  if (info.state !== STATE.ESTABLISHED || info.type === SOCK.DGRAM) return 0;
  const listener = [...sockets.values()].find((s) => s.state === STATE.LISTEN && s.icons.includes(info.ino));
  if (listener) {
    if (info.rqlen.wq !== 0) {
      refuse(pid, what, "non-empty write queue on an in-flight socket (a connection not accepted yet)");
    }
    return listener.ino;
  }
  if (info.shutdown === (1 | 2)) return 0; // a connection whose other end is gone: semi-closed
  refuse(pid, what, "dangling connection: connected, with no peer and not waiting to be accepted");
}

/** The socket options CRIU keeps, read on our copy of the socket. */
function readOptions(fd: number) {
  const snd = getTimeout(fd, SO.SNDTIMEO);
  const rcv = getTimeout(fd, SO.RCVTIMEO);
  const mark = getIntOption(fd, SO.MARK);
  const linger = getLinger(fd);
  // -1: peeks start at the head of the queue (the default, and all CRIU's restore gives back).
  const peekOff = getIntOption(fd, SO.PEEK_OFF);
  return create(sk_opts_entrySchema, {
    soSndbuf: getIntOption(fd, SO.SNDBUF),
    soRcvbuf: getIntOption(fd, SO.RCVBUF),
    soSndTmoSec: snd.sec,
    soSndTmoUsec: snd.usec,
    soRcvTmoSec: rcv.sec,
    soRcvTmoUsec: rcv.usec,
    reuseaddr: getIntOption(fd, SO.REUSEADDR) !== 0,
    soPriority: getIntOption(fd, SO.PRIORITY),
    soRcvlowat: getIntOption(fd, SO.RCVLOWAT),
    ...(mark ? { soMark: mark } : {}),
    soPasscred: getIntOption(fd, SO.PASSCRED) !== 0,
    soPasssec: getIntOption(fd, SO.PASSSEC) !== 0,
    soDontroute: getIntOption(fd, SO.DONTROUTE) !== 0,
    soNoCheck: getIntOption(fd, SO.NO_CHECK) !== 0,
    soReuseport: getIntOption(fd, SO.REUSEPORT) !== 0,
    soBroadcast: getIntOption(fd, SO.BROADCAST) !== 0,
    soKeepalive: getIntOption(fd, SO.KEEPALIVE) !== 0,
    soOobinline: getIntOption(fd, SO.OOBINLINE) !== 0 ? 1 : 0,
    ...(linger !== null ? { soLinger: linger } : {}),
    soBufLock: getIntOption(fd, SO.BUF_LOCK),
    soFilter: getFilter(fd),
    ...(peekOff >= 0 ? { soPeekOff: peekOff } : {}),
  });
}

/**
 * A socket bound to a path whose file is gone (or is another file now) is "deleted": restore
 * binds it and removes the file again. One still there keeps its owner and mode. A relative name
 * is looked for, as CRIU does, in the task's working directory and then its root; the directory
 * where it is found is kept (name_dir) for the restore to bind it from there.
 */
function pathFacts(
  pid: number,
  what: string,
  info: UnixSocketInfo,
  treeIds: TreeIds | undefined,
): { deleted?: boolean; filePerms?: file_perms_entry; nameDir?: string } {
  const path = pathOf(info.name ?? new Uint8Array(0));
  if (path === null) return {};
  const isOurs = (st: Deno.FileInfo | null) => st !== null && st.isSocket && st.ino === info.vfs?.ino;
  let nameDir: string | undefined;
  let st: Deno.FileInfo | null = null;
  if (path.startsWith("/")) {
    // Under the task's root: a container's socket file is in its own mount tree.
    st = lstatOrNull(`/proc/${pid}/root${path}`);
  } else {
    for (const which of ["cwd", "root"]) {
      const dir = Deno.readLinkSync(`/proc/${pid}/${which}`);
      st = lstatOrNull(`${dir}/${path}`);
      if (isOurs(st)) {
        nameDir = dir;
        break;
      }
    }
    if (nameDir === undefined) {
      refuse(
        pid,
        what,
        `it is bound to the relative path ${path}, found neither in its working directory nor its root`,
      );
    }
  }
  if (!isOurs(st)) return { deleted: true };
  return {
    filePerms: create(file_perms_entrySchema, {
      mode: st!.mode ?? 0,
      ...ownerInside(treeIds, st!.uid ?? 0, st!.gid ?? 0),
    }),
    ...(nameDir !== undefined ? { nameDir } : {}),
  };
}

function lstatOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch {
    return null;
  }
}

/**
 * Bytes for sk-queues.img, appended by opening the file for each write: no fd stays open between
 * two sockets, so a dump that fails after some queues leaves nothing of ours open.
 */
class AppendSink implements ByteSink {
  #created = false;
  constructor(readonly path: string) {}
  write(bytes: Uint8Array): void {
    const file = this.#created ? Deno.openSync(this.path, { append: true }) : createImageFile(this.path);
    this.#created = true;
    try {
      for (let done = 0; done < bytes.length;) done += file.writeSync(bytes.subarray(done));
    } finally {
      file.close();
    }
  }
  close(): void {}
}

/** sk-queues.img, made on the first queue with data. */
function queueWriter(session: FilesSession, state: DumpState): ImageWriter {
  if (!state.queues) {
    const path = session.dir.pathFor(KINDS.SK_QUEUES);
    state.queues = ImageWriter.toSink(new AppendSink(path), path, KINDS.SK_QUEUES);
    session.dir.noteWritten(path);
  }
  return state.queues;
}

/**
 * Streams the socket's receive queue into sk-queues.img, one entry per piece peeked. The files in
 * flight with a piece (SCM_RIGHTS) are dumped as files of the tree, and the entry names them.
 */
function dumpQueue(
  ctx: DumpFilesContext,
  state: DumpState,
  what: string,
  copy: number,
  id: number,
  info: UnixSocketInfo,
) {
  const w = queueWriter(ctx.session, state);
  peekQueue(copy, info.type !== SOCK.STREAM, (bytes, control) => {
    state.held.push(...control.rights);
    // CRIU 4.2 keeps only SCM_RIGHTS (sk_packet_entry has no field for a sender's ucred) and
    // refuses any other control message in a queue; so does criu-ts, in CRIU's words.
    if (control.credentials) {
      refuse(ctx.pid, what, "Control messages in queue, not supported (sender credentials, SCM_CREDENTIALS)");
    }
    if (control.other) refuse(ctx.pid, what, "Control messages in queue, not supported");
    if (bytes.length === 0 && control.rights.length === 0) {
      if (info.shutdown & SHUTDOWN.RCV) return;
      refuse(ctx.pid, what, "its queue holds an empty datagram, which cannot be read without taking it");
    }
    const scm = control.rights.length === 0 ? [] : [
      create(scm_entrySchema, {
        type: SCM_RIGHTS,
        rights: control.rights.map((fd) => dumpHeldFile(ctx, fd)),
      }),
    ];
    // A datagram's sender, when it had a name: restore sends it back from the socket bound there.
    const addr = info.type === SOCK.DGRAM && control.sender.length > 0 ? { addr: control.sender } : {};
    w.writeEntry(create(sk_packet_entrySchema, { idFor: id, length: bytes.length, scm, ...addr }));
    w.writeBlob(bytes);
  });
  w.flush();
}

function dumpSocket(ctx: DumpFilesContext, fd: FdEntry): number {
  const ino = Number(SOCKET_NAME.exec(fd.target)![1]);
  const state = dumpState(ctx.table);
  const sockets = socketsInNetnsOf(ctx.table, "unix", ctx.pid, (diag) => diag.unixSockets());
  const info = sockets.get(ino);
  if (!info) {
    refuse(ctx.pid, `fd ${fd.fd} (unix socket ${ino})`, "the kernel's list of unix sockets does not have it");
  }
  const what = describe(fd.fd, info);
  checkDumpable(ctx.pid, what, info);
  const peer = peerOf(ctx.pid, what, info, sockets);
  const copy = copyFdOf(ctx.pid, fd.fd);
  try {
    const entry = create(unix_sk_entrySchema, {
      ino,
      type: info.type,
      state: info.state,
      flags: fileFlags(fd),
      uflags: 0,
      backlog: info.state === STATE.LISTEN ? info.rqlen.wq : 0,
      peer,
      fown: emptyFown(),
      ...socketNsId(ctx.session, copy),
      opts: readOptions(copy),
      name: info.name ?? new Uint8Array(0),
      ...(info.shutdown ? { shutdown: info.shutdown as sk_shutdown } : {}),
      ...pathFacts(ctx.pid, what, info, ctx.session.treeIds),
    });
    const id = addFdFile(ctx, fd, (id) => {
      entry.id = id;
      return create(file_entrySchema, { type: fd_types.UNIXSK, id, usk: entry });
    });
    if (info.state !== STATE.LISTEN && info.rqlen.rq > 0) {
      dumpQueue(ctx, state, what, copy, id, info);
    }
    state.dumped.set(ino, { entry, pid: ctx.pid, fd: fd.fd, namespace: sockets });
    return id;
  } finally {
    closeFd(copy);
  }
}

/**
 * Once the tree is collected: every peer must be in it, reachable, or (--ext-unix-sk) a named
 * datagram socket outside it, recorded as CRIU records one.
 */
function checkPeers(session: FilesSession): void {
  const state = dumpState(session.table);
  for (const s of state.dumped.values()) {
    const peerIno = s.entry.peer;
    if (!peerIno) continue;
    const what = describe(s.fd, s.namespace.get(s.entry.ino)!);
    const peer = state.dumped.get(peerIno);
    if (peer) {
      if (peer.entry.peer !== s.entry.ino && peer.entry.name.length === 0) {
        refuse(s.pid, what, `its peer ${peerIno} is connected elsewhere and has no name to reach it by`);
      }
      continue;
    }
    externalPeer(session, s, what);
  }
  for (const s of state.dumped.values()) {
    const info = s.namespace.get(s.entry.ino);
    for (const client of info?.icons ?? []) {
      if (state.dumped.has(client)) continue;
      session.log.warn(
        `${
          describe(s.fd, info!)
        } of process ${s.pid}: the connection from unix socket ${client}, outside the tree, waits in its backlog and will not be there after a restore`,
      );
    }
  }
  session.log.debug(`Unix sockets: ${state.dumped.size} dumped`);
}

/** The inodes of the sockets criu-ts itself holds (an RPC client's connection to us). */
function ownSockets(): Set<number> {
  const out = new Set<number>();
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      const m = SOCKET_NAME.exec(Deno.readLinkSync(`/proc/self/fd/${e.name}`));
      if (m) out.add(Number(m[1]));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/**
 * Asks the plugins for a socket whose peer is outside the tree (DUMP_UNIX_SK with a copy of it in
 * criu and its inode), before anything refuses it, as CRIU does.
 */
function takenByPlugin(session: FilesSession, s: DumpedSocket, what: string): boolean {
  if (!session.plugins.has("DUMP_UNIX_SK")) return false;
  const ours = copyFdOf(s.pid, s.fd);
  let answer: number;
  try {
    answer = session.plugins.run("DUMP_UNIX_SK", (p) => p.callInts("DUMP_UNIX_SK", ours, s.entry.ino));
  } finally {
    closeFd(ours);
  }
  if (answer === -ENOTSUP) return false;
  if (answer < 0) {
    throw new PluginError(`A plugin failed to dump ${what} of process ${s.pid}: ${answer}`, -answer);
  }
  return true;
}

function externalPeer(session: FilesSession, s: DumpedSocket, what: string): void {
  const peerIno = s.entry.peer;
  if (ownSockets().has(peerIno)) {
    // CRIU records this one as its service connection (USK_SERVICE) and reconnects it; not yet here.
    refuse(
      s.pid,
      what,
      "it is connected to criu-ts itself (an RPC client dumping itself), which is not supported yet",
    );
  }
  if (takenByPlugin(session, s, what)) {
    s.entry.uflags |= USK_CALLBACK;
    session.log.info(`A plugin took ${what} of process ${s.pid}, whose peer is outside the tree`);
    return;
  }
  const peer = s.namespace.get(peerIno);
  if (session.opts.extUnixSkInodes.includes(s.entry.ino)) {
    // An exception (--ext-unix-sk=INO, RPC unix_sk_ino): the caller answers for its peer, whatever
    // its type or name, as in CRIU; restore connects it again by the peer's name.
    session.log.info(`${what} of process ${s.pid} is an external socket exception`);
    recordExternalPeer(session, peerIno, peer?.name ?? new Uint8Array(0));
    return;
  }
  const peerText = `unix socket ${peerIno} (${nameText(peer?.name)})`;
  if (!session.opts.extUnixSk) {
    refuse(
      s.pid,
      what,
      `external socket is used: its peer ${peerText} is outside the tree. Consider using --ext-unix-sk option`,
    );
  }
  if (!peer || peer.type !== SOCK.DGRAM) {
    refuse(
      s.pid,
      what,
      `can't dump half of stream unix connection (name: ${nameText(s.entry.name)}; peer name: ${
        nameText(peer?.name)
      })`,
    );
  }
  if (!peer.name?.length) refuse(s.pid, what, `can't dump name-less external socket ${peerText}`);
  recordExternalPeer(session, peerIno, peer.name);
}

/** The peer outside the tree, as CRIU writes one: a listening datagram socket marked USK_EXTERN. */
function recordExternalPeer(session: FilesSession, peerIno: number, name: Uint8Array): void {
  session.table.add(`unix-extern:${peerIno}`, (id) =>
    create(file_entrySchema, {
      type: fd_types.UNIXSK,
      id,
      usk: create(unix_sk_entrySchema, {
        id,
        ino: peerIno,
        type: SOCK.DGRAM,
        state: STATE.LISTEN,
        flags: 0,
        uflags: USK_EXTERN,
        backlog: 0,
        peer: 0,
        fown: emptyFown(),
        opts: create(sk_opts_entrySchema, {
          soSndbuf: 0,
          soRcvbuf: 0,
          soSndTmoSec: 0n,
          soSndTmoUsec: 0n,
          soRcvTmoSec: 0n,
          soRcvTmoUsec: 0n,
        }),
        name,
      }),
    }));
}

function finishDump(session: FilesSession): void {
  const state = dumpState(session.table);
  try {
    if (state.dumped.size > 0) checkPeers(session);
  } finally {
    state.queues?.close();
    delete state.queues;
    for (const fd of state.held.splice(0)) closeFd(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Restore

/** Where one queued piece lies in sk-queues.img. */
interface QueuedPiece {
  offset: number;
  length: number;
  /** The ids of the files in flight with it (SCM_RIGHTS). */
  rights: number[];
  /** A datagram's named sender (sk_packet_entry.addr), empty when unnamed or not recorded. */
  sender: Uint8Array;
}

interface RestoreState {
  byIno: Map<number, unix_sk_entry>;
  /** The sockets of the component being created (a socket in flight may need another one). */
  creating: Set<number>;
  /** Queued pieces by the receiving socket's file id, in order. */
  queues: Map<number, QueuedPiece[]>;
  queuesPath: string;
}

function restoreState(table: FileTable): RestoreState {
  return table.stateOf("unix-restore", () => ({
    byIno: new Map(),
    creating: new Set(),
    queues: new Map(),
    queuesPath: "",
  }));
}

function loadImages(session: FilesSession): void {
  const state = restoreState(session.table);
  const sockets = session.table.entries.filter((e) => e.type === fd_types.UNIXSK);
  for (const e of sockets) {
    if (!e.usk) {
      throw new RestoreError(
        `Refusing the images: file ${e.id} of files.img is a unix socket without its entry`,
      );
    }
    if (state.byIno.has(e.usk.ino)) {
      throw new RestoreError(`Refusing the images: unix socket ${e.usk.ino} is in files.img twice`);
    }
    state.byIno.set(e.usk.ino, e.usk);
  }
  for (const s of state.byIno.values()) checkPeerImage(session, state, s);
  if (session.dir.has(KINDS.SK_QUEUES)) readQueueIndex(session, state);
}

function checkPeerImage(session: FilesSession, state: RestoreState, s: unix_sk_entry): void {
  if (s.uflags & ~(USK_EXTERN | USK_CALLBACK)) {
    throw new RestoreError(
      `Refusing the images: unix socket ${s.ino} of files.img has flags ${s.uflags} criu-ts does not know`,
    );
  }
  const path = pathOf(s.name);
  if (path !== null && !path.startsWith("/") && !s.nameDir.startsWith("/")) {
    throw new RestoreError(
      `Refusing the images: unix socket ${s.ino} of files.img is bound to the relative path ${path} with no directory to bind it in`,
    );
  }
  if (!s.peer || s.uflags & USK_CALLBACK) return; // a plugin's socket: its peer is the plugin's business
  const peer = state.byIno.get(s.peer);
  if (!peer) {
    throw new RestoreError(
      `Refusing the images: unix socket ${s.ino} of files.img has peer ${s.peer}, which is not there`,
    );
  }
  if (peer.uflags & USK_EXTERN && !session.opts.extUnixSk) {
    throw new RestoreError(
      `External socket found in image (unix socket ${s.ino} is connected to ${
        nameText(peer.name)
      }). Consider using the --ext-unix-sk option to allow restoring it`,
    );
  }
}

/** Notes where each queued piece is; the bytes are read when they are sent. */
function readQueueIndex(session: FilesSession, state: RestoreState): void {
  const r = ImageReader.open(session.dir.path, KINDS.SK_QUEUES);
  state.queuesPath = r.name;
  try {
    for (let e = r.readEntry() as sk_packet_entry | null; e; e = r.readEntry() as sk_packet_entry | null) {
      const rights: number[] = [];
      for (const scm of e.scm) {
        if (scm.type !== SCM_RIGHTS) {
          throw new RestoreError(
            `Refusing the images: sk-queues.img has control messages of type ${scm.type} for file ${e.idFor}; only SCM_RIGHTS is known`,
          );
        }
        for (const id of scm.rights) session.table.get(id); // a dangling id refuses the images here
        rights.push(...scm.rights);
      }
      const pieces = state.queues.get(e.idFor) ?? [];
      pieces.push({ offset: r.offset, length: e.length, rights, sender: e.addr });
      state.queues.set(e.idFor, pieces);
      r.skip(e.length);
    }
  } finally {
    r.close();
  }
}

/** The sockets linked to `first` by peers (external ones left out), `first` first. */
function componentOf(state: RestoreState, first: unix_sk_entry): unix_sk_entry[] {
  const linked = new Map<number, number[]>();
  const link = (a: number, b: number) => {
    linked.set(a, [...(linked.get(a) ?? []), b]);
    linked.set(b, [...(linked.get(b) ?? []), a]);
  };
  for (const s of state.byIno.values()) {
    if (s.peer && state.byIno.has(s.peer) && !isExternal(state, s.peer) && !(s.uflags & USK_CALLBACK)) {
      link(s.ino, s.peer);
    }
    // The senders of its queued datagrams are made with it, to send them back.
    for (const p of state.queues.get(s.id) ?? []) {
      const sender = namedSender(state, s, p);
      if (sender && sender !== s) link(s.ino, sender.ino);
    }
  }
  const seen = new Set([first.ino]);
  const out = [first];
  for (let i = 0; i < out.length; i++) {
    for (const next of linked.get(out[i]!.ino) ?? []) {
      if (seen.has(next)) continue;
      seen.add(next);
      out.push(state.byIno.get(next)!);
    }
  }
  return out;
}

function isExternal(state: RestoreState, ino: number): boolean {
  return ((state.byIno.get(ino)?.uflags ?? 0) & USK_EXTERN) !== 0;
}

/** The peer a socket is connected to and that is connected back to it: the two are one socketpair. */
function pairedPeer(state: RestoreState, s: unix_sk_entry): unix_sk_entry | undefined {
  const peer = s.peer ? state.byIno.get(s.peer) : undefined;
  return peer && peer !== s && peer.peer === s.ino && !(peer.uflags & USK_EXTERN) ? peer : undefined;
}

/** How the bytes queued for socket `r` get back into its queue. */
type Sender =
  | { kind: "connected"; ino: number }
  | { kind: "sendto"; ino: number }
  | { kind: "spare" }
  | { kind: "stranger" };

function senderFor(state: RestoreState, members: readonly unix_sk_entry[], r: unix_sk_entry): Sender {
  if (pairedPeer(state, r)) return { kind: "connected", ino: r.peer };
  if (r.type !== SOCK.DGRAM) return { kind: "spare" }; // its other end is gone: a spare end sends, then goes
  // A datagram socket takes messages only from its peer, when it has one.
  const connected = members.find((m) => m.peer === r.ino && (!r.peer || r.peer === m.ino));
  if (connected) return { kind: "connected", ino: connected.ino };
  const named = r.name.length > 0;
  // Connecting a datagram socket to another peer empties its queue: one connected outside the tree
  // is filled while still unconnected, by its name, and connected after.
  if (isExternal(state, r.peer)) {
    if (!named) {
      throw new RestoreError(
        `Unix socket ${r.ino} has datagrams queued from outside the tree but no name to send them back to`,
      );
    }
    return { kind: "stranger" };
  }
  if (r.peer && named) return { kind: "sendto", ino: r.peer };
  if (!r.peer && named) return { kind: "stranger" };
  return { kind: "spare" };
}

/**
 * The socket of the images bound to the name a queued datagram came from, when it can send it
 * back so that `r` sees the same sender: bound to that name, and allowed to send to `r` (connected
 * to it, or `r` has a name to send to and takes datagrams from anyone). Otherwise the datagram
 * comes from `r`'s usual sender, as in CRIU, which keeps no sender.
 */
function namedSender(state: RestoreState, r: unix_sk_entry, p: QueuedPiece): unix_sk_entry | undefined {
  if (r.type !== SOCK.DGRAM || p.sender.length === 0) return undefined;
  const s = boundByName(state).get(nameKey(p.sender));
  if (!s || isExternal(state, s.ino) || s.type !== SOCK.DGRAM) return undefined;
  if (s.peer === r.ino) return s;
  return r.name.length > 0 && (!r.peer || r.peer === s.ino) && !s.peer ? s : undefined;
}

function nameKey(name: Uint8Array): string {
  return Array.from(name, (b) => b.toString(16).padStart(2, "0")).join("");
}

const boundNames = new WeakMap<RestoreState, Map<string, unix_sk_entry>>();

/** The sockets of the images that restore binds, by their name's bytes. */
function boundByName(state: RestoreState): Map<string, unix_sk_entry> {
  let byName = boundNames.get(state);
  if (!byName) {
    byName = new Map();
    for (const s of state.byIno.values()) {
      if (shouldBind(s) && !(s.uflags & USK_EXTERN)) byName.set(nameKey(s.name), s);
    }
    boundNames.set(state, byName);
  }
  return byName;
}

/** Does restoring the socket need a spare socket paired with it, closed at the end? */
function needsSpare(state: RestoreState, members: readonly unix_sk_entry[], s: unix_sk_entry): boolean {
  if (s.state === STATE.ESTABLISHED && s.type !== SOCK.DGRAM && !s.peer) return true; // semi-closed
  return (state.queues.get(s.id)?.length ?? 0) > 0 && senderFor(state, members, s).kind === "spare";
}

/** A socket in the task, parked; returns its fd there. */
function socketIn(ctx: RestoreFilesContext, type: number): number {
  return ctx.park(Number(ctx.agent.call("socket(AF_UNIX)", NR.socket, AF.UNIX, type | O.CLOEXEC, 0)));
}

function socketPairIn(ctx: RestoreFilesContext, type: number): [number, number] {
  const { agent } = ctx;
  agent.reset();
  const fds = agent.alloc(FD_PAIR_SIZE, new Uint8Array(FD_PAIR_SIZE));
  agent.call("socketpair(AF_UNIX)", NR.socketpair, AF.UNIX, type | O.CLOEXEC, 0, fds);
  const [a, b] = parseFdPair(agent.read(fds, FD_PAIR_SIZE));
  return [ctx.park(a), ctx.park(b)];
}

/** Sockets made for a component: their fds in the creating task and our copies of them. */
class Made {
  readonly inTask = new Map<number, number>();
  readonly ours = new Map<number, number>();
  /** Our copies of the spare ends, by the socket each is paired with. */
  readonly spares = new Map<number, number>();
  readonly strangers: number[] = [];
  /**
   * How criu reaches the sockets' paths: "" when they are criu's, the task's root (remap.ts)
   * in a container's mount namespace, where a name is bound by the task itself.
   */
  at = "";

  ourFd(ino: number): number {
    const fd = this.ours.get(ino);
    if (fd === undefined) throw new RestoreError(`Unix socket ${ino} was not created`);
    return fd;
  }

  close(): void {
    for (const fd of [...this.ours.values(), ...this.spares.values(), ...this.strangers]) closeFd(fd);
  }
}

function createComponent(ctx: RestoreFilesContext, state: RestoreState, first: unix_sk_entry): void {
  const members = componentOf(state, first);
  for (const m of members) state.creating.add(m.ino);
  const made = new Made();
  const spareInTask = new Map<number, number>();
  for (const m of members) {
    if (made.inTask.has(m.ino)) continue;
    const peer = pairedPeer(state, m);
    if (peer) {
      const [a, b] = socketPairIn(ctx, m.type);
      made.inTask.set(m.ino, a);
      made.inTask.set(peer.ino, b);
    } else if (needsSpare(state, members, m)) {
      const [a, b] = socketPairIn(ctx, m.type);
      made.inTask.set(m.ino, a);
      spareInTask.set(m.ino, b);
    } else {
      made.inTask.set(m.ino, socketIn(ctx, m.type));
    }
  }
  const pid = ctx.agent.pid;
  try {
    made.at = criuPrefixOf(ctx.table, pid);
    for (const [ino, fd] of made.inTask) made.ours.set(ino, copyFdOf(pid, fd));
    for (const [ino, fd] of spareInTask) made.spares.set(ino, copyFdOf(pid, fd));
    configure(ctx, state, members, made);
  } catch (e) {
    throw e instanceof SyscallError
      ? new RestoreError(
        `Cannot restore unix socket ${first.ino} (${nameText(first.name)}): ${e.message}`,
        e.errno,
        {
          cause: e,
        },
      )
      : e;
  } finally {
    made.close();
    for (const m of members) state.creating.delete(m.ino);
  }
  // The spare ends stay parked until every task has its fds; then they close, as the peer had.
  for (const [ino, fd] of made.inTask) ctx.shared.objects.set(`unix:${ino}`, [{ pid: ctx.nsPid, fd }]);
  ctx.log.debug(`Unix sockets ${members.map((m) => m.ino).join(", ")} created in task ${ctx.nsPid}`);
}

/** Everything after creation, in the order the kernel needs it, on our copies. */
function configure(
  ctx: RestoreFilesContext,
  state: RestoreState,
  members: readonly unix_sk_entry[],
  made: Made,
): void {
  const bound: string[] = [];
  try {
    for (const m of members) if (shouldBind(m)) bindName(ctx, made, m, bound);
    for (const m of members) if (m.state === STATE.LISTEN) listenSocket(made.ourFd(m.ino), m.backlog);
    for (const m of members) if (!isExternal(state, m.peer)) connectToPeer(state, made, m);
  } catch (e) {
    // The sockets go with the failed restore; so do the files their binds made.
    for (const path of bound) removeStaleSocket(path);
    throw e;
  }
  for (const m of members) {
    const path = fsPathOf(m);
    if (m.deleted && path !== null && shouldBind(m)) Deno.removeSync(made.at + path);
  }
  for (const m of members) fillQueue(ctx, state, members, made, m);
  // A socket connected outside the tree takes datagrams from there only: its queue is filled first.
  for (const m of members) if (isExternal(state, m.peer)) connectToPeer(state, made, m);
  for (const m of members) {
    if (m.shutdown) shutdownSocket(made.ourFd(m.ino), SHUT_FOR[m.shutdown] ?? 2);
  }
  for (const m of members) {
    const fd = made.ourFd(m.ino);
    if (m.opts) restoreOptions(fd, m.opts);
    if (m.flags & O.NONBLOCK) setNonblocking(fd);
  }
}

/**
 * Connected stream and seqpacket sockets keep the name they share with their listener unbound,
 * as in CRIU: it is the listener's.
 */
function shouldBind(s: unix_sk_entry): boolean {
  return s.name.length > 0 && !(s.state === STATE.ESTABLISHED && s.type !== SOCK.DGRAM);
}

/** Binds to the socket's name; a socket file left at the path (by the dumped process) goes first. */
function bindName(ctx: RestoreFilesContext, made: Made, s: unix_sk_entry, bound: string[]): void {
  const path = fsPathOf(s);
  const { at } = made;
  if (path !== null) removeStaleSocket(at + path, s.ino);
  const name = new Uint8Array(trimPath(s.name));
  // The name is the path as given: an absolute one under a root that is not criu's is bound by
  // the task, whose root it is.
  if (at !== "" && pathOf(s.name)?.startsWith("/")) bindInTask(ctx.agent, made.inTask.get(s.ino)!, name);
  else inNameDir(s, at, () => bindSocket(made.ourFd(s.ino), { family: AF.UNIX, name }));
  if (path !== null) bound.push(at + path);
  if (path !== null && s.filePerms) {
    const owner = ownerOutside(ctx.session.treeIds, s.filePerms.uid, s.filePerms.gid);
    setFilePerms(at + path, s.filePerms.mode, owner.uid, owner.gid);
  }
}

/**
 * The task binds. A filesystem its user namespace owns (a tmpfs the container mounted) refuses a
 * file whose owner it cannot map (EOVERFLOW), as criu's root is: then the task binds again as
 * that namespace's root (fsuid and fsgid), as CRIU's tasks are from the start. The task keeps those
 * until its own credentials are set (criu's root cannot be named from inside the namespace).
 */
function bindInTask(agent: Agent, fd: number, name: Uint8Array<ArrayBuffer>): void {
  const { bytes, len } = encodeSockaddr({ family: AF.UNIX, name });
  agent.settle();
  agent.reset();
  const what = `bind(${new TextDecoder().decode(name)})`;
  const bind: BatchCall = { name: what, nr: NR.bind, args: [fd, agent.alloc(len, bytes.slice(0, len)), len] };
  const [first] = agent.batch([bind], true);
  const failed = agent.failureOf(bind, first!);
  if (!failed) return;
  const root = userNamespaceRootOf(agent.pid);
  const seen = root && idsInUserNamespaceOf(agent.pid);
  if (failed.errno !== 75 /* EOVERFLOW */ || !root || !seen) throw failed;
  agent.batch([
    // Both answer with the previous id, never an error.
    { name: "setfsgid", nr: NR.setfsgid, args: [seen.gid(root.gid)] },
    { name: "setfsuid", nr: NR.setfsuid, args: [seen.uid(root.uid)] },
    bind,
  ]);
}

/** A name to connect or send to, as criu reaches it (a path under the tasks' root: `at`). */
function reachableName(name: Uint8Array, at: string): Uint8Array<ArrayBuffer> {
  const path = pathOf(name);
  if (at === "" || !path?.startsWith("/")) return new Uint8Array(trimPath(name));
  return new TextEncoder().encode(at + path);
}

/** A socket file left at `path` goes; any other file stays, and socket `ino` cannot be bound there. */
function removeStaleSocket(path: string, ino?: number): void {
  let st: Deno.FileInfo;
  try {
    st = Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (st.isSocket) {
    Deno.removeSync(path);
  } else if (ino !== undefined) {
    throw new RestoreError(`Cannot bind unix socket ${ino} to ${path}: a file that is not a socket is there`);
  }
}

/** A datagram socket to its bound peer, a connection back into its listener's backlog, an external peer. */
function connectToPeer(state: RestoreState, made: Made, s: unix_sk_entry): void {
  if (!s.peer || pairedPeer(state, s)) return;
  const peer = state.byIno.get(s.peer)!;
  if (!peer.name.length) {
    throw new RestoreError(`Unix socket ${s.ino} is connected to ${s.peer}, which has no name to connect to`);
  }
  inNameDir(
    peer,
    made.at,
    () => connectSocket(made.ourFd(s.ino), { family: AF.UNIX, name: reachableName(peer.name, made.at) }),
  );
}

/** Where the socket's file is for criu-ts: a relative name is taken in its name_dir. */
function fsPathOf(s: unix_sk_entry): string | null {
  const path = pathOf(s.name);
  return path !== null && !path.startsWith("/") ? `${s.nameDir}/${path}` : path;
}

/**
 * Runs `f` (a bind, connect or send by the socket's name) from the directory a relative name was
 * bound in, so the name stays as the task gave it. Our working directory is put back after.
 */
function inNameDir<T>(s: unix_sk_entry, at: string, f: () => T): T {
  const path = pathOf(s.name);
  if (path === null || path.startsWith("/")) return f();
  const back = Deno.cwd();
  Deno.chdir(at + s.nameDir);
  try {
    return f();
  } finally {
    Deno.chdir(back);
  }
}

/** Sends the socket's queued bytes from where they can come, so they land in its receive queue. */
function fillQueue(
  ctx: RestoreFilesContext,
  state: RestoreState,
  members: readonly unix_sk_entry[],
  made: Made,
  r: unix_sk_entry,
): void {
  const pieces = state.queues.get(r.id) ?? [];
  if (pieces.length === 0) return;
  const sender = senderFor(state, members, r);
  let from: number;
  let to: Uint8Array<ArrayBuffer> | undefined;
  if (sender.kind === "connected") {
    from = made.ourFd(sender.ino);
  } else if (sender.kind === "sendto") {
    from = made.ourFd(sender.ino);
    to = addressBytes(r.name, made.at);
  } else if (sender.kind === "spare") {
    from = made.spares.get(r.ino)!;
  } else {
    const tmp = copyFdOf(ctx.agent.pid, socketIn(ctx, SOCK.DGRAM));
    made.strangers.push(tmp);
    from = tmp;
    to = addressBytes(r.name, made.at);
  }
  // Room for the whole queue while it is refilled; the dumped sizes are set afterwards.
  setIntOption(from, SO.SNDBUFFORCE, FILL_BUFFER);
  setIntOption(made.ourFd(r.ino), SO.RCVBUFFORCE, FILL_BUFFER);
  const image = openFd(state.queuesPath, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    for (const p of pieces) {
      const rights = p.rights.map((id) => copyFdOf(ctx.agent.pid, holdFile(ctx, id)));
      // A datagram from a named socket of the tree goes back from that socket.
      const named = namedSender(state, r, p);
      const via = named ? made.ourFd(named.ino) : from;
      const address = named ? (named.peer === r.ino ? undefined : addressBytes(r.name, made.at)) : to;
      if (named) setIntOption(via, SO.SNDBUFFORCE, FILL_BUFFER);
      try {
        inNameDir(r, made.at, () => sendPiece(image, state.queuesPath, via, address, p, r, rights));
      } finally {
        for (const fd of rights) closeFd(fd);
      }
    }
  } finally {
    closeFd(image);
  }
  ctx.log.debug(`Unix socket ${r.ino}: ${pieces.length} queued piece(s) sent back (${sender.kind})`);
}

function sendPiece(
  image: number,
  path: string,
  from: number,
  to: Uint8Array<ArrayBuffer> | undefined,
  p: QueuedPiece,
  r: unix_sk_entry,
  rights: readonly number[],
): void {
  const whole = r.type !== SOCK.STREAM; // a datagram goes in one send
  const size = whole ? p.length : Math.min(p.length, SEND_CHUNK);
  const buf = new Uint8Array(size);
  if (p.length === 0 && rights.length > 0) {
    if (sendSome(from, buf, to, rights) !== 0) return;
  }
  for (let done = 0; done < p.length;) {
    const n = Math.min(size, p.length - done);
    const chunk = buf.subarray(0, n);
    preadFull(image, chunk, p.offset + done, path);
    let sent = 0;
    while (sent < n) {
      // The files in flight go with the first bytes of the piece.
      const k = sendSome(from, chunk.subarray(sent), to, done + sent === 0 ? rights : []);
      if (k === 0 && n > 0) {
        throw new RestoreError(
          `Unix socket ${r.ino} took only ${done + sent} of ${p.length} queued bytes back`,
        );
      }
      sent += k;
      if (whole) break;
    }
    if (whole && sent !== n) {
      throw new RestoreError(`Unix socket ${r.ino} got a datagram of ${n} bytes cut to ${sent}`);
    }
    done += n;
    if (n === 0) break;
  }
}

/** The sockaddr_un of a name, as long as the name (abstract names count every byte). */
function addressBytes(name: Uint8Array, at: string): Uint8Array<ArrayBuffer> {
  const a = encodeSockaddr({ family: AF.UNIX, name: reachableName(name, at) });
  return a.bytes.slice(0, a.len);
}

/** The options as dumped; the buffer sizes through the *FORCE options, halved as the kernel doubles them. */
function restoreOptions(fd: number, o: sk_opts_entry): void {
  setIntOption(fd, SO.SNDBUFFORCE, Math.floor(o.soSndbuf / 2));
  setIntOption(fd, SO.RCVBUFFORCE, Math.floor(o.soRcvbuf / 2));
  if (isFieldSet(o, sk_opts_entrySchema.field.soBufLock)) setIntOption(fd, SO.BUF_LOCK, o.soBufLock);
  if (isFieldSet(o, sk_opts_entrySchema.field.soPriority)) setIntOption(fd, SO.PRIORITY, o.soPriority);
  if (isFieldSet(o, sk_opts_entrySchema.field.soRcvlowat)) setIntOption(fd, SO.RCVLOWAT, o.soRcvlowat);
  if (o.soMark) setIntOption(fd, SO.MARK, o.soMark);
  const flags: [boolean, number][] = [
    [o.soPasscred, SO.PASSCRED],
    [o.soPasssec, SO.PASSSEC],
    [o.soDontroute, SO.DONTROUTE],
    [o.soNoCheck, SO.NO_CHECK],
    [o.soBroadcast, SO.BROADCAST],
    [o.soOobinline !== 0, SO.OOBINLINE],
    [o.soKeepalive, SO.KEEPALIVE],
    [o.reuseaddr, SO.REUSEADDR],
    [o.soReuseport, SO.REUSEPORT],
  ];
  for (const [on, name] of flags) if (on) setIntOption(fd, name, 1);
  if (isFieldSet(o, sk_opts_entrySchema.field.soLinger)) setLinger(fd, o.soLinger);
  setTimeout(fd, SO.SNDTIMEO, o.soSndTmoSec, o.soSndTmoUsec);
  setTimeout(fd, SO.RCVTIMEO, o.soRcvTmoSec, o.soRcvTmoUsec);
  if (o.soFilter.length) setFilter(fd, o.soFilter);
  // After the queue is filled (sending to a socket leaves its peek offset alone).
  if (isFieldSet(o, sk_opts_entrySchema.field.soPeekOff)) setIntOption(fd, SO.PEEK_OFF, o.soPeekOff);
}

function openSocket(ctx: RestoreFilesContext, entry: file_entry): number {
  const usk = entry.usk;
  if (!usk) throw new RestoreError(`File ${entry.id} has no unix socket data`);
  if (usk.uflags & USK_EXTERN) {
    throw new RestoreError(`File ${entry.id} is an external unix socket, which no task can hold`);
  }
  const key = `unix:${usk.ino}`;
  if (restoreState(ctx.table).creating.has(usk.ino)) {
    throw new RestoreError(
      `Unix socket ${usk.ino} is in flight in a queue of its own connection, which criu-ts does not restore yet`,
    );
  }
  if (!ctx.shared.objects.has(key)) {
    if (usk.uflags & USK_CALLBACK) fromPlugin(ctx, usk);
    else createComponent(ctx, restoreState(ctx.table), usk);
  }
  const [where] = ctx.shared.objects.get(key)!;
  return grabFd(ctx, where!);
}

/**
 * A socket a plugin took at dump: the plugin gives it back (RESTORE_UNIX_SK, an fd of criu's), and
 * the task takes a copy of it, parked like the sockets criu-ts makes itself.
 */
function fromPlugin(ctx: RestoreFilesContext, usk: unix_sk_entry): void {
  const fd = ctx.session.plugins.run("RESTORE_UNIX_SK", (p) => p.restoreFd("RESTORE_UNIX_SK", usk.ino));
  if (fd < 0) {
    throw new RestoreError(
      fd === -ENOTSUP
        ? `No plugin restores unix socket ${usk.ino}, which a plugin took at dump (load it with -L)`
        : `A plugin failed to restore unix socket ${usk.ino}: ${fd}`,
      fd === -ENOTSUP ? 0 : -fd,
    );
  }
  try {
    const parked = ctx.park(takeFromCriu(ctx, fd));
    ctx.shared.objects.set(`unix:${usk.ino}`, [{ pid: ctx.nsPid, fd: parked }]);
  } finally {
    closeFd(fd);
  }
}

export const unixSocketKind: FdKind = {
  name: "unix socket",
  type: fd_types.UNIXSK,
  detect(fd, _stat, pid) {
    return SOCKET_NAME.test(fd.target) &&
      (socketProtocolName(`/proc/${pid}/fd/${fd.fd}`) ?? "").startsWith("UNIX");
  },
  dump: dumpSocket,
  open: openSocket,
  // CRIU's name for --inherit-fd: the caller's socket stands for it (its peer and queue are the caller's).
  inheritName: (entry) => entry.usk ? `socket:[${entry.usk.ino}]` : undefined,
  finishDump,
  loadImages,
};

registerFdKind(unixSocketKind);
