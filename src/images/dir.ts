/**
 * An images directory: where each kind of image lives, writing whole images, reading them back,
 * and remembering what this run wrote so a failed dump can take it all away again.
 */
import { imageFileName, type ImageKind } from "./kinds.ts";
import { ImageReader, ImageWriter } from "./file.ts";
import type { Message } from "@bufbuild/protobuf";
import { pathExists } from "../../ffi/fd.ts";
import { fromOsError } from "../../ffi/errors.ts";

export class ImageDir {
  readonly path: string;
  #written: string[] = [];

  constructor(path: string) {
    this.path = Deno.realPathSync(path);
  }

  pathFor(kind: ImageKind, id?: number | bigint | string): string {
    return `${this.path}/${imageFileName(kind, id)}`;
  }

  has(kind: ImageKind, id?: number | bigint | string): boolean {
    return pathExists(this.pathFor(kind, id));
  }

  /** Writes an image with all its entries. */
  write(kind: ImageKind, id: number | bigint | string | undefined, entries: readonly Message[]): void {
    const w = ImageWriter.create(this.path, kind, id);
    this.noteWritten(w.name);
    try {
      for (const e of entries) w.writeEntry(e);
    } finally {
      w.close();
    }
  }

  /**
   * Reads every entry of an image; throws ImageFormatError naming the file when it is damaged, and
   * a SyscallError naming it when it cannot be opened.
   */
  read<T extends Message>(kind: ImageKind, id?: number | bigint | string): T[] {
    let r: ImageReader;
    try {
      r = ImageReader.open(this.path, kind, id);
    } catch (e) {
      throw fromOsError(`open ${this.pathFor(kind, id)}`, e);
    }
    try {
      return r.readAll() as unknown as T[];
    } finally {
      r.close();
    }
  }

  /** Like read() for images that may be absent. */
  readOptional<T extends Message>(kind: ImageKind, id?: number | bigint | string): T[] {
    return this.has(kind, id) ? this.read<T>(kind, id) : [];
  }

  noteWritten(path: string): void {
    this.#written.push(path);
  }

  /** Removes every file this run wrote. */
  removeWritten(): void {
    for (const p of this.#written) {
      try {
        Deno.removeSync(p);
      } catch {
        // already gone
      }
    }
    this.#written = [];
  }
}
