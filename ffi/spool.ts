/**
 * A spool of records (a u32 tag and some bytes each) kept in a memfd of criu's: in kernel memory,
 * never all in the JavaScript heap. Written in order, then read back in the same order, one record
 * at a time. Layout of a record: tag u32, size u32 (little-endian), then the bytes.
 */
import { addressOf, callBig, cstr, libc } from "./libc.ts";
import { closeFd, preadFull, pwriteFull } from "./fd.ts";
import { NR } from "./syscalls.ts";

const MFD_CLOEXEC = 1;
const HEAD = 8;

export class Spool {
  readonly #fd: number;
  readonly #what: string;
  #end = 0;
  #at = 0;
  #count = 0;

  constructor(what: string) {
    this.#what = what;
    this.#fd = callBig(
      "memfd_create(spool)",
      libc.syscall(
        BigInt(NR.memfd_create),
        addressOf(cstr("criu-ts-spool")),
        BigInt(MFD_CLOEXEC),
        0n,
        0n,
        0n,
        0n,
      ),
      what,
    );
  }

  append(tag: number, data: Uint8Array<ArrayBuffer>): void {
    const head = new Uint8Array(HEAD);
    const view = new DataView(head.buffer);
    view.setUint32(0, tag, true);
    view.setUint32(4, data.length, true);
    pwriteFull(this.#fd, head, this.#end, this.#what);
    pwriteFull(this.#fd, data, this.#end + HEAD, this.#what);
    this.#end += HEAD + data.length;
    this.#count++;
  }

  /** How many records were appended. */
  get count(): number {
    return this.#count;
  }

  /** Back to the first record. */
  rewind(): void {
    this.#at = 0;
  }

  /** The next record; past the last one is an error. */
  next(): { tag: number; data: Uint8Array<ArrayBuffer> } {
    if (this.#at >= this.#end) throw new Error(`${this.#what}: read past the last spooled record`);
    const head = new Uint8Array(HEAD);
    preadFull(this.#fd, head, this.#at, this.#what);
    const view = new DataView(head.buffer);
    const data = new Uint8Array(view.getUint32(4, true));
    preadFull(this.#fd, data, this.#at + HEAD, this.#what);
    this.#at += HEAD + data.length;
    return { tag: view.getUint32(0, true), data };
  }

  close(): void {
    closeFd(this.#fd);
  }
}
