/**
 * Established TCP connections with TCP_REPAIR (tcp-stream-INO.img): at dump, the connection is
 * put in repair mode, where the kernel shows its sequence numbers, its queues (the send queue with
 * what is sent but not acknowledged) and what the handshake agreed, and sends nothing; at restore,
 * a socket in repair mode gets all of that back and becomes the same connection without a packet
 * being exchanged. The peer never notices, provided none of its packets reached the kernel
 * meanwhile (network_lock.ts).
 *
 * tcp-stream-INO.img (INO in hex): one tcp_stream_entry, then the received bytes not yet read
 * (inq_len), then the send queue (outq_len bytes; its last unsq_len never went out).
 *
 * Half-closed and closing connections, as CRIU's libsoccr takes them: FIN_WAIT1, FIN_WAIT2,
 * CLOSING and LAST_ACK have our FIN in the send queue, CLOSE_WAIT, LAST_ACK and CLOSING the peer's
 * in the receive queue. The image keeps the kernel's sequence numbers (which count each FIN) and
 * queue lengths without the FIN. At restore the connection comes back established without the
 * FINs, then they are replayed in the order the states imply: shutdown(SHUT_WR) in repair mode
 * puts ours back, and a segment written by hand (ffi/tcp_segment.ts) delivers the peer's FIN, or
 * its ACK of ours (FIN_WAIT2). TIME_WAIT never belongs to a file (the kernel moves it to a
 * separate time-wait socket), and SYN_SENT/SYN_RECV are refused by the inet kind.
 */
import { create } from "@bufbuild/protobuf";
import { type tcp_stream_entry, tcp_stream_entrySchema } from "../images/gen/tcp-stream_pb.ts";
import { KINDS } from "../images/kinds.ts";
import { ImageReader, ImageWriter } from "../images/file.ts";
import type { ImageDir } from "../images/dir.ts";
import {
  getIntOption,
  getQueueSeq,
  getRepairWindow,
  peekQueue,
  queueAll,
  queueLengths,
  setIntOption,
  setQueueSeq,
  setRepairOptions,
  setRepairWindow,
  shutdownWrite,
  SO,
  SOL,
  TCP,
  TCP_QUEUE,
  TCP_STATE,
  TCPI_OPT,
  tcpInfo,
  TCPOPT,
} from "../../ffi/inet_sock.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { type InetAddress } from "../../ffi/sockaddr.ts";
import { injectSegment, TCP_FLAG } from "../../ffi/tcp_segment.ts";
import { closeFd } from "../../ffi/fd.ts";
import { TCP_REPAIR_MODE } from "../../ffi/sockopt.ts";

const bit = (state: number) => 1 << state;
/** Our FIN is in the send queue, put back before the peer's. */
const SNDQ_FIRST_FIN = bit(TCP_STATE.FIN_WAIT1) | bit(TCP_STATE.FIN_WAIT2) | bit(TCP_STATE.CLOSING);
/** Our FIN is in the send queue, put back after the peer's. */
const SNDQ_SECOND_FIN = bit(TCP_STATE.LAST_ACK);
/** The peer acknowledged our FIN. */
const SNDQ_FIN_ACKED = bit(TCP_STATE.FIN_WAIT2);
/** The peer's FIN is in the receive queue. */
const RCVQ_FIN = bit(TCP_STATE.CLOSE_WAIT) | bit(TCP_STATE.LAST_ACK) | bit(TCP_STATE.CLOSING);

/** The states a connection is dumped in with --tcp-established: established and half-closed. */
export const STREAM_STATES: readonly number[] = [
  TCP_STATE.ESTABLISHED,
  TCP_STATE.FIN_WAIT1,
  TCP_STATE.FIN_WAIT2,
  TCP_STATE.CLOSE_WAIT,
  TCP_STATE.LAST_ACK,
  TCP_STATE.CLOSING,
];

const sendsFin = (state: number) => (bit(state) & (SNDQ_FIRST_FIN | SNDQ_SECOND_FIN)) !== 0;
const receivedFin = (state: number) => (bit(state) & RCVQ_FIN) !== 0;

/** Restored queue bytes are read from the image in chunks of this size. */
const CHUNK = 256 * 1024;

export function repairOn(fd: number): void {
  setIntOption(fd, SOL.TCP, TCP.REPAIR, TCP_REPAIR_MODE.ON);
}

/** Leaves repair mode: the connection sends and answers packets again (a window probe first). */
export function repairOff(fd: number): void {
  setIntOption(fd, SOL.TCP, TCP.REPAIR, TCP_REPAIR_MODE.OFF);
}

function selectQueue(fd: number, queue: number): void {
  setIntOption(fd, SOL.TCP, TCP.REPAIR_QUEUE, queue);
}

/**
 * Reads a connection in repair mode (the caller turned it on) and writes tcp-stream-INO.img.
 * The queues are peeked, so the connection is unchanged if the dump goes back.
 */
export function dumpStream(fd: number, ino: number, dir: ImageDir): void {
  const info = tcpInfo(fd);
  const lengths = withoutFin(queueLengths(fd), info.state);
  selectQueue(fd, TCP_QUEUE.RECV);
  const inqSeq = getQueueSeq(fd);
  const inq = new Uint8Array(lengths.inq);
  const gotIn = peekQueue(fd, inq, `the receive queue of socket ${ino}`);
  selectQueue(fd, TCP_QUEUE.SEND);
  const outqSeq = getQueueSeq(fd);
  // The kernel copies the send queue only whole: one buffer of its size.
  const outq = new Uint8Array(lengths.outq);
  const gotOut = peekQueue(fd, outq, `the send queue of socket ${ino}`);
  if (gotIn !== inq.length || gotOut !== outq.length) {
    throw new DumpError(
      `Socket ${ino}: the queues changed while being read (${gotIn}/${inq.length} received, ${gotOut}/${outq.length} to send)`,
    );
  }
  const window = getRepairWindow(fd);
  const entry = create(tcp_stream_entrySchema, {
    inqLen: inq.length,
    inqSeq,
    outqLen: outq.length,
    outqSeq,
    optMask: info.options,
    sndWscale: info.sndWscale,
    rcvWscale: info.rcvWscale,
    // In repair mode TCP_MAXSEG tells the MSS the peer announced (mss_clamp).
    mssClamp: getIntOption(fd, SOL.TCP, TCP.MAXSEG),
    unsqLen: lengths.unsent,
    sndWl1: window.sndWl1,
    sndWnd: window.sndWnd,
    maxWindow: window.maxWindow,
    rcvWnd: window.rcvWnd,
    rcvWup: window.rcvWup,
    ...(info.options & TCPI_OPT.TIMESTAMPS
      ? { timestamp: getIntOption(fd, SOL.TCP, TCP.TIMESTAMP) >>> 0 }
      : {}),
  });
  const w = ImageWriter.create(dir.path, KINDS.TCP_STREAM, ino);
  dir.noteWritten(w.name);
  try {
    w.writeEntry(entry);
    w.writeBlob(inq);
    w.writeBlob(outq);
  } finally {
    w.close();
  }
}

/**
 * The queue lengths without our FIN, which SIOCOUTQ and SIOCOUTQNSD count as a byte but which
 * holds no data (SIOCINQ leaves the peer's out already).
 */
function withoutFin(
  l: { inq: number; outq: number; unsent: number },
  state: number,
): { inq: number; outq: number; unsent: number } {
  if (!sendsFin(state)) return l;
  return { inq: l.inq, outq: Math.max(l.outq - 1, 0), unsent: Math.max(l.unsent - 1, 0) };
}

/** tcp-stream-INO.img's entry, checked against what the kernel will accept. */
export function readStreamEntry(dir: ImageDir, ino: number): tcp_stream_entry {
  if (!dir.has(KINDS.TCP_STREAM, ino)) {
    throw new RestoreError(
      `Refusing the images: established TCP socket ${ino} has no ${dir.pathFor(KINDS.TCP_STREAM, ino)}`,
    );
  }
  const r = ImageReader.open(dir.path, KINDS.TCP_STREAM, ino);
  try {
    const e = r.readEntry() as tcp_stream_entry | null;
    if (!e) throw new RestoreError(`Refusing the images: tcp-stream-${ino}.img is empty`);
    if ((e.unsqLen ?? 0) > e.outqLen) {
      throw new RestoreError(
        `Refusing the images: tcp-stream-${ino}.img has ${e.unsqLen} unsent bytes in a send queue of ${e.outqLen}`,
      );
    }
    return e;
  } finally {
    r.close();
  }
}

/**
 * The part of a connection's restore that must happen before connect(), on a socket in repair
 * mode that is bound and not connected: where each queue's sequence numbers start.
 */
export function restoreSequences(fd: number, e: tcp_stream_entry, state: number): void {
  const { inqSeq, outqSeq } = sequencesWithoutFins(e, state);
  selectQueue(fd, TCP_QUEUE.SEND);
  setQueueSeq(fd, (outqSeq - e.outqLen) >>> 0);
  selectQueue(fd, TCP_QUEUE.RECV);
  setQueueSeq(fd, (inqSeq - e.inqLen) >>> 0);
}

/** Where each queue ends before the FINs are replayed: the dumped numbers count them. */
function sequencesWithoutFins(e: tcp_stream_entry, state: number): { inqSeq: number; outqSeq: number } {
  return {
    inqSeq: (e.inqSeq - (receivedFin(state) ? 1 : 0)) >>> 0,
    outqSeq: (e.outqSeq - (sendsFin(state) ? 1 : 0)) >>> 0,
  };
}

/**
 * The rest, once connect() made the socket established (still in repair mode): the options the
 * handshake agreed, the queues, the windows. The unsent part of the send queue is sent as ordinary
 * data with repair off for a moment (it never went out, so it gets sequence numbers as new data),
 * then repair goes back on until the whole restore is done.
 */
export function restoreStream(
  fd: number,
  ino: number,
  e: tcp_stream_entry,
  state: number,
  dir: ImageDir,
): void {
  const opts: [number, number][] = [[TCPOPT.MSS, e.mssClamp]];
  if (e.optMask & TCPI_OPT.WSCALE) opts.push([TCPOPT.WINDOW, e.sndWscale | ((e.rcvWscale ?? 0) << 16)]);
  if (e.optMask & TCPI_OPT.SACK) opts.push([TCPOPT.SACK_PERM, 0]);
  if (e.optMask & TCPI_OPT.TIMESTAMPS) opts.push([TCPOPT.TIMESTAMP, 0]);
  setRepairOptions(fd, opts);
  if (e.optMask & TCPI_OPT.TIMESTAMPS && e.timestamp !== undefined) {
    setIntOption(fd, SOL.TCP, TCP.TIMESTAMP, e.timestamp | 0);
  }
  makeRoom(fd, e);
  const r = ImageReader.open(dir.path, KINDS.TCP_STREAM, ino);
  try {
    r.readEntry();
    selectQueue(fd, TCP_QUEUE.RECV);
    sendFromImage(r, fd, e.inqLen, `the receive queue of socket ${ino}`);
    const unsent = e.unsqLen ?? 0;
    selectQueue(fd, TCP_QUEUE.SEND);
    sendFromImage(r, fd, e.outqLen - unsent, `the send queue of socket ${ino}`);
    if (e.maxWindow !== 0) {
      // The window was last announced past the peer's FIN, which is not back yet.
      const fin = receivedFin(state) ? 1 : 0;
      setRepairWindow(fd, {
        sndWl1: e.sndWl1 ?? 0,
        sndWnd: e.sndWnd,
        maxWindow: e.maxWindow ?? 0,
        rcvWnd: (e.rcvWnd ?? 0) + fin,
        rcvWup: ((e.rcvWup ?? 0) - fin) >>> 0,
      });
    }
    if (unsent > 0) {
      repairOff(fd);
      sendFromImage(r, fd, unsent, `the unsent data of socket ${ino}`);
      repairOn(fd);
    }
  } finally {
    r.close();
  }
}

/**
 * Buffers big enough for the queues (and the kernel's bookkeeping around them): a queue that
 * grew with autotuning may not fit the dumped size at once. The caller sets the dumped sizes
 * back afterwards; a buffer may be smaller than what it holds.
 */
function makeRoom(fd: number, e: tcp_stream_entry): void {
  const slack = 1 << 20;
  // The kernel doubles what it is given.
  if (getIntOption(fd, SOL.SOCKET, SO.SNDBUF) < 2 * e.outqLen + slack) {
    setIntOption(fd, SOL.SOCKET, SO.SNDBUFFORCE, e.outqLen + slack);
  }
  if (getIntOption(fd, SOL.SOCKET, SO.RCVBUF) < 2 * e.inqLen + slack) {
    setIntOption(fd, SOL.SOCKET, SO.RCVBUFFORCE, e.inqLen + slack);
  }
}

function sendFromImage(r: ImageReader, fd: number, length: number, what: string): void {
  for (let left = length; left > 0;) {
    const n = Math.min(left, CHUNK);
    queueAll(fd, new Uint8Array(r.readBlob(n)), what);
    left -= n;
  }
}

/**
 * Puts the FINs of a half-closed or closing connection back (after restoreStream, still in repair
 * mode, the network lock letting only marked segments in): our FIN by shutdown, the peer's FIN or
 * its ACK of ours by a segment from `peer` to `local`, in the order CRIU's libsoccr uses. Then
 * waits until the kernel has taken the segments, checking that the socket is in `state`.
 * `rawSocket` gives a raw socket (rawSocketFor) of the connection's network namespace, ours to close.
 */
export function replayFins(
  fd: number,
  ino: number,
  e: tcp_stream_entry,
  state: number,
  local: InetAddress,
  peer: InetAddress,
  rawSocket: () => number,
): void {
  if (state === TCP_STATE.ESTABLISHED) return;
  const { inqSeq, outqSeq } = sequencesWithoutFins(e, state);
  const window = (e.sndWnd >>> (e.sndWscale ?? 0)) & 0xffff;
  const fromPeer = (seq: number, ack: number, flags: number) => {
    const raw = rawSocket();
    try {
      injectSegment(raw, peer, local, { seq, ack: ack >>> 0, flags, window });
    } finally {
      closeFd(raw);
    }
  };
  if (bit(state) & SNDQ_FIRST_FIN) finInSendQueue(fd);
  if (receivedFin(state)) fromPeer(inqSeq, outqSeq - e.outqLen, TCP_FLAG.FIN | TCP_FLAG.ACK);
  if (bit(state) & SNDQ_SECOND_FIN) finInSendQueue(fd);
  if (bit(state) & SNDQ_FIN_ACKED) fromPeer(inqSeq, outqSeq + 1 - e.outqLen, TCP_FLAG.ACK);
  waitForState(fd, ino, state);
}

/**
 * Our FIN back in the send queue, as sent (the send queue selected, in repair mode nothing goes
 * out): a segment of the peer can acknowledge it, and if none does the retransmission timer sends
 * it again once the connection leaves repair mode.
 */
function finInSendQueue(fd: number): void {
  selectQueue(fd, TCP_QUEUE.SEND);
  shutdownWrite(fd);
  selectQueue(fd, TCP_QUEUE.NONE);
}

/** The segments went through the loopback; the kernel may take them a little later. */
function waitForState(fd: number, ino: number, state: number): void {
  const names = Object.fromEntries(Object.entries(TCP_STATE).map(([k, v]) => [v, k]));
  const deadline = Date.now() + 5000;
  for (;;) {
    const now = tcpInfo(fd).state;
    if (now === state) return;
    if (Date.now() > deadline) {
      throw new RestoreError(
        `Cannot restore TCP socket ${ino}: it is ${
          names[now] ?? now
        } after its FINs were replayed, expected ${names[state] ?? state}`,
      );
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
  }
}
