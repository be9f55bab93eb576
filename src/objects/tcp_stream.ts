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
  SO,
  SOL,
  TCP,
  TCP_QUEUE,
  TCPI_OPT,
  tcpInfo,
  TCPOPT,
} from "../../ffi/inet_sock.ts";
import { DumpError, RestoreError } from "../errors.ts";

/** TCP_REPAIR values. */
const REPAIR_ON = 1;
const REPAIR_OFF = 0;
/** Restored queue bytes are read from the image in chunks of this size. */
const CHUNK = 256 * 1024;

export function repairOn(fd: number): void {
  setIntOption(fd, SOL.TCP, TCP.REPAIR, REPAIR_ON);
}

/** Leaves repair mode: the connection sends and answers packets again (a window probe first). */
export function repairOff(fd: number): void {
  setIntOption(fd, SOL.TCP, TCP.REPAIR, REPAIR_OFF);
}

function selectQueue(fd: number, queue: number): void {
  setIntOption(fd, SOL.TCP, TCP.REPAIR_QUEUE, queue);
}

/**
 * Reads a connection in repair mode (the caller turned it on) and writes tcp-stream-INO.img.
 * The queues are peeked, so the connection is unchanged if the dump goes back.
 */
export function dumpStream(fd: number, ino: number, dir: ImageDir): void {
  const lengths = queueLengths(fd);
  const info = tcpInfo(fd);
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
export function restoreSequences(fd: number, e: tcp_stream_entry): void {
  selectQueue(fd, TCP_QUEUE.SEND);
  setQueueSeq(fd, (e.outqSeq - e.outqLen) >>> 0);
  selectQueue(fd, TCP_QUEUE.RECV);
  setQueueSeq(fd, (e.inqSeq - e.inqLen) >>> 0);
}

/**
 * The rest, once connect() made the socket established (still in repair mode): the options the
 * handshake agreed, the queues, the windows. The unsent part of the send queue is sent as ordinary
 * data with repair off for a moment (it never went out, so it gets sequence numbers as new data),
 * then repair goes back on until the whole restore is done.
 */
export function restoreStream(fd: number, ino: number, e: tcp_stream_entry, dir: ImageDir): void {
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
      setRepairWindow(fd, {
        sndWl1: e.sndWl1 ?? 0,
        sndWnd: e.sndWnd,
        maxWindow: e.maxWindow ?? 0,
        rcvWnd: e.rcvWnd ?? 0,
        rcvWup: e.rcvWup ?? 0,
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
