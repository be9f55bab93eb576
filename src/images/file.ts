/**
 * Reading and writing image files: magics, entry framing (u32 little-endian size + protobuf) and
 * raw payloads. Everything is synchronous and buffered; a reader never holds more than one entry or
 * one requested blob in memory besides its read buffer.
 *
 * Readers are strict, as CRIU is: a clean end of file is only allowed between entries, and a wrong
 * magic, a short size or body, an entry over MAX_ENTRY_SIZE, a protobuf that does not parse or that
 * lacks a required field all throw ImageFormatError naming the file and the offset.
 */

import { type DescMessage, fromBinary, type Message, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { missingRequired } from "./_required.ts";
import { ImageFormatError } from "./errors.ts";
import { fromOsError } from "../../ffi/errors.ts";
import {
  type EntryOf,
  headMagicValue,
  imageFileName,
  type ImageKind,
  IMG_COMMON_MAGIC,
  IMG_SERVICE_MAGIC,
  INVENTORY_MAGIC,
  kindByMagic,
  KINDS,
} from "./kinds.ts";

/** No real entry comes near this (the largest are mm entries of huge address spaces); it stops a
 * corrupt size field from making us allocate gigabytes. */
export const MAX_ENTRY_SIZE = 64 * 1024 * 1024;

const BUFFER_SIZE = 128 * 1024;
/** Large blobs are read in parts of this size (see ImageReader #take). */
const BLOB_PART = 8 * 1024 * 1024;

/**
 * Creates (or truncates) an image file, mode 0644 as CRIU. A directory we cannot write to fails
 * here with the path and the errno, not with Deno's message and a stack.
 */
export function createImageFile(path: string): Deno.FsFile {
  try {
    return Deno.openSync(path, { write: true, create: true, truncate: true, mode: 0o644 });
  } catch (e) {
    throw fromOsError(`create ${path}`, e);
  }
}

/** Where a writer's bytes go. `write` must take all bytes or throw. */
export interface ByteSink {
  write(bytes: Uint8Array): void;
  close(): void;
}

/** Where a reader's bytes come from. `read` returns 0 only at end of file. */
export interface ByteSource {
  read(into: Uint8Array): number;
  close(): void;
}

class FileSink implements ByteSink {
  constructor(private readonly file: Deno.FsFile) {}
  write(bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.length) done += this.file.writeSync(bytes.subarray(done));
  }
  close(): void {
    this.file.close();
  }
}

class MemorySink implements ByteSink {
  readonly chunks: Uint8Array[] = [];
  write(bytes: Uint8Array): void {
    this.chunks.push(bytes.slice());
  }
  close(): void {}
  contents(): Uint8Array {
    return concat(this.chunks);
  }
}

class FileSource implements ByteSource {
  constructor(private readonly file: Deno.FsFile, private readonly path: string) {}
  read(into: Uint8Array): number {
    try {
      return this.file.readSync(into) ?? 0;
    } catch (e) {
      throw fromOsError(`read ${this.path}`, e);
    }
  }
  close(): void {
    this.file.close();
  }
}

class BytesSource implements ByteSource {
  private pos = 0;
  constructor(private readonly bytes: Uint8Array) {}
  read(into: Uint8Array): number {
    const n = Math.min(into.length, this.bytes.length - this.pos);
    into.set(this.bytes.subarray(this.pos, this.pos + n));
    this.pos += n;
    return n;
  }
  close(): void {}
}

/** dir + "/" + name, without doubling a trailing slash (node:path would pull in @types/node). */
function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, "0")}`;
}

/** "0x55053847 (CORE)" when the value is a known magic. */
function describeMagic(n: number): string {
  if (n === IMG_COMMON_MAGIC) return `${hex(n)} (IMG_COMMON)`;
  if (n === IMG_SERVICE_MAGIC) return `${hex(n)} (IMG_SERVICE)`;
  const k = n === INVENTORY_MAGIC ? KINDS.INVENTORY : kindByMagic(n);
  return k === undefined ? hex(n) : `${hex(n)} (${k.magicName})`;
}

/** Schemas a writer of kind `k` accepts, by type name. */
function schemasOf(k: ImageKind): Map<string, DescMessage> {
  const m = new Map<string, DescMessage>();
  for (const s of [k.first, k.entry, k.inner]) if (s !== undefined) m.set(s.typeName, s);
  return m;
}

/**
 * Buffers of closed readers and writers, kept for the next ones: a dump writes and a restore reads
 * hundreds of small images one after another, and a fresh zeroed 128 KiB each time (an mmap and
 * page faults, then garbage) costs more than the entries themselves. A few are kept because
 * readers may be open side by side.
 */
const spareBuffers: Uint8Array<ArrayBuffer>[] = [];
const MAX_SPARE_BUFFERS = 4;

/** Writes one image file: its magics on creation, then entries and blobs through a buffer. */
export class ImageWriter<K extends ImageKind = ImageKind> {
  #sink: ByteSink;
  #buf = takeBuffer();
  #view = new DataView(this.#buf.buffer);
  #len = 0;
  #offset = 0;
  #entries = 0;
  #closed = false;
  readonly #schemas: Map<string, DescMessage>;

  private constructor(sink: ByteSink, readonly name: string, readonly kind: K) {
    this.#sink = sink;
    this.#schemas = schemasOf(kind);
    const head = headMagicValue(kind);
    if (head !== undefined) this.#putU32(head);
    if (kind.magic !== undefined) this.#putU32(kind.magic);
  }

  /** Creates (or truncates) the image of kind `kind` and id `id` in `dir`. */
  static create<K extends ImageKind>(dir: string, kind: K, id?: number | bigint | string): ImageWriter<K> {
    return ImageWriter.createPath(join(dir, imageFileName(kind, id)), kind);
  }

  static createPath<K extends ImageKind>(path: string, kind: K): ImageWriter<K> {
    return new ImageWriter(new FileSink(createImageFile(path)), path, kind);
  }

  /** A writer over any sink (an fd owned by the FFI layer, a socket...). `name` is for messages. */
  static toSink<K extends ImageKind>(sink: ByteSink, name: string, kind: K): ImageWriter<K> {
    return new ImageWriter(sink, name, kind);
  }

  /** A writer that keeps the image in memory; take it with contents() after close(). */
  static inMemory<K extends ImageKind>(kind: K, name: string = kind.file): ImageWriter<K> {
    return new ImageWriter(new MemorySink(), name, kind);
  }

  /** Bytes written so far, magics included (the offset the next entry will start at). */
  get offset(): number {
    return this.#offset;
  }

  get entryCount(): number {
    return this.#entries;
  }

  /** Appends one entry. The message type must be one this kind holds. */
  writeEntry(msg: EntryOf<K> | Message): void {
    this.#checkOpen();
    const schema = this.#schemas.get(msg.$typeName);
    if (schema === undefined) {
      const allowed = [...this.#schemas.keys()].join(", ") || "no entries";
      throw new TypeError(`A ${msg.$typeName} entry does not belong in ${this.name} (it holds ${allowed})`);
    }
    let body: Uint8Array;
    try {
      body = toBinary(schema, msg);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new ImageFormatError(this.name, this.#offset, `Cannot encode ${schema.typeName}`, why);
    }
    if (body.length > MAX_ENTRY_SIZE) {
      throw new ImageFormatError(
        this.name,
        this.#offset,
        "Entry too large",
        `expected at most ${MAX_ENTRY_SIZE} bytes, found ${body.length}`,
      );
    }
    this.#putU32(body.length);
    this.#put(body);
    this.#entries++;
  }

  /** Appends raw bytes (pipe data, socket queue, page contents...) after the last entry. */
  writeBlob(bytes: Uint8Array): void {
    this.#checkOpen();
    this.#put(bytes);
  }

  /** Pushes buffered bytes to the sink, e.g. before someone else appends to the same fd. */
  flush(): void {
    if (this.#len > 0) {
      this.#sink.write(this.#buf.subarray(0, this.#len));
      this.#len = 0;
    }
  }

  close(): void {
    if (this.#closed) return;
    try {
      this.flush();
    } finally {
      this.#closed = true;
      giveBackBuffer(this.#buf);
      this.#sink.close();
    }
  }

  /** The whole image of an inMemory() writer, after close(). */
  contents(): Uint8Array {
    if (!(this.#sink instanceof MemorySink)) throw new TypeError(`${this.name} is not an in-memory image`);
    if (!this.#closed) throw new TypeError(`${this.name} is still open`);
    return this.#sink.contents();
  }

  #checkOpen(): void {
    if (this.#closed) throw new TypeError(`${this.name} is closed`);
  }

  #putU32(v: number): void {
    if (this.#len + 4 > this.#buf.length) this.flush();
    this.#view.setUint32(this.#len, v, true);
    this.#len += 4;
    this.#offset += 4;
  }

  #put(bytes: Uint8Array): void {
    this.#offset += bytes.length;
    if (this.#len + bytes.length <= this.#buf.length) {
      this.#buf.set(bytes, this.#len);
      this.#len += bytes.length;
      return;
    }
    this.flush();
    // Large blobs go straight to the sink instead of through the buffer.
    if (bytes.length >= this.#buf.length / 2) {
      this.#sink.write(bytes);
    } else {
      this.#buf.set(bytes, 0);
      this.#len = bytes.length;
    }
  }
}

function takeBuffer(): Uint8Array<ArrayBuffer> {
  return spareBuffers.pop() ?? new Uint8Array(BUFFER_SIZE);
}

/** Only for a buffer nothing refers to any more: what readers hand out are copies. */
function giveBackBuffer(buf: Uint8Array<ArrayBuffer>): void {
  if (spareBuffers.length < MAX_SPARE_BUFFERS) spareBuffers.push(buf);
}

/** Reads one image file: checks its magics on open, then hands out entries and blobs. */
export class ImageReader<K extends ImageKind = ImageKind> {
  #src: ByteSource;
  #buf = takeBuffer();
  #view = new DataView(this.#buf.buffer);
  #start = 0;
  #end = 0;
  #eof = false;
  #offset = 0;
  #entries = 0;
  #closed = false;
  #kind: K;

  private constructor(src: ByteSource, readonly name: string, kind: K | undefined) {
    this.#src = src;
    try {
      this.#kind = kind === undefined ? this.#detectKind() as K : kind;
      if (kind !== undefined) this.#checkMagics(kind);
    } catch (e) {
      src.close();
      throw e;
    }
  }

  /** Opens the image of kind `kind` and id `id` in `dir` and checks its magics. */
  static open<K extends ImageKind>(dir: string, kind: K, id?: number | bigint | string): ImageReader<K> {
    return ImageReader.openPath(join(dir, imageFileName(kind, id)), kind);
  }

  /** Opens an image by path; without `kind`, the kind is recognised from the magics (as crit does). */
  static openPath<K extends ImageKind = ImageKind>(path: string, kind?: K): ImageReader<K> {
    return new ImageReader<K>(new FileSource(Deno.openSync(path, { read: true }), path), path, kind);
  }

  static fromBytes<K extends ImageKind = ImageKind>(
    bytes: Uint8Array,
    name: string,
    kind?: K,
  ): ImageReader<K> {
    return new ImageReader<K>(new BytesSource(bytes), name, kind);
  }

  static fromSource<K extends ImageKind = ImageKind>(
    src: ByteSource,
    name: string,
    kind?: K,
  ): ImageReader<K> {
    return new ImageReader<K>(src, name, kind);
  }

  get kind(): K {
    return this.#kind;
  }

  /** Bytes consumed so far, magics included. */
  get offset(): number {
    return this.#offset;
  }

  get entryCount(): number {
    return this.#entries;
  }

  /**
   * The next entry, or null at a clean end of file. Without `schema` the kind's own message is
   * used (its `first` message for the first entry); pass one for records nested in a payload.
   */
  readEntry(): EntryOf<K> | null;
  readEntry<D extends DescMessage>(schema: D): MessageShape<D> | null;
  readEntry(schema?: DescMessage): Message | null {
    this.#checkOpen();
    const desc = schema ?? (this.#entries === 0 ? this.#kind.first : undefined) ?? this.#kind.entry;
    if (desc === undefined) throw new TypeError(`${this.name} is a raw image without entries`);
    const at = this.#offset;
    const size = this.#readU32("Truncated entry size");
    if (size === null) return null;
    if (size > MAX_ENTRY_SIZE) {
      throw new ImageFormatError(
        this.name,
        at,
        "Entry too large",
        `expected at most ${MAX_ENTRY_SIZE} bytes, found a size of ${size}`,
      );
    }
    const body = this.#take(size);
    if (body.length < size) {
      throw new ImageFormatError(
        this.name,
        at,
        `Truncated ${desc.typeName}`,
        `expected ${size} bytes, found ${body.length}`,
      );
    }
    let msg: Message;
    try {
      msg = fromBinary(desc, body);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new ImageFormatError(this.name, at, `Cannot parse ${desc.typeName}`, why);
    }
    const missing = missingRequired(desc, msg);
    if (missing !== undefined) {
      throw new ImageFormatError(
        this.name,
        at,
        `Incomplete ${desc.typeName}`,
        `required field ${missing} is missing`,
      );
    }
    this.#entries++;
    return msg;
  }

  /** Exactly `n` raw bytes; a short read is an error. */
  readBlob(n: number): Uint8Array {
    this.#checkOpen();
    const at = this.#offset;
    const bytes = this.#take(n);
    if (bytes.length < n) {
      throw new ImageFormatError(
        this.name,
        at,
        "Truncated data",
        `expected ${n} bytes, found ${bytes.length}`,
      );
    }
    return bytes;
  }

  /** Skips `n` raw bytes; a short file is an error. */
  skip(n: number): void {
    this.#checkOpen();
    const at = this.#offset;
    let left = n;
    while (left > 0) {
      const got = this.#take(Math.min(left, BUFFER_SIZE)).length;
      if (got === 0) {
        throw new ImageFormatError(this.name, at, "Truncated data", `expected ${n} bytes, found ${n - left}`);
      }
      left -= got;
    }
  }

  /** Everything up to end of file (the contents of a ghost file, a raw image). */
  readRest(): Uint8Array {
    this.#checkOpen();
    const parts: Uint8Array[] = [];
    for (;;) {
      const part = this.#take(BUFFER_SIZE);
      if (part.length === 0) return concat(parts);
      parts.push(part);
    }
  }

  /** True when no byte is left. */
  atEnd(): boolean {
    this.#checkOpen();
    return this.#fill(1) === 0;
  }

  /** Every remaining entry; for kinds without payloads only, where entries follow one another. */
  readAll(): EntryOf<K>[] {
    if (this.#kind.payload !== undefined) {
      throw new TypeError(`${this.name} has raw data between entries; use readEntry() and readBlob()`);
    }
    const out: EntryOf<K>[] = [];
    for (let e = this.readEntry(); e !== null; e = this.readEntry()) out.push(e);
    return out;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    giveBackBuffer(this.#buf);
    this.#src.close();
  }

  #checkOpen(): void {
    if (this.#closed) throw new TypeError(`${this.name} is closed`);
  }

  #readMagic(): number {
    const v = this.#readU32("Truncated magic");
    if (v === null) {
      throw new ImageFormatError(this.name, this.#offset, "Truncated magic", "expected 4 bytes, found 0");
    }
    return v;
  }

  /** A little-endian u32; null at a clean end of file, `problem` if the file ends inside it. */
  #readU32(problem: string): number | null {
    const got = this.#fill(4);
    if (got === 0) return null;
    if (got < 4) {
      throw new ImageFormatError(this.name, this.#offset, problem, `expected 4 bytes, found ${got}`);
    }
    const v = this.#view.getUint32(this.#start, true);
    this.#start += 4;
    this.#offset += 4;
    return v;
  }

  #checkMagics(kind: ImageKind): void {
    const head = headMagicValue(kind);
    if (head !== undefined) {
      const found = this.#readMagic();
      if (found !== head) {
        throw new ImageFormatError(
          this.name,
          0,
          "Bad head magic",
          `expected ${describeMagic(head)}, found ${describeMagic(found)}`,
        );
      }
    }
    if (kind.magic !== undefined) {
      const at = this.#offset;
      const found = this.#readMagic();
      if (found !== kind.magic) {
        throw new ImageFormatError(
          this.name,
          at,
          "Bad magic",
          `expected ${hex(kind.magic)} (${kind.magicName}), found ${describeMagic(found)}`,
        );
      }
    }
  }

  /** Recognises the kind from the magics, as crit does; raw images cannot be recognised. */
  #detectKind(): ImageKind {
    const first = this.#readMagic();
    if (first === INVENTORY_MAGIC) return KINDS.INVENTORY;
    if (first !== IMG_COMMON_MAGIC && first !== IMG_SERVICE_MAGIC) {
      throw new ImageFormatError(
        this.name,
        0,
        "Unknown magic",
        `expected ${describeMagic(IMG_COMMON_MAGIC)}, ${describeMagic(IMG_SERVICE_MAGIC)} or ` +
          `${describeMagic(INVENTORY_MAGIC)}, found ${hex(first)} (raw images such as pages-*.img ` +
          `have no magic)`,
      );
    }
    const second = this.#readMagic();
    const kind = kindByMagic(second);
    if (kind === undefined) {
      throw new ImageFormatError(
        this.name,
        4,
        "Unknown magic",
        `found ${hex(second)}, not a known image kind`,
      );
    }
    if (headMagicValue(kind) !== first) {
      throw new ImageFormatError(
        this.name,
        0,
        "Bad head magic",
        `expected ${describeMagic(headMagicValue(kind) ?? 0)} for ${kind.magicName}, found ${
          describeMagic(first)
        }`,
      );
    }
    return kind;
  }

  /** Makes up to `n` bytes available in the buffer (n <= buffer size); returns how many are. */
  #fill(n: number): number {
    while (this.#end - this.#start < n && !this.#eof) {
      if (this.#buf.length - this.#start < n) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const got = this.#src.read(this.#buf.subarray(this.#end));
      if (got === 0) this.#eof = true;
      this.#end += got;
    }
    return Math.min(n, this.#end - this.#start);
  }

  /** Up to `n` bytes as a fresh array (parsed messages may keep views into it); fewer only at EOF. */
  #take(n: number): Uint8Array {
    if (n <= this.#buf.length) {
      const got = this.#fill(n);
      const out = this.#buf.slice(this.#start, this.#start + got);
      this.#start += got;
      this.#offset += got;
      return out;
    }
    // Larger than the buffer: drain what is buffered, then read straight into the result. The
    // size comes from the image: a damaged one may say gigabytes, so memory is taken as the bytes
    // arrive, a part at a time, never all at once up front.
    const parts = [this.#buf.slice(this.#start, this.#end)];
    let got = this.#end - this.#start;
    this.#start = this.#end = 0;
    while (got < n && !this.#eof) {
      const part = new Uint8Array(Math.min(n - got, BLOB_PART));
      let filled = 0;
      while (filled < part.length && !this.#eof) {
        const r = this.#src.read(part.subarray(filled));
        if (r === 0) this.#eof = true;
        filled += r;
      }
      parts.push(filled === part.length ? part : part.subarray(0, filled));
      got += filled;
    }
    this.#offset += got;
    return parts.length === 1 ? parts[0]! : concat(parts);
  }
}
