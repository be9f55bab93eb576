/**
 * Value conversions of the crit JSON form: base64 for bytes, quoted-printable for unix socket names,
 * and the friendlier forms `--pretty` prints for fields marked with (criu) options: hex numbers,
 * device numbers, flag names, value names and IP addresses. Each has its inverse, because crit's
 * encoder accepts every form its decoder prints. Output matches what crit (Python) prints.
 */

// ---- base64, as Python's base64.encodebytes: a newline after every 76 characters and at the end.

export function base64Lines(bytes: Uint8Array): string {
  const lines: string[] = [];
  // 57 input bytes make one 76-character line.
  for (let i = 0; i < bytes.length; i += 57) {
    let bin = "";
    for (const b of bytes.subarray(i, i + 57)) bin += String.fromCharCode(b);
    lines.push(btoa(bin) + "\n");
  }
  return lines.join("");
}

/** Decodes base64, ignoring line breaks and other white space; undefined if it is not base64. */
export function fromBase64(text: string): Uint8Array | undefined {
  let bin: string;
  try {
    bin = atob(text.replace(/\s+/g, ""));
  } catch {
    return undefined;
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// ---- quoted-printable (RFC 1521), the rules of Python's binascii.b2a_qp / a2b_qp in text mode,
// which crit uses. Unix socket names are bytes that may hold NULs (abstract names) but are mostly
// printable. One deliberate difference: every CR is quoted (=0D). Python leaves CRs bare and turns
// CR LF into LF (or every LF into CR LF), which loses bytes; with CRs quoted the text decodes back
// to the exact name, and for names without CRs our text is the same as crit's.

const QP_LINE = 76;
const HEX = "0123456789ABCDEF";

export function toQuotedPrintable(data: Uint8Array): string {
  let out = "";
  let lineLen = 0;
  let i = 0;
  while (i < data.length) {
    const c = data[i] as number;
    const next = data[i + 1];
    const last = i + 1 === data.length;
    const mustQuote = c > 126 || c === 0x3d ||
      (c === 0x2e && lineLen === 0 && (last || next === 0x0a || next === 0x0d || next === 0)) ||
      ((c === 0x09 || c === 0x20) && last) ||
      (c < 33 && c !== 0x0a && c !== 0x09 && c !== 0x20);
    if (mustQuote) {
      if (lineLen + 3 >= QP_LINE) {
        out += "=\n";
        lineLen = 0;
      }
      out += "=" + HEX[c >> 4] + HEX[c & 15];
      lineLen += 3;
      i++;
    } else if (c === 0x0a) {
      // White space right before a line end would be lost in transport: quote it.
      const prev = out.charCodeAt(out.length - 1);
      if (out.length > 0 && (prev === 0x20 || prev === 0x09)) {
        out = out.slice(0, -1) + "=" + HEX[prev >> 4] + HEX[prev & 15];
      }
      out += "\n";
      lineLen = 0;
      i++;
    } else {
      if (!last && next !== 0x0a && lineLen + 1 >= QP_LINE) {
        out += "=\n";
        lineLen = 0;
      }
      lineLen++;
      out += String.fromCharCode(c);
      i++;
    }
  }
  return out;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

export function fromQuotedPrintable(text: string): Uint8Array {
  const data = new TextEncoder().encode(text);
  const out: number[] = [];
  let i = 0;
  while (i < data.length) {
    const c = data[i] as number;
    if (c !== 0x3d) {
      out.push(c);
      i++;
      continue;
    }
    i++;
    if (i >= data.length) break;
    const d = data[i] as number;
    if (d === 0x0a || d === 0x0d) { // soft line break
      while (i < data.length && data[i] !== 0x0a) i++;
      if (i < data.length) i++;
    } else if (d === 0x3d) {
      out.push(0x3d);
      i++;
    } else {
      const hi = hexValue(d);
      const lo = i + 1 < data.length ? hexValue(data[i + 1] as number) : -1;
      if (hi >= 0 && lo >= 0) {
        out.push(hi * 16 + lo);
        i += 2;
      } else {
        out.push(0x3d);
      }
    }
  }
  return new Uint8Array(out);
}

// ---- numbers

export type Int = number | bigint;

/** "0x1f", "-0x1" like Python's "%#x". */
export function toHex(v: Int): string {
  const n = BigInt(v);
  return n < 0n ? `-0x${(-n).toString(16)}` : `0x${n.toString(16)}`;
}

/**
 * Parses an integer literal the way Python's int(text, 0) does: optional sign, 0x/0o/0b prefixes,
 * underscores between digits, surrounding white space. Undefined if it is not one.
 */
export function parseIntLiteral(text: string): bigint | undefined {
  const m = /^\s*([+-]?)(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)\s*$/.exec(text);
  if (m === null) return undefined;
  const body = (m[2] as string).replace(/_/g, "");
  if (body === "" || /^0[xXoObB]$/.test(body)) return undefined;
  const v = BigInt(body.length > 1 && /^0[xXoObB]/.test(body) ? body.toLowerCase() : body);
  return m[1] === "-" ? -v : v;
}

// ---- device numbers: the kernel's internal dev_t (major << 20 | minor) or, with (criu).odev, the
// glibc user-space layout.

export function devToString(v: Int, old: boolean): string {
  const n = BigInt(v);
  if (old) {
    const major = ((n >> 8n) & 0xfffn) | ((n >> 32n) & ~0xfffn);
    const minor = (n & 0xffn) | ((n >> 12n) & ~0xffn);
    return `${major}:${minor}`;
  }
  return `${n >> 20n}:${n & 0xfffffn}`;
}

export function devFromString(text: string, old: boolean): bigint | undefined {
  const m = /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(text);
  if (m === null) return undefined;
  const major = BigInt(m[1] as string);
  const minor = BigInt(m[2] as string);
  if (old) {
    return ((major & 0xfffn) << 8n) | ((major & ~0xfffn) << 32n) | (minor & 0xffn) |
      ((minor & ~0xffn) << 12n);
  }
  return (major << 20n) | minor;
}

// ---- bit flags, named by the tables (criu).flags refers to.

type FlagTable = readonly (readonly [string, number])[];

const FLAG_TABLES: Record<string, FlagTable> = {
  "mmap.prot": [["PROT_READ", 0x1], ["PROT_WRITE", 0x2], ["PROT_EXEC", 0x4]],
  "mmap.flags": [
    ["MAP_SHARED", 0x1],
    ["MAP_PRIVATE", 0x2],
    ["MAP_DROPPABLE", 0x8],
    ["MAP_ANON", 0x20],
    ["MAP_GROWSDOWN", 0x100],
  ],
  // CRIU's VMA_AREA_* status bits (criu/include/image.h).
  "mmap.status": [
    ["VMA_AREA_NONE", 0],
    ["VMA_AREA_REGULAR", 1 << 0],
    ["VMA_AREA_STACK", 1 << 1],
    ["VMA_AREA_VSYSCALL", 1 << 2],
    ["VMA_AREA_VDSO", 1 << 3],
    ["VMA_AREA_HEAP", 1 << 5],
    ["VMA_FILE_PRIVATE", 1 << 6],
    ["VMA_FILE_SHARED", 1 << 7],
    ["VMA_ANON_SHARED", 1 << 8],
    ["VMA_ANON_PRIVATE", 1 << 9],
    ["VMA_AREA_SYSVIPC", 1 << 10],
    ["VMA_AREA_SOCKET", 1 << 11],
    ["VMA_AREA_VVAR", 1 << 12],
    ["VMA_AREA_AIORING", 1 << 13],
    ["VMA_AREA_MEMFD", 1 << 14],
    ["VMA_AREA_SHSTK", 1 << 15],
    ["VMA_AREA_UPROBES", 1 << 17],
    ["VMA_UNSUPP", 2 ** 31],
  ],
  "rfile.flags": [
    ["O_WRONLY", 0o1],
    ["O_RDWR", 0o2],
    ["O_CREAT", 0o100],
    ["O_EXCL", 0o200],
    ["O_NOCTTY", 0o400],
    ["O_TRUNC", 0o1000],
    ["O_APPEND", 0o2000],
    ["O_NONBLOCK", 0o4000],
    ["O_DSYNC", 0o10000],
    ["FASYNC", 0o20000],
    ["O_DIRECT", 0o40000],
    ["O_LARGEFILE", 0o100000],
    ["O_DIRECTORY", 0o200000],
    ["O_NOFOLLOW", 0o400000],
    ["O_NOATIME", 0o1000000],
    ["O_CLOEXEC", 0o2000000],
  ],
  "pmap.flags": [["PE_PARENT", 1], ["PE_LAZY", 2], ["PE_PRESENT", 4]],
  "seals.flags": [
    ["F_SEAL_SEAL", 0x1],
    ["F_SEAL_SHRINK", 0x2],
    ["F_SEAL_GROW", 0x4],
    ["F_SEAL_WRITE", 0x8],
    ["F_SEAL_FUTURE_WRITE", 0x10],
  ],
};

export function hasFlagTable(name: string): boolean {
  return name in FLAG_TABLES;
}

/** "PROT_READ | PROT_WRITE", unknown bits appended as hex; "" for 0. */
export function flagsToString(v: Int, table: string): string {
  const bits = FLAG_TABLES[table] ?? [];
  let n = BigInt(v);
  const names: string[] = [];
  let known = 0n;
  for (const [name, bit] of bits) {
    if ((n & BigInt(bit)) !== 0n) names.push(name);
    known |= BigInt(bit);
  }
  n &= ~known;
  if (n !== 0n) names.push(toHex(n));
  return names.join(" | ");
}

/** Inverse of flagsToString; each part is a flag name or an integer literal. */
export function flagsFromString(text: string, table: string): bigint | undefined {
  if (text === "") return 0n;
  const bits = new Map(FLAG_TABLES[table] ?? []);
  let v = 0n;
  for (const part of text.split("|").map((p) => p.trim())) {
    const bit = bits.get(part);
    const n = bit === undefined ? parseIntLiteral(part) : BigInt(bit);
    if (n === undefined) return undefined;
    v += n;
  }
  return v;
}

// ---- value names for fields marked (criu).dict; the table is picked by the field's name.

const DICTS: Record<string, Record<string, Record<number, string>>> = {
  gen: { task_state: { 1: "Alive", 3: "Zombie", 6: "Stopped" } },
  sk: {
    family: { 1: "UNIX", 2: "INET", 10: "INET6", 16: "NETLINK", 17: "PACKET" },
    type: { 1: "STREAM", 2: "DGRAM", 3: "RAW", 5: "SEQPACKET", 10: "PACKET" },
    state: {
      1: "ESTABLISHED",
      2: "SYN_SENT",
      3: "SYN_RECV",
      4: "FIN_WAIT1",
      5: "FIN_WAIT2",
      6: "TIME_WAIT",
      7: "CLOSE",
      8: "CLOSE_WAIT",
      9: "LAST_ACK",
      10: "LISTEN",
    },
    proto: { 0: "IP", 6: "TCP", 17: "UDP", 136: "UDPLITE" },
  },
};

export function dictName(dict: string, field: string, v: number): string | undefined {
  return DICTS[dict]?.[field]?.[v];
}

export function dictValue(dict: string, field: string, name: string): number | undefined {
  const table = DICTS[dict]?.[field] ?? {};
  for (const [k, n] of Object.entries(table)) if (n === name) return Number(k);
  return undefined;
}

// ---- IP addresses stored as u32 words in network byte order (one word for IPv4, four for IPv6).

function wordBytes(w: number): number[] {
  return [w & 0xff, (w >>> 8) & 0xff, (w >>> 16) & 0xff, w >>> 24];
}

/** The address the words hold, or undefined for a word count that is neither 1 nor 4. */
export function ipToString(words: readonly number[]): string | undefined {
  if (words.length === 1) return wordBytes(words[0] as number).join(".");
  if (words.length !== 4) return undefined;
  const bytes = words.flatMap(wordBytes);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] as number) * 256 + (bytes[i + 1] as number));
  // RFC 5952: the first longest run of two or more zero groups becomes "::".
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hexes = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hexes.join(":");
  return `${hexes.slice(0, best).join(":")}::${hexes.slice(best + bestLen).join(":")}`;
}

function bytesToWords(bytes: readonly number[]): number[] {
  const words: number[] = [];
  for (let i = 0; i < bytes.length; i += 4) {
    words.push(
      ((bytes[i] as number) | (bytes[i + 1] as number) << 8 | (bytes[i + 2] as number) << 16 |
        (bytes[i + 3] as number) << 24) >>> 0,
    );
  }
  return words;
}

function parseIPv4(text: string): number[] | undefined {
  const parts = text.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return undefined;
  return parts.map(Number);
}

/** Words for an IPv4 or IPv6 address in text form, or undefined if it is neither. */
export function ipFromString(text: string): number[] | undefined {
  const v4 = parseIPv4(text);
  if (v4 !== undefined) return bytesToWords(v4);
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (s: string): number[] | undefined => {
    if (s === "") return [];
    const out: number[] = [];
    const parts = s.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i] as string;
      if (i === parts.length - 1 && p.includes(".")) {
        const b = parseIPv4(p);
        if (b === undefined) return undefined;
        out.push((b[0] as number) * 256 + (b[1] as number), (b[2] as number) * 256 + (b[3] as number));
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groupsOf(halves[0] as string);
  const tail = halves.length === 2 ? groupsOf(halves[1] as string) : [];
  if (head === undefined || tail === undefined) return undefined;
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return undefined;
  const groups = [...head, ...new Array<number>(fill).fill(0), ...tail];
  return bytesToWords(groups.flatMap((g) => [g >> 8, g & 0xff]));
}
