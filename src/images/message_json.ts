/**
 * One protobuf message <-> its crit JSON form. The form is crit's, so tools and people used to
 * crit read ours unchanged:
 *   - keys are the .proto field names, in field-number order; only fields that are set appear
 *     (repeated ones when non-empty);
 *   - enums by value name; bytes as base64 with a newline every 76 characters (unix socket names
 *     as quoted-printable); integers as JSON numbers (64-bit ones exactly, as bigints here);
 *   - with `pretty`, integers marked by (criu) options print as hex ("0x400000"), device numbers
 *     ("8:1"), flag names ("PROT_READ | PROT_WRITE"), value names ("ESTABLISHED") and IP addresses.
 *     A hex mark on a message field applies to everything inside it (all registers print as hex).
 * The reverse accepts all of these forms.
 */

import {
  create,
  type DescEnum,
  type DescField,
  type DescMessage,
  getOption,
  hasOption,
  isFieldSet,
  type Message,
  ScalarType,
} from "@bufbuild/protobuf";
import {
  base64Lines,
  devFromString,
  devToString,
  dictName,
  dictValue,
  flagsFromString,
  flagsToString,
  fromBase64,
  fromQuotedPrintable,
  hasFlagTable,
  type Int,
  ipFromString,
  ipToString,
  parseIntLiteral,
  toHex,
  toQuotedPrintable,
} from "./_convert.ts";
import type { JsonObject, JsonValue } from "./_json_text.ts";
import { ImageJsonError } from "./errors.ts";
import { criu } from "./gen/opts_pb.ts";

/** The (criu) display options of a field, read once. */
interface Hints {
  hex: boolean;
  ipadd: boolean;
  flags: string;
  dev: boolean;
  odev: boolean;
  dict: string;
  conv: string;
}

const NO_HINTS: Hints = { hex: false, ipadd: false, flags: "", dev: false, odev: false, dict: "", conv: "" };
const hintCache = new WeakMap<DescField, Hints>();

function hintsOf(f: DescField): Hints {
  let h = hintCache.get(f);
  if (h === undefined) {
    if (hasOption(f, criu)) {
      const o = getOption(f, criu);
      h = {
        hex: o.hex,
        ipadd: o.ipadd,
        flags: o.flags,
        dev: o.dev,
        odev: o.odev,
        dict: o.dict,
        conv: o.conv,
      };
    } else {
      h = NO_HINTS;
    }
    hintCache.set(f, h);
  }
  return h;
}

const sortedFields = new WeakMap<DescMessage, DescField[]>();

function fieldsOf(schema: DescMessage): DescField[] {
  let fs = sortedFields.get(schema);
  if (fs === undefined) {
    fs = [...schema.fields].sort((a, b) => a.number - b.number);
    sortedFields.set(schema, fs);
  }
  return fs;
}

type Values = Record<string, unknown>;

// ---- message -> JSON

/** The crit JSON object for `msg`. */
export function messageToJson(schema: DescMessage, msg: Message, pretty = false): JsonObject {
  return walkOut(schema, msg, pretty, false);
}

function walkOut(schema: DescMessage, msg: Message, pretty: boolean, hexAbove: boolean): JsonObject {
  const out: JsonObject = {};
  const values = msg as unknown as Values;
  for (const f of fieldsOf(schema)) {
    if (f.fieldKind === "list") {
      const list = values[f.localName] as unknown[];
      if (list.length === 0) continue;
      const ip = pretty && hintsOf(f).ipadd ? ipToString(list as number[]) : undefined;
      out[f.name] = ip !== undefined ? [ip] : list.map((v) => valueOut(f, v, pretty, hexAbove));
    } else if (f.fieldKind !== "map" && isFieldSet(msg, f)) {
      out[f.name] = valueOut(f, values[f.localName], pretty, hexAbove);
    }
  }
  return out;
}

function valueOut(f: DescField, v: unknown, pretty: boolean, hexAbove: boolean): JsonValue {
  const h = hintsOf(f);
  const hex = hexAbove || h.hex;
  if (f.message !== undefined) return walkOut(f.message, v as Message, pretty, hex);
  if (f.enum !== undefined) return f.enum.values.find((e) => e.number === v)?.name ?? null;
  const scalar = f.scalar as ScalarType;
  if (scalar === ScalarType.BYTES) {
    return h.conv === "unix_name" ? toQuotedPrintable(v as Uint8Array) : base64Lines(v as Uint8Array);
  }
  if (scalar === ScalarType.BOOL || scalar === ScalarType.STRING) return v as boolean | string;
  if (scalar === ScalarType.DOUBLE || scalar === ScalarType.FLOAT) return v as number;
  const n = v as Int;
  if (pretty) {
    if (hex) return toHex(n);
    if (h.dev) return devToString(n, h.odev);
    if (h.flags !== "") return hasFlagTable(h.flags) ? flagsToString(n, h.flags) : toHex(n);
    if (h.dict !== "") return dictName(h.dict, f.name, Number(n)) ?? n;
  }
  return n;
}

// ---- JSON -> message

/** Builds a message of type `schema` from its crit JSON form; `where` prefixes error locations. */
export function messageFromJson<D extends DescMessage>(schema: D, json: JsonValue, where = ""): Message {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new ImageJsonError(where, `Expected an object for ${schema.typeName}, found ${describe(json)}`);
  }
  const msg = create(schema) as Message;
  const values = msg as unknown as Values;
  for (const [key, value] of Object.entries(json)) {
    const f = schema.fields.find((x) => x.name === key);
    const at = where === "" ? key : `${where}.${key}`;
    if (f === undefined) throw new ImageJsonError(at, `Unknown field ${key} in ${schema.typeName}`);
    if (f.fieldKind === "list") {
      if (!Array.isArray(value)) throw new ImageJsonError(at, `Expected a list, found ${describe(value)}`);
      values[f.localName] = listIn(f, value, at);
    } else if (f.fieldKind !== "map") {
      values[f.localName] = valueIn(f, value, at);
    }
  }
  return msg;
}

function listIn(f: DescField, list: JsonValue[], at: string): unknown[] {
  const first = list[0];
  if (hintsOf(f).ipadd && typeof first === "string") {
    const words = ipFromString(first);
    if (words === undefined) throw new ImageJsonError(`${at}[0]`, `Expected an IP address, found "${first}"`);
    return words;
  }
  return list.map((v, i) => valueIn(f, v, `${at}[${i}]`));
}

function valueIn(f: DescField, v: JsonValue, at: string): unknown {
  if (f.message !== undefined) return messageFromJson(f.message, v, at);
  if (f.enum !== undefined) return enumIn(f.enum, v, at);
  const scalar = f.scalar as ScalarType;
  switch (scalar) {
    case ScalarType.BOOL:
      if (typeof v !== "boolean") {
        throw new ImageJsonError(at, `Expected true or false, found ${describe(v)}`);
      }
      return v;
    case ScalarType.STRING:
      if (typeof v !== "string") throw new ImageJsonError(at, `Expected a string, found ${describe(v)}`);
      return v;
    case ScalarType.BYTES: {
      if (typeof v !== "string") {
        throw new ImageJsonError(at, `Expected a base64 string, found ${describe(v)}`);
      }
      if (hintsOf(f).conv === "unix_name") return fromQuotedPrintable(v);
      const bytes = fromBase64(v);
      if (bytes === undefined) throw new ImageJsonError(at, `Expected base64, found "${v}"`);
      return bytes;
    }
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      if (typeof v !== "number") throw new ImageJsonError(at, `Expected a number, found ${describe(v)}`);
      return v;
    default:
      return intIn(f, scalar, v, at);
  }
}

function enumIn(e: DescEnum, v: JsonValue, at: string): number {
  const found = typeof v === "string"
    ? e.values.find((x) => x.name === v)
    : typeof v === "number"
    ? e.values.find((x) => x.number === v)
    : undefined;
  if (found === undefined) {
    const names = e.values.map((x) => x.name).join(", ");
    throw new ImageJsonError(at, `Expected one of ${names} (${e.typeName}), found ${describe(v)}`);
  }
  return found.number;
}

const RANGES: Partial<Record<ScalarType, readonly [bigint, bigint, boolean]>> = {
  // [min, max, is64]
  [ScalarType.INT32]: [-(2n ** 31n), 2n ** 31n - 1n, false],
  [ScalarType.SINT32]: [-(2n ** 31n), 2n ** 31n - 1n, false],
  [ScalarType.SFIXED32]: [-(2n ** 31n), 2n ** 31n - 1n, false],
  [ScalarType.UINT32]: [0n, 2n ** 32n - 1n, false],
  [ScalarType.FIXED32]: [0n, 2n ** 32n - 1n, false],
  [ScalarType.INT64]: [-(2n ** 63n), 2n ** 63n - 1n, true],
  [ScalarType.SINT64]: [-(2n ** 63n), 2n ** 63n - 1n, true],
  [ScalarType.SFIXED64]: [-(2n ** 63n), 2n ** 63n - 1n, true],
  [ScalarType.UINT64]: [0n, 2n ** 64n - 1n, true],
  [ScalarType.FIXED64]: [0n, 2n ** 64n - 1n, true],
};

/** An integer from a number, a bigint or any string form the pretty printer produces. */
function intIn(f: DescField, scalar: ScalarType, v: JsonValue, at: string): number | bigint {
  let n: bigint | undefined;
  if (typeof v === "bigint") n = v;
  else if (typeof v === "number" && Number.isInteger(v)) n = BigInt(v);
  else if (typeof v === "string") {
    const h = hintsOf(f);
    if (h.dev) n = devFromString(v, h.odev);
    else if (h.flags !== "" && hasFlagTable(h.flags)) n = flagsFromString(v, h.flags);
    else if (h.dict !== "") {
      const named = dictValue(h.dict, f.name, v);
      n = named !== undefined ? BigInt(named) : parseIntLiteral(v);
    } else n = parseIntLiteral(v);
  }
  if (n === undefined) throw new ImageJsonError(at, `Expected an integer, found ${describe(v)}`);
  const [min, max, is64] = RANGES[scalar] as readonly [bigint, bigint, boolean];
  if (n < min || n > max) throw new ImageJsonError(at, `Expected an integer in [${min}, ${max}], found ${n}`);
  return is64 ? n : Number(n);
}

function describe(v: JsonValue | undefined): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return `"${v.length > 40 ? v.slice(0, 40) + "..." : v}"`;
  return String(v);
}
