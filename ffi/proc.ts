/** Readers for /proc/PID files. Each returns plain data; nothing here holds a file open. */
import { addressOf, cstr, libc } from "./libc.ts";
import { NR } from "./syscalls.ts";

const O_RDONLY_CLOEXEC = 0o2000000;
/** One buffer for the small /proc files read per fd (thousands per task: Deno's readers cost 3x). */
let procBuf = new Uint8Array(4096);
const procText = new TextDecoder();

/** A small /proc file as text, or null when it is gone (the fd was closed meanwhile). */
function readProcText(path: string): string | null {
  const fd = libc.open(cstr(path), O_RDONLY_CLOEXEC, 0);
  if (fd < 0) return null;
  try {
    let len = 0;
    for (;;) {
      if (len === procBuf.length) {
        const bigger = new Uint8Array(procBuf.length * 2);
        bigger.set(procBuf);
        procBuf = bigger;
      }
      const n = Number(libc.read(fd, procBuf.subarray(len), BigInt(procBuf.length - len)));
      if (n < 0) return null;
      if (n === 0) return procText.decode(procBuf.subarray(0, len));
      len += n;
    }
  } finally {
    libc.close(fd);
  }
}

/** Where a /proc magic link leads, or null when it is gone. */
function readProcLink(path: string): string | null {
  const name = cstr(path);
  const n = Number(
    libc.syscall(
      BigInt(NR.readlink),
      addressOf(name),
      addressOf(procBuf),
      BigInt(procBuf.length),
      0n,
      0n,
      0n,
    ),
  );
  return n < 0 ? null : procText.decode(procBuf.subarray(0, n));
}

export interface MapsEntry {
  start: bigint;
  end: bigint;
  /** "rwxp" as printed by the kernel. */
  perms: string;
  offset: bigint;
  dev: string; // "fd:01"
  inode: number;
  path: string; // "" for anonymous, "[heap]", "/usr/lib/..."; " (deleted)" kept as printed
  /** Two-letter VmFlags from smaps ("gd", "sh", "dd", ...), when read from smaps. */
  vmFlags: string[];
  /** The size of the pages backing it in KiB (smaps KernelPageSize: 2048 for 2 MiB huge pages). */
  kernelPageKiB?: number;
}

const MAPS_LINE = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$/;

function parseMapsLine(line: string): MapsEntry {
  const m = MAPS_LINE.exec(line);
  if (!m) throw new Error(`Unexpected line in /proc maps: ${JSON.stringify(line)}`);
  return {
    start: BigInt("0x" + m[1]),
    end: BigInt("0x" + m[2]),
    perms: m[3]!,
    offset: BigInt("0x" + m[4]),
    dev: m[5]!,
    inode: Number(m[6]),
    path: m[7] ?? "",
    vmFlags: [],
  };
}

export function readMaps(pid: number): MapsEntry[] {
  return Deno.readTextFileSync(`/proc/${pid}/maps`).split("\n").filter((l) => l).map(parseMapsLine);
}

/** /proc/PID/smaps: maps entries with their VmFlags. */
export function readSmaps(pid: number): MapsEntry[] {
  const out: MapsEntry[] = [];
  for (const line of Deno.readTextFileSync(`/proc/${pid}/smaps`).split("\n")) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) out.push(parseMapsLine(line));
    else if (line.startsWith("VmFlags:")) out[out.length - 1]!.vmFlags = line.slice(8).trim().split(/\s+/);
    else if (line.startsWith("KernelPageSize:")) {
      out[out.length - 1]!.kernelPageKiB = parseInt(line.slice(15));
    }
  }
  return out;
}

/** /proc/PID/stat fields, 1-based as in proc(5); the comm field may contain spaces and parens. */
export function readStat(pid: number): { comm: string; state: string; field: (n: number) => bigint } {
  const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  const rest = text.slice(close + 2).trim().split(" ");
  return {
    comm: text.slice(open + 1, close),
    state: rest[0]!,
    // rest[0] is field 3
    field: (n: number) => BigInt(rest[n - 3] ?? "0"),
  };
}

/** /proc/PID/status as key → value text. */
export function readStatus(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of Deno.readTextFileSync(`/proc/${pid}/status`).split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return out;
}

export function readAuxv(pid: number): bigint[] {
  const bytes = Deno.readFileSync(`/proc/${pid}/auxv`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: bigint[] = [];
  for (let off = 0; off + 8 <= bytes.byteLength; off += 8) out.push(v.getBigUint64(off, true));
  return out;
}

/** Thread ids of a process. */
export function listThreads(pid: number): number[] {
  return [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => Number(e.name)).sort((a, b) => a - b);
}

/** Direct children of a thread, from /proc/PID/task/TID/children. */
export function listChildren(pid: number, tid = pid): number[] {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/task/${tid}/children`).trim().split(/\s+/).filter((s) => s)
      .map(Number);
  } catch {
    return [];
  }
}

/** Open fds of a process with their link targets and fdinfo. */
export interface FdEntry {
  fd: number;
  target: string;
  pos: bigint;
  flags: number;
  mntId: number;
  info: Map<string, string>;
}

export function listFds(pid: number): FdEntry[] {
  const out: FdEntry[] = [];
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    const fd = Number(e.name);
    const target = readProcLink(`/proc/${pid}/fd/${fd}`);
    const infoText = target === null ? null : readProcText(`/proc/${pid}/fdinfo/${fd}`);
    if (target === null || infoText === null) continue; // closed meanwhile (only while the task runs)
    const info = new Map<string, string>();
    for (const line of infoText.split("\n")) {
      const i = line.indexOf(":");
      if (i > 0) info.set(line.slice(0, i), line.slice(i + 1).trim());
    }
    out.push({
      fd,
      target,
      pos: BigInt(info.get("pos") ?? "0"),
      flags: parseInt(info.get("flags") ?? "0", 8),
      mntId: Number(info.get("mnt_id") ?? "0"),
      info,
    });
  }
  return out.sort((a, b) => a.fd - b.fd);
}

/** POSIX timers from /proc/PID/timers. */
export interface ProcTimer {
  id: number;
  signal: number;
  sigevValue: bigint;
  notify: string; // "signal", "thread", "none"
  /** The signal goes to one thread (SIGEV_THREAD_ID), `notifyTid`. */
  notifyThread: boolean;
  notifyTid: number;
  clockId: number;
}
export function readTimers(pid: number): ProcTimer[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/timers`);
  } catch {
    return [];
  }
  const out: ProcTimer[] = [];
  let cur: Partial<ProcTimer> = {};
  for (const line of text.split("\n")) {
    const [key, ...rest] = line.split(":");
    const value = rest.join(":").trim();
    if (key === "ID") {
      cur = { id: Number(value) };
      out.push(cur as ProcTimer);
    } else if (key === "signal") {
      const [sig, val] = value.split("/");
      cur.signal = Number(sig);
      cur.sigevValue = BigInt("0x" + (val ?? "0").replace(/^0x/, ""));
    } else if (key === "notify") {
      // "signal/pid.1234" or "signal/tid.1234"
      const [kind, target] = value.split("/");
      cur.notify = kind!;
      cur.notifyThread = (target ?? "").startsWith("tid");
      cur.notifyTid = Number((target ?? "").replace(/\D/g, "") || 0);
    } else if (key === "ClockID") {
      cur.clockId = Number(value);
    }
  }
  return out;
}

const RLIM_INFINITY = 0xffffffffffffffffn;

/** /proc/PID/limits, in resource order (RLIMIT_CPU = 0 ...): readable whoever owns the task. */
export function readLimits(pid: number): { cur: bigint; max: bigint }[] {
  const lines = Deno.readTextFileSync(`/proc/${pid}/limits`).split("\n").slice(1).filter((l) => l.trim());
  const value = (v: string) => (v === "unlimited" ? RLIM_INFINITY : BigInt(v));
  return lines.map((line) => {
    // "Max open files            1024                 4096                 files"
    const cols = line.slice(26).trim().split(/\s+/);
    return { cur: value(cols[0]!), max: value(cols[1]!) };
  });
}
