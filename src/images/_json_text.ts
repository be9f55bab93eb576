/**
 * JSON text for the crit tool. Integers stay exact past 2^53 (u64 addresses and signal masks are
 * common): they are bigints in the value model, printed as plain digits, and read back as bigints
 * when a double would round them. The printer writes what Python's json.dump writes (crit is
 * Python), so our output can be compared with crit's byte for byte: ", " and ": " separators when
 * compact, 4-space indents when pretty, non-ASCII escaped as \uXXXX.
 */

export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

const ESCAPES: Record<string, string> = {
  '"': '\\"',
  "\\": "\\\\",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
  "\b": "\\b",
  "\f": "\\f",
};

function quote(s: string): string {
  // Everything outside printable ASCII is escaped, as Python's ensure_ascii does.
  return `"${
    s.replace(/[^ -~]|["\\]/g, (c) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
  }"`;
}

/** Prints `v` as Python's json.dumps(v) (indent undefined) or json.dumps(v, indent=indent). */
export function stringifyJson(v: JsonValue, indent?: number): string {
  const parts: string[] = [];
  const write = (x: JsonValue, depth: number): void => {
    if (x === null) parts.push("null");
    else if (typeof x === "boolean" || typeof x === "bigint") parts.push(String(x));
    else if (typeof x === "number") parts.push(Number.isFinite(x) ? String(x) : "null");
    else if (typeof x === "string") parts.push(quote(x));
    else {
      const isList = Array.isArray(x);
      const items: [string | undefined, JsonValue][] = isList
        ? x.map((e) => [undefined, e])
        : Object.entries(x).map(([k, e]) => [k, e]);
      parts.push(isList ? "[" : "{");
      if (items.length > 0) {
        const inner = indent === undefined ? "" : "\n" + " ".repeat(indent * (depth + 1));
        const sep = indent === undefined ? ", " : ",";
        items.forEach(([k, e], i) => {
          parts.push(i === 0 ? inner : sep + inner);
          if (k !== undefined) parts.push(quote(k), ": ");
          write(e, depth + 1);
        });
        if (indent !== undefined) parts.push("\n" + " ".repeat(indent * depth));
      }
      parts.push(isList ? "]" : "}");
    }
  };
  write(v, 0);
  return parts.join("");
}

type Reviver = (key: string, value: unknown, context?: { source?: string }) => unknown;

/** Parses JSON text; integers a double cannot hold exactly come back as bigints. */
export function parseJson(text: string): JsonValue {
  const reviver: Reviver = (_key, value, context) => {
    const src = context?.source;
    if (
      typeof value === "number" && !Number.isSafeInteger(value) && src !== undefined && /^-?\d+$/.test(src)
    ) {
      return BigInt(src);
    }
    return value;
  };
  return (JSON.parse as (text: string, reviver: Reviver) => JsonValue)(text, reviver);
}
