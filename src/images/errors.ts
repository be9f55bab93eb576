/** Named errors of the image layer: a broken image file, and JSON that does not describe an image. */

/**
 * An image file does not follow the format: bad magic, truncated size or body, an entry larger than
 * the cap, a protobuf that does not parse or lacks a required field. `file` is the name the image was
 * opened under and `offset` the byte offset where the bad part starts.
 */
export class ImageFormatError extends Error {
  override name = "ImageFormatError";
  constructor(
    readonly file: string,
    readonly offset: number,
    readonly problem: string,
    readonly detail?: string,
  ) {
    super(`${problem} in ${file} at offset ${offset}${detail === undefined ? "" : `: ${detail}`}`);
  }
}

export function isImageFormatError(e: unknown): e is ImageFormatError {
  return e instanceof ImageFormatError;
}

/**
 * JSON handed to the encoder does not describe an image: unknown magic or field, a value of the
 * wrong type. `where` is a path into the document such as `entries[2].tc.comm`.
 */
export class ImageJsonError extends Error {
  override name = "ImageJsonError";
  constructor(readonly where: string, readonly problem: string) {
    super(where ? `${problem} at ${where}` : problem);
  }
}

export function isImageJsonError(e: unknown): e is ImageJsonError {
  return e instanceof ImageJsonError;
}
