/** The image layer: CRIU-format image files, their kinds, and crit's JSON form. */

export { type ByteSink, type ByteSource, ImageReader, ImageWriter, MAX_ENTRY_SIZE } from "./file.ts";
export { ImageFormatError, ImageJsonError, isImageFormatError, isImageJsonError } from "./errors.ts";
export {
  allKinds,
  CRTOOLS_IMAGES_V1_1,
  type EntryOf,
  type HeadMagic,
  headMagicValue,
  imageFileName,
  type ImageKind,
  IMG_COMMON_MAGIC,
  IMG_SERVICE_MAGIC,
  INVENTORY_MAGIC,
  kindByMagic,
  kindByMagicName,
  kindByName,
  type KindName,
  KINDS,
  type PayloadKind,
} from "./kinds.ts";
export { messageFromJson, messageToJson } from "./message_json.ts";
export {
  type CritImage,
  decodeImage,
  decodeImageBytes,
  decodeImageFile,
  type DecodeOptions,
  encodeImage,
  imageInfo,
} from "./image_json.ts";
export { type JsonObject, type JsonValue, parseJson, stringifyJson } from "./_json_text.ts";
export { type CritIO, critMain } from "./crit.ts";
