/**
 * Whole images <-> crit JSON: `{"magic": "CORE", "entries": [...]}`. Raw data that follows an
 * entry goes into that entry's "extra" key, in crit's shapes:
 *   pipes-data, fifo-data, sk-queues, bpfmap-data, ipcns-shm: base64 text
 *   tcp-stream: {"inq": base64, "outq": base64}
 *   ipcns-sem: the semaphore values as a list of numbers
 *   ipcns-msg: a list alternating each message's header object and its base64 text
 *   ghost-file: base64 of the contents on the header entry, or on each chunk entry when chunked
 * pagemap images have the pagemap_head as their first entry. encodeImage(decodeImage(x)) gives
 * back x byte for byte for anything CRIU or we write (fields are written in number order, as
 * protobuf-c does, and padding is zero).
 */

import type { DescMessage, Message } from "@bufbuild/protobuf";
import { base64Lines, fromBase64 } from "./_convert.ts";
import type { JsonObject, JsonValue } from "./_json_text.ts";
import { ImageFormatError, ImageJsonError } from "./errors.ts";
import { ImageReader, ImageWriter } from "./file.ts";
import type { ghost_chunk_entry, ghost_file_entry } from "./gen/ghost-file_pb.ts";
import type { bpfmap_data_entry } from "./gen/bpfmap-data_pb.ts";
import type { ipc_msg, ipc_msg_entry } from "./gen/ipc-msg_pb.ts";
import type { ipc_sem_entry } from "./gen/ipc-sem_pb.ts";
import type { ipc_shm_entry } from "./gen/ipc-shm_pb.ts";
import type { pipe_data_entry } from "./gen/pipe-data_pb.ts";
import type { posix_mq_entry, posix_mq_msg } from "./gen/posix-mq_pb.ts";
import type { sk_packet_entry } from "./gen/sk-packet_pb.ts";
import type { tcp_stream_entry } from "./gen/tcp-stream_pb.ts";
import { type ImageKind, kindByMagicName } from "./kinds.ts";
import { messageFromJson, messageToJson } from "./message_json.ts";

/** An image in crit's JSON form. */
export interface CritImage {
  magic: string;
  entries: JsonObject[];
}

export interface DecodeOptions {
  /** crit's --pretty: hex, flag names, device numbers... for fields marked so. */
  pretty?: boolean;
  /** crit show --nopl: payloads are skipped and replaced by a size like "... <4KB>". */
  noPayload?: boolean;
}

/** Bytes of raw data after one entry, or undefined if the entry has none of its own. */
function payloadSize(k: ImageKind, msg: Message): number | undefined {
  switch (k.payload) {
    case "pipe-data":
      return (msg as pipe_data_entry).bytes;
    case "sk-queue":
      return (msg as sk_packet_entry).length;
    case "bpfmap-data": {
      const b = msg as bpfmap_data_entry;
      return b.keysBytes + b.valuesBytes;
    }
    case "ipc-shm": {
      const s = msg as ipc_shm_entry;
      return s.inPagemaps ? undefined : Number(s.size);
    }
    default:
      return undefined;
  }
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** Python-crit style size: "512B", "4KB", "1.5MB". */
function humanSize(n: number): string {
  for (const unit of ["", "K", "M", "G", "T", "P", "E", "Z"]) {
    if (n < 1024) return Number.isInteger(n) ? `${n}${unit}B` : `${n.toFixed(1)}${unit}B`;
    n /= 1024;
  }
  return `${n.toFixed(1)}YB`;
}

function schemaOf(k: ImageKind, msg: Message): DescMessage {
  for (const s of [k.first, k.entry, k.inner]) if (s?.typeName === msg.$typeName) return s;
  throw new TypeError(`${msg.$typeName} is not an entry of ${k.name}`);
}

/** Reads the rest of `reader` into crit's JSON form. */
export function decodeImage(reader: ImageReader, opts: DecodeOptions = {}): CritImage {
  const k = reader.kind;
  const pretty = opts.pretty ?? false;
  const skip = opts.noPayload ?? false;
  const entries: JsonObject[] = [];
  const blob = (n: number): JsonValue => {
    if (skip) {
      reader.skip(n);
      return `... <${humanSize(n)}>`;
    }
    return base64Lines(reader.readBlob(n));
  };

  for (let msg = reader.readEntry(); msg !== null; msg = reader.readEntry()) {
    const json = messageToJson(schemaOf(k, msg), msg, pretty);
    entries.push(json);
    if (k.payload === "tcp-stream") {
      const { inqLen: inq, outqLen: outq } = msg as tcp_stream_entry;
      if (skip) {
        reader.skip(inq + outq);
        json.extra = `... <${humanSize(inq + outq)}>`;
      } else {
        json.extra = { inq: blob(inq), outq: blob(outq) };
      }
    } else if (k.payload === "ipc-sem") {
      const n = (msg as ipc_sem_entry).nsems;
      const raw = reader.readBlob(roundUp(2 * n, 8));
      const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      json.extra = skip
        ? `... <${humanSize(2 * n)}>`
        : Array.from({ length: n }, (_, i) => view.getUint16(2 * i, true));
    } else if (k.payload === "ipc-msg" || k.payload === "posix-mq") {
      json.extra = decodeMessageQueue(reader, queueShape(k, msg), pretty, skip);
    } else if (k.payload === "ghost") {
      const g = msg as ghost_file_entry | ghost_chunk_entry;
      if (g.$typeName === "ghost_chunk_entry") {
        if (skip) reader.skip(Number(g.len));
        else json.extra = base64Lines(reader.readBlob(Number(g.len)));
      } else if (!g.chunks) {
        // Unchunked: the contents run to the end of the file.
        const rest = reader.readRest();
        if (!skip) json.extra = base64Lines(rest);
      }
    } else {
      const n = payloadSize(k, msg);
      if (n !== undefined) {
        json.extra = blob(n);
        if (k.payload === "ipc-shm") reader.skip(roundUp(n, 4) - n);
      }
    }
  }
  return { magic: k.magicName, entries };
}

/**
 * The messages after a queue's entry (SysV ipc_msg records, POSIX posix_mq_msg ones): how many,
 * each one's size from its record, and what its data is padded to.
 */
interface QueueShape {
  count: number;
  sizeOf(record: Message): number;
  pad: number;
}

function queueShape(k: ImageKind, msg: Message): QueueShape {
  if (k.payload === "posix-mq") {
    return {
      count: Number((msg as posix_mq_entry).curmsgs),
      sizeOf: (m) => (m as posix_mq_msg).size,
      pad: 1,
    };
  }
  return { count: (msg as ipc_msg_entry).qnum, sizeOf: (m) => (m as ipc_msg).msize, pad: 8 };
}

function decodeMessageQueue(
  reader: ImageReader,
  q: QueueShape,
  pretty: boolean,
  skip: boolean,
): JsonValue {
  const inner = reader.kind.inner as DescMessage;
  const out: JsonValue[] = [];
  let total = 0;
  for (let i = 0; i < q.count; i++) {
    const at = reader.offset;
    const m = reader.readEntry(inner);
    if (m === null) {
      throw new ImageFormatError(
        reader.name,
        at,
        "Truncated message queue",
        `expected ${q.count} messages, found ${i}`,
      );
    }
    const size = q.sizeOf(m);
    const data = reader.readBlob(roundUp(size, q.pad)).subarray(0, size);
    total += size;
    out.push(messageToJson(inner, m, pretty), base64Lines(data));
  }
  return skip ? `... <${humanSize(total)}>` : out;
}

/** Decodes image bytes (`name` is for error messages). */
export function decodeImageBytes(bytes: Uint8Array, name: string, opts: DecodeOptions = {}): CritImage {
  const reader = ImageReader.fromBytes(bytes, name);
  try {
    return decodeImage(reader, opts);
  } finally {
    reader.close();
  }
}

export function decodeImageFile(path: string, opts: DecodeOptions = {}): CritImage {
  const reader = ImageReader.openPath(path);
  try {
    return decodeImage(reader, opts);
  } finally {
    reader.close();
  }
}

/** crit info: the magic and the number of entries (pagemap's head not counted, as crit does). */
export function imageInfo(path: string): { magic: string; count: number } {
  const img = decodeImageFile(path, { noPayload: true });
  return { magic: img.magic, count: img.entries.length - (img.magic === "PAGEMAP" ? 1 : 0) };
}

// ---- JSON -> image

function asObject(v: JsonValue | undefined, where: string): JsonObject {
  if (v === null || v === undefined || typeof v !== "object" || Array.isArray(v)) {
    throw new ImageJsonError(where, "Expected an object");
  }
  return v;
}

function bytesIn(v: JsonValue | undefined, where: string, expected: number): Uint8Array {
  const bytes = v === undefined ? new Uint8Array() : typeof v === "string" ? fromBase64(v) : undefined;
  if (bytes === undefined) throw new ImageJsonError(where, "Expected base64 data");
  if (bytes.length !== expected) {
    throw new ImageJsonError(where, `Expected ${expected} bytes of data, found ${bytes.length}`);
  }
  return bytes;
}

/** Base64 data of whatever length (the contents of an unchunked ghost file). */
function anyBytesIn(v: JsonValue | undefined, where: string): Uint8Array {
  const bytes = v === undefined ? new Uint8Array() : typeof v === "string" ? fromBase64(v) : undefined;
  if (bytes === undefined) throw new ImageJsonError(where, "Expected base64 data");
  return bytes;
}

function padded(bytes: Uint8Array, to: number): Uint8Array {
  const out = new Uint8Array(roundUp(bytes.length, to));
  out.set(bytes);
  return out;
}

/** Builds the image bytes a crit JSON document describes. */
export function encodeImage(doc: JsonValue): Uint8Array {
  const top = asObject(doc, "");
  const magic = top.magic;
  if (typeof magic !== "string") throw new ImageJsonError("magic", "Expected the image magic name");
  const k = kindByMagicName(magic);
  if (k === undefined) throw new ImageJsonError("magic", `Unknown image magic ${magic}`);
  const list = top.entries;
  if (!Array.isArray(list)) throw new ImageJsonError("entries", "Expected a list of entries");

  const w = ImageWriter.inMemory(k, `${magic} image`);
  let chunked = false;
  list.forEach((item, i) => {
    const where = `entries[${i}]`;
    const { extra, ...fields } = asObject(item, where);
    const at = `${where}.extra`;
    const schema = (i === 0 ? k.first : undefined) ?? k.entry as DescMessage;
    const msg = messageFromJson(schema, fields, where);
    w.writeEntry(msg);
    if (k.payload === "tcp-stream") {
      const e = extra === undefined ? {} : asObject(extra, at);
      const t = msg as tcp_stream_entry;
      w.writeBlob(bytesIn(e.inq, `${at}.inq`, t.inqLen));
      w.writeBlob(bytesIn(e.outq, `${at}.outq`, t.outqLen));
    } else if (k.payload === "ipc-sem") {
      const n = (msg as ipc_sem_entry).nsems;
      const values = extra ?? [];
      if (!Array.isArray(values) || values.length !== n) {
        throw new ImageJsonError(at, `Expected a list of ${n} semaphore values`);
      }
      const raw = new Uint8Array(roundUp(2 * n, 8));
      const view = new DataView(raw.buffer);
      values.forEach((v, j) => {
        if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffff) {
          throw new ImageJsonError(`${at}[${j}]`, "Expected a semaphore value in [0, 65535]");
        }
        view.setUint16(2 * j, v, true);
      });
      w.writeBlob(raw);
    } else if (k.payload === "ipc-msg" || k.payload === "posix-mq") {
      encodeMessageQueue(w, k, extra, queueShape(k, msg), at);
    } else if (k.payload === "ghost") {
      if (i === 0) chunked = (msg as ghost_file_entry).chunks;
      if (i > 0) w.writeBlob(bytesIn(extra, at, Number((msg as ghost_chunk_entry).len)));
      else if (!chunked) w.writeBlob(anyBytesIn(extra, at));
    } else {
      const n = payloadSize(k, msg);
      if (n !== undefined) w.writeBlob(padded(bytesIn(extra, at, n), k.payload === "ipc-shm" ? 4 : 1));
      else if (extra !== undefined) throw new ImageJsonError(at, `Unexpected extra data in a ${magic} entry`);
    }
  });
  if (k.payload === "ghost" && !chunked && list.length > 1) {
    throw new ImageJsonError("entries[1]", "An unchunked ghost file has a single entry");
  }
  w.close();
  return w.contents();
}

function encodeMessageQueue(
  w: ImageWriter,
  k: ImageKind,
  extra: JsonValue | undefined,
  q: QueueShape,
  at: string,
) {
  const items = extra ?? [];
  if (!Array.isArray(items) || items.length !== 2 * q.count) {
    throw new ImageJsonError(at, `Expected ${q.count} message headers each followed by its data`);
  }
  for (let j = 0; j < q.count; j++) {
    const msg = messageFromJson(k.inner as DescMessage, items[2 * j] as JsonValue, `${at}[${2 * j}]`);
    w.writeEntry(msg);
    const size = q.sizeOf(msg);
    w.writeBlob(padded(bytesIn(items[2 * j + 1], `${at}[${2 * j + 1}]`, size), q.pad));
  }
}
