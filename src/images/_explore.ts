/**
 * `crit x DIR ps|fds|mems|rss`: quick looks at a whole image directory, printed as crit prints
 * them. They work on the decoded JSON form, like crit, so they read old and new layouts alike
 * (ids in core-*.img or in ids-*.img, files in files.img or in the per-type images).
 */

import type { JsonObject, JsonValue } from "./_json_text.ts";
import { decodeImageFile } from "./image_json.ts";

export type Explorer = "ps" | "fds" | "mems" | "rss";
export const EXPLORERS: readonly Explorer[] = ["ps", "fds", "mems", "rss"];

/** Python's "%Nd" / "%-Ns" padding. */
const right = (v: unknown, n: number) => String(v).padStart(n);
const left = (v: unknown, n: number) => String(v).padEnd(n);
const hex8 = (v: bigint) => v.toString(16).padStart(8, "0");

class Dir {
  #cache = new Map<string, JsonObject[] | null>();
  constructor(readonly path: string) {}

  /** Entries of an image, or null if the file does not exist. */
  entries(name: string): JsonObject[] | null {
    if (!this.#cache.has(name)) {
      let found: JsonObject[] | null = null;
      try {
        found = decodeImageFile(`${this.path}/${name}`).entries;
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      this.#cache.set(name, found);
    }
    return this.#cache.get(name) ?? null;
  }

  need(name: string): JsonObject[] {
    const e = this.entries(name);
    if (e === null) throw new Deno.errors.NotFound(`${this.path}/${name} is missing`);
    return e;
  }

  first(name: string): JsonObject {
    const e = this.need(name)[0];
    if (e === undefined) throw new Deno.errors.NotFound(`${this.path}/${name} has no entries`);
    return e;
  }
}

function num(v: JsonValue | undefined): number {
  return typeof v === "bigint" ? Number(v) : typeof v === "number" ? v : 0;
}

function big(v: JsonValue | undefined): bigint {
  return typeof v === "bigint" ? v : typeof v === "number" ? BigInt(v) : 0n;
}

function obj(v: JsonValue | undefined): JsonObject {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? v : {};
}

/** A pid as crit finds it: the plain field, or the first level of the ns_ variant. */
function taskId(p: JsonObject, key: string): number {
  if (p[key] !== undefined) return num(p[key]);
  const ns = p[`ns_${key}`];
  return Array.isArray(ns) ? num(ns[0]) : 0;
}

/** Describes one open file for the fds and mems views. */
class Files {
  #cache = new Map<string, string>();
  constructor(private readonly dir: Dir) {}

  describe(type: string, id: number): string {
    const key = `${type}/${id}`;
    let s = this.#cache.get(key);
    if (s === undefined) {
      s = this.#lookup(type, id);
      this.#cache.set(key, s);
    }
    return s;
  }

  /** The per-type part of a file: from files.img, or from the older per-type image. */
  #find(id: number, field: string, image: string): JsonObject | undefined {
    const all = this.dir.entries("files.img");
    const f = all?.find((e) => num(e.id) === id);
    if (f !== undefined) return f[field] === undefined ? undefined : obj(f[field]);
    return (this.dir.entries(image) ?? []).find((e) => num(e.id) === id);
  }

  #lookup(type: string, id: number): string {
    switch (type) {
      case "REG": {
        const name = this.#find(id, "reg", "reg-files.img")?.name;
        return typeof name === "string" && name !== "" ? name : "unknown path";
      }
      case "PIPE": {
        const p = this.#find(id, "pipe", "pipes.img");
        return p === undefined ? "pipe[?]" : `pipe[${num(p.pipe_id)}]`;
      }
      case "UNIXSK": {
        const u = this.#find(id, "usk", "unixsk.img");
        if (u === undefined) return "unix[?]";
        const name = typeof u.name === "string" && u.name !== "" ? ` ${u.name}` : "";
        return `unix[${num(u.ino)} (${num(u.peer)})${name}]`;
      }
      default:
        return `${type}.${id}`;
    }
  }
}

function tasks(dir: Dir): JsonObject[] {
  return dir.need("pstree.img");
}

function explorePs(dir: Dir, out: string[]): void {
  interface Node {
    pid: number;
    ppid: number;
    p: JsonObject;
    comm: string;
    kids: Node[];
  }
  const nodes = new Map<number, Node>();
  for (const p of tasks(dir)) {
    const pid = taskId(p, "pid");
    const core = dir.first(`core-${pid}.img`);
    nodes.set(pid, { pid, ppid: num(p.ppid), p, comm: String(obj(core.tc).comm ?? ""), kids: [] });
  }
  let root: Node | undefined;
  for (const n of nodes.values()) {
    if (n.ppid === 0) root = n;
    else nodes.get(n.ppid)?.kids.push(n);
  }
  out.push(`${right("PID", 7)}${right("PGID", 7)}${right("SID", 7)}   COMM`);
  const show = (n: Node, depth: number): void => {
    out.push(
      `${right(n.pid, 7)}${right(taskId(n.p, "pgid"), 7)}${right(taskId(n.p, "sid"), 7)}   ` +
        `${" ".repeat(4 * depth)}${n.comm}`,
    );
    for (const k of n.kids) show(k, depth + 1);
  };
  if (root !== undefined) show(root, 0);
}

function filesId(dir: Dir, pid: number): number {
  const ids = dir.entries(`ids-${pid}.img`)?.[0] ?? obj(dir.first(`core-${pid}.img`).ids);
  return num(ids.files_id);
}

function exploreFds(dir: Dir, out: string[]): void {
  const files = new Files(dir);
  for (const p of tasks(dir)) {
    const pid = taskId(p, "pid");
    out.push(String(pid));
    for (const fd of dir.need(`fdinfo-${filesId(dir, pid)}.img`)) {
      out.push(`\t${right(num(fd.fd), 7)}: ${files.describe(String(fd.type), num(fd.id))}`);
    }
    const fs = dir.first(`fs-${pid}.img`);
    out.push(`\t${right("cwd", 7)}: ${files.describe("REG", num(fs.cwd_id))}`);
    out.push(`\t${right("root", 7)}: ${files.describe("REG", num(fs.root_id))}`);
  }
}

/** Short numbers for shared-memory ids, in order of first appearance. */
class ShortIds {
  #ids = new Map<bigint, number>();
  get(id: bigint): number {
    let n = this.#ids.get(id);
    if (n === undefined) {
      n = this.#ids.size + 1;
      this.#ids.set(id, n);
    }
    return n;
  }
}

// VMA_AREA_* status bits (see _convert.ts for the full table).
const REGULAR = 1, STACK = 1 << 1, VSYSCALL = 1 << 2, VDSO = 1 << 3;
const FILE_PRIVATE = 1 << 6, FILE_SHARED = 1 << 7, ANON_SHARED = 1 << 8, SYSVIPC = 1 << 10, SOCKET = 1 << 11;
const MAP_GROWSDOWN = 0x100;

function vmaName(v: JsonObject, files: Files, shm: ShortIds): string {
  const st = num(v.status);
  const shmid = big(v.shmid);
  let fn: string;
  if (st & SYSVIPC) fn = ` ips[${shm.get(shmid).toString(16)}]`;
  else if (st & ANON_SHARED) fn = ` shmem[${shm.get(shmid).toString(16)}]`;
  else if (st & SOCKET) fn = ` packet[${shm.get(shmid).toString(16)}]`;
  else if (st & (FILE_PRIVATE | FILE_SHARED)) {
    fn = ` ${files.describe("REG", Number(shmid))}`;
    if (big(v.pgoff) !== 0n) fn += ` + 0x${big(v.pgoff).toString(16)}`;
    if (st & FILE_SHARED) fn += " (s)";
  } else if (st & STACK) fn = " [stack]";
  else if (st & VSYSCALL) fn = " [vsyscall]";
  else if (st & VDSO) fn = " [vdso]";
  else if (num(v.flags) & MAP_GROWSDOWN) fn = " [stack?]";
  else fn = "";
  if (!(st & REGULAR)) fn += " *";
  return fn;
}

function exploreMems(dir: Dir, out: string[]): void {
  const files = new Files(dir);
  const shm = new ShortIds();
  for (const p of tasks(dir)) {
    const pid = taskId(p, "pid");
    const mm = dir.first(`mm-${pid}.img`);
    out.push(String(pid));
    out.push(`\t${left("exe", 36)}    ${files.describe("REG", num(mm.exe_file_id))}`);
    for (const vv of Array.isArray(mm.vmas) ? mm.vmas : []) {
      const v = obj(vv);
      const prot = num(v.prot);
      const rwx = (prot & 1 ? "r" : "-") + (prot & 2 ? "w" : "-") + (prot & 4 ? "x" : "-");
      const range = `${hex8(big(v.start))}-${hex8(big(v.end))}`;
      out.push(`\t${left(range, 36)}${rwx}${vmaName(v, files, shm)}`);
    }
  }
}

function exploreRss(dir: Dir, out: string[]): void {
  const files = new Files(dir);
  for (const p of tasks(dir)) {
    const pid = taskId(p, "pid");
    const mm = dir.first(`mm-${pid}.img`);
    const vmas = (Array.isArray(mm.vmas) ? mm.vmas : []).map(obj);
    const pms = dir.need(`pagemap-${pid}.img`).slice(1);
    out.push(String(pid));
    let vi = 0;
    let shown = -1;
    for (const pm of pms) {
      const vaddr = big(pm.vaddr);
      const nr = big(pm.nr_pages ?? pm.compat_nr_pages);
      const head = `\t${vaddr.toString(16)} / ${left(nr, 8)}`;
      while (vi < vmas.length && big(vmas[vi]?.end) <= vaddr) vi++;
      const end = vaddr + (nr << 12n);
      let desc = "";
      while (vi < vmas.length && big(vmas[vi]?.start) < end) {
        const v = vmas[vi] as JsonObject;
        if (vi === shown) {
          desc += " ~";
        } else {
          desc += ` ${hex8(big(v.start))} / ${left((big(v.end) - big(v.start)) >> 12n, 8)}`;
          if (num(v.status) & (FILE_PRIVATE | FILE_SHARED)) desc += ` ${files.describe("REG", num(v.shmid))}`;
          shown = vi;
        }
        desc += `\n\t${" ".repeat(23)}`;
        vi++;
      }
      vi = Math.max(vi - 1, 0);
      out.push(`${left(head, 24)}${desc}`);
    }
  }
}

/** The lines `crit x DIR what` prints. */
export function explore(path: string, what: Explorer): string[] {
  const dir = new Dir(path);
  const out: string[] = [];
  ({ ps: explorePs, fds: exploreFds, mems: exploreMems, rss: exploreRss })[what](dir, out);
  return out;
}
