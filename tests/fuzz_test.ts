/**
 * Damaged images. A checkpoint with a few bytes changed in one image file (never the raw pages)
 * must end in one of two ways: a clean refusal (exit 1, one error message naming the file, no
 * stack trace, no process left behind) or a restore that made what the images say. Nothing in
 * an image may reach an "Internal error", a hang, or a process left behind.
 *
 * Workloads of every kind are dumped once; each round then damages one image file of one of
 * them (bits flipped, bytes overwritten, a cut, bytes appended, an entry size changed, a magic
 * changed) and restores through the launcher. Two cheaper in-process fuzzers do the same to the
 * image reader and to the PREPARE stage (loadCheckpoint) for thousands of rounds.
 *
 * Every round has its own seed, printed with any failure: CRIU_TS_FUZZ_SEED=S CRIU_TS_FUZZ_ROUND=R
 * replays round R of seed S alone (in each fuzzer). The workloads are dumped afresh on every run,
 * so a replay makes the same damage to images that differ in their pids and paths;
 * CRIU_TS_FUZZ_KEEP=DIR keeps a copy of the damaged images of each failed restore round in DIR,
 * for an exact replay (`criu restore -D DIR/round-R -d`). CRIU_TS_FUZZ_ROUNDS,
 * CRIU_TS_FUZZ_PREPARE_ROUNDS and CRIU_TS_FUZZ_READER_ROUNDS set the number of rounds.
 */
import assert from "node:assert/strict";
import {
  CRIU,
  criuOk,
  descendants,
  exists,
  reap,
  reapZombies,
  sleep,
  tempDir,
  Workload,
} from "./lib/harness.ts";
import { readStatus } from "../ffi/proc.ts";
import { decodeImageBytes } from "../src/images/image_json.ts";
import { ImageReader, ImageWriter } from "../src/images/file.ts";
import { create, type Message } from "@bufbuild/protobuf";
import { pipe_data_entrySchema } from "../src/images/gen/pipe-data_pb.ts";
import { isImageFormatError } from "../src/images/errors.ts";
import { type ImageKind, kindByMagic, KINDS } from "../src/images/kinds.ts";
import type { fdinfo_entry, file_entry } from "../src/images/gen/fdinfo_pb.ts";
import type { core_entry } from "../src/images/gen/core_pb.ts";
import type { mm_entry } from "../src/images/gen/mm_pb.ts";
import type { pstree_entry } from "../src/images/gen/pstree_pb.ts";
import type { pipe_data_entry } from "../src/images/gen/pipe-data_pb.ts";
import { loadCheckpoint } from "../src/restore/images.ts";
import { RestoreError } from "../src/errors.ts";

const SEED = Number(Deno.env.get("CRIU_TS_FUZZ_SEED") ?? "20261203") >>> 0;
const ONLY_ROUND = Deno.env.get("CRIU_TS_FUZZ_ROUND");
const RESTORE_ROUNDS = Number(Deno.env.get("CRIU_TS_FUZZ_ROUNDS") ?? "300");
const READER_ROUNDS = Number(Deno.env.get("CRIU_TS_FUZZ_READER_ROUNDS") ?? "20000");
const PREPARE_ROUNDS = Number(Deno.env.get("CRIU_TS_FUZZ_PREPARE_ROUNDS") ?? "3000");
/** A restore of these workloads takes well under a second; a damaged one must not hang. */
const RESTORE_TIMEOUT_MS = 60_000;
const KEEP_FAILED = Deno.env.get("CRIU_TS_FUZZ_KEEP");

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
class Random {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    this.#s = (this.#s + 0x6d2b79f5) >>> 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }
  bytes(n: number): Uint8Array {
    return Uint8Array.from({ length: n }, () => this.below(256));
  }
}

/** Each round's own seed, so that one round can be replayed alone. */
function roundSeed(fuzzer: number, round: number): number {
  return (SEED ^ Math.imul(fuzzer + 1, 0x85ebca6b) ^ Math.imul(round + 1, 0x9e3779b9)) >>> 0;
}

function rounds(count: number): number[] {
  if (ONLY_ROUND !== undefined) return [Number(ONLY_ROUND)];
  return Array.from({ length: count }, (_, i) => i);
}

function replayHint(round: number): string {
  return `CRIU_TS_FUZZ_SEED=${SEED} CRIU_TS_FUZZ_ROUND=${round}`;
}

// ---------------------------------------------------------------------------------------------
// Damage

/** Offsets of the u32 size of every entry in an intact image (payloads skipped). */
function sizeFieldOffsets(bytes: Uint8Array, name: string): number[] {
  const r = ImageReader.fromBytes(bytes, name);
  const out: number[] = [];
  try {
    for (;;) {
      const at = r.offset;
      const e = r.readEntry();
      if (e === null) break;
      out.push(at);
      if (r.kind === KINDS.PIPES_DATA) r.skip((e as pipe_data_entry).bytes);
    }
  } finally {
    r.close();
  }
  return out;
}

/** Magics an image starts with: 4 bytes for inventory.img, 8 for the others. */
function magicLength(bytes: Uint8Array): number {
  const first = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
  return kindByMagic(first) === KINDS.INVENTORY || first === 0x58313116 ? 4 : 8;
}

const INTERESTING_U32 = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff];

/** Damages a copy of `orig`; returns it and what was done. */
function damage(orig: Uint8Array, name: string, rnd: Random): { bytes: Uint8Array; how: string } {
  const bytes = orig.slice();
  const view = new DataView(bytes.buffer);
  const body = magicLength(orig);
  const anywhere = () => rnd.below(bytes.length);
  // Past the magics, where entries are: a change there is far more telling than a bad magic.
  const inEntries = () => bytes.length > body ? body + rnd.below(bytes.length - body) : anywhere();
  switch (rnd.below(9)) {
    case 0: {
      const n = 1 + rnd.below(4);
      const at: number[] = [];
      for (let i = 0; i < n; i++) {
        const o = inEntries();
        bytes[o] = bytes[o]! ^ (1 << rnd.below(8));
        at.push(o);
      }
      return { bytes, how: `bits flipped at ${at.join(", ")}` };
    }
    case 1: {
      const o = inEntries();
      const n = Math.min(1 + rnd.below(8), bytes.length - o);
      bytes.set(rnd.bytes(n), o);
      return { bytes, how: `${n} byte(s) overwritten at ${o}` };
    }
    case 2: {
      const o = inEntries();
      const v = rnd.pick([0, 0x01, 0x7f, 0x80, 0xff]);
      bytes[o] = v;
      return { bytes, how: `byte at ${o} set to 0x${v.toString(16)}` };
    }
    case 3: {
      const at = rnd.below(orig.length);
      return { bytes: orig.slice(0, at), how: `cut at ${at} of ${orig.length}` };
    }
    case 4: {
      const extra = rnd.bytes(1 + rnd.below(64));
      const out = new Uint8Array(orig.length + extra.length);
      out.set(orig);
      out.set(extra, orig.length);
      return { bytes: out, how: `${extra.length} random byte(s) appended` };
    }
    case 5:
    case 6: {
      const sizes = sizeFieldOffsets(orig, name);
      if (sizes.length === 0) return damage(orig, name, rnd);
      const at = rnd.pick(sizes);
      const old = view.getUint32(at, true);
      const v = rnd.below(2) ? rnd.pick(INTERESTING_U32) : (old + rnd.pick([-2, -1, 1, 2, 16])) >>> 0;
      view.setUint32(at, v, true);
      return { bytes, how: `entry size at ${at} changed from ${old} to ${v}` };
    }
    case 7: {
      const at = 4 * rnd.below(body / 4);
      const v = rnd.below(2) ? rnd.pick(INTERESTING_U32) : rnd.below(0x100000000);
      view.setUint32(at, v >>> 0, true);
      return { bytes, how: `magic at ${at} set to 0x${(v >>> 0).toString(16)}` };
    }
    default: {
      // A varint somewhere in the entries made long or huge.
      const o = inEntries();
      const n = Math.min(1 + rnd.below(10), bytes.length - o);
      bytes.fill(rnd.pick([0xff, 0x80]), o, o + n);
      return { bytes, how: `${n} byte(s) at ${o} set to varint continuation bytes` };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

interface Dumped {
  label: string;
  dir: string;
  /** Every pid and tid of the dumped tree. */
  pids: number[];
  /** Image files the fuzzers damage (all but the raw pages and logs), by kind. */
  files: Map<string, string[]>;
  /** The workload's own directory (its log and result, which restored fds refer to). */
  workload: Workload;
}

const WORKLOADS: { name: string; args?: string[]; settleMs?: number }[] = [
  { name: "counter" },
  { name: "threads", args: ["4"] },
  { name: "tree" },
  { name: "shared_files" },
  { name: "files" },
  { name: "mmap_zoo" },
  { name: "signals" },
  { name: "blocked", args: ["epoll", "eintr-ok", "ms=100000"] },
  { name: "netns" },
];

function tids(pid: number): number[] {
  try {
    return [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => Number(e.name));
  } catch {
    return [pid];
  }
}

/** The kind of an image file by its name: core-123.img → core, pagemap-shmem-5.img → pagemap-shmem. */
function kindOfName(file: string): string {
  return file.replace(/\.img$/, "").replace(/-\d+$/, "").replace(/-[0-9a-f]{8,}$/, "");
}

async function dumpWorkload(w: { name: string; args?: string[]; settleMs?: number }): Promise<Dumped> {
  const wl = await Workload.start(w.name, w.args ?? []);
  const dir = tempDir("criu-ts-fuzz-");
  try {
    if (w.settleMs) await sleep(w.settleMs);
    const pids = [wl.pid, ...descendants(wl.pid)].flatMap(tids);
    await criuOk(["dump", "-t", `${wl.pid}`, "-D", dir, "-o", "dump.log", "-v4"]);
    for (const p of pids) await reap(p);
    const files = new Map<string, string[]>();
    for (const e of Deno.readDirSync(dir)) {
      if (!e.name.endsWith(".img") && !e.name.startsWith("stats-")) continue;
      if (e.name.startsWith("pages-")) continue;
      // The network tools' own dumps (ip, iptables, nft) are not CRIU's format: netdev_test.ts damages them.
      if (/^(ifaddr|route6?|rule|ip6?tables|nftables)-\d+\.img$/.test(e.name)) continue;
      const kind = kindOfName(e.name);
      files.set(kind, [...(files.get(kind) ?? []), e.name].sort());
    }
    // The workload's own files (its log, its result) stay: restored fds refer to them.
    return { label: [w.name, ...(w.args ?? [])].join(" "), dir, pids, files, workload: wl };
  } catch (e) {
    await wl.kill();
    throw e;
  }
}

/** The images dir is copied file by file; the pages are linked (never written). */
function copyCheckpoint(from: string, to: string): void {
  Deno.mkdirSync(to, { recursive: true });
  for (const e of Deno.readDirSync(from)) {
    if (e.name.endsWith(".log") || e.name === "stats-restore") continue;
    if (e.name.startsWith("pages-")) Deno.linkSync(`${from}/${e.name}`, `${to}/${e.name}`);
    else Deno.copyFileSync(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

let dumpedOnce: Dumped[] | null = null;

async function checkpoints(): Promise<Dumped[]> {
  if (dumpedOnce) return dumpedOnce;
  const out: Dumped[] = [];
  for (const w of WORKLOADS) {
    out.push(await dumpWorkload(w));
  }
  dumpedOnce = out;
  return out;
}

/**
 * Picks a kind of image (evenly: pipes-data.img or netdev-N.img come from one workload each), a
 * workload whose checkpoint has one, and one file of that kind.
 */
function pickFile(all: readonly Dumped[], rnd: Random): { d: Dumped; file: string } {
  const kinds = [...new Set(all.flatMap((d) => [...d.files.keys()]))].sort();
  const kind = rnd.pick(kinds);
  const d = rnd.pick(all.filter((x) => x.files.has(kind)));
  return { d, file: rnd.pick(d.files.get(kind)!) };
}

// ---------------------------------------------------------------------------------------------
// The image reader, in process

Deno.test("the image reader refuses damaged images with a format error naming the file, nothing else", async () => {
  const all = await checkpoints();
  const failures: string[] = [];
  let refused = 0;
  for (const round of rounds(READER_ROUNDS)) {
    const rnd = new Random(roundSeed(0, round));
    const { d, file } = pickFile(all, rnd);
    const orig = Deno.readFileSync(`${d.dir}/${file}`);
    const { bytes, how } = damage(orig, file, rnd);
    try {
      decodeImageBytes(bytes, file);
    } catch (e) {
      if (isImageFormatError(e) && e.file === file) {
        refused++;
        continue;
      }
      failures.push(`${replayHint(round)}: ${d.label} ${file}, ${how}: ${(e as Error)?.stack ?? e}`);
    }
  }
  console.log(`reader: ${rounds(READER_ROUNDS).length} rounds, ${refused} refused`);
  assert.deepEqual(failures, []);
});

Deno.test("a blob size past the end of an image is refused without taking that much memory", () => {
  const w = ImageWriter.inMemory(KINDS.PIPES_DATA);
  w.writeEntry(create(pipe_data_entrySchema, { pipeId: 7, bytes: 0xf0000000 }));
  w.writeBlob(new Uint8Array(10));
  w.close();
  // The reader's memory for a blob is what it hands its source to fill: it must follow the bytes
  // that are there, not the size the image claims.
  const bytes = w.contents();
  let pos = 0;
  let largest = 0;
  const source = {
    read(into: Uint8Array): number {
      largest = Math.max(largest, into.length);
      const n = Math.min(into.length, bytes.length - pos);
      into.set(bytes.subarray(pos, pos + n));
      pos += n;
      return n;
    },
    close() {},
  };
  const r = ImageReader.fromSource(source, "pipes-data.img", KINDS.PIPES_DATA);
  try {
    const e = r.readEntry() as pipe_data_entry;
    assert.throws(
      () => r.readBlob(e.bytes),
      (err: unknown) =>
        isImageFormatError(err) && /Truncated data .* expected 4026531840 bytes, found 10/.test(err.message),
    );
  } finally {
    r.close();
  }
  assert.ok(largest <= 16 * 1024 * 1024, `the reader asked for ${largest} bytes at once`);
});

// ---------------------------------------------------------------------------------------------
// PREPARE, in process

/** Refusals of damaged images must name the damaged file. */
function namesFile(message: string, file: string): boolean {
  return message.includes(file);
}

Deno.test("PREPARE refuses damaged images with a named error naming the file", async () => {
  const all = await checkpoints();
  const work = tempDir("criu-ts-fuzz-prepare-");
  const copies = new Map<Dumped, string>();
  const failures: string[] = [];
  let refused = 0;
  try {
    for (const d of all) {
      const to = `${work}/${copies.size}`;
      copyCheckpoint(d.dir, to);
      copies.set(d, to);
    }
    for (const round of rounds(PREPARE_ROUNDS)) {
      const rnd = new Random(roundSeed(1, round));
      const { d, file } = pickFile(all, rnd);
      const dir = copies.get(d)!;
      const orig = Deno.readFileSync(`${d.dir}/${file}`);
      const { bytes, how } = damage(orig, file, rnd);
      Deno.writeFileSync(`${dir}/${file}`, bytes);
      try {
        loadCheckpoint(dir);
      } catch (e) {
        const named = e instanceof RestoreError || isImageFormatError(e);
        if (named && namesFile((e as Error).message, file)) {
          refused++;
        } else {
          failures.push(`${replayHint(round)}: ${d.label} ${file}, ${how}: ${(e as Error)?.stack ?? e}`);
        }
      } finally {
        Deno.writeFileSync(`${dir}/${file}`, orig);
      }
    }
  } finally {
    Deno.removeSync(work, { recursive: true });
  }
  console.log(`prepare: ${rounds(PREPARE_ROUNDS).length} rounds, ${refused} refused`);
  assert.deepEqual(failures, []);
});

// ---------------------------------------------------------------------------------------------
// Defects the fuzzers found, each made on purpose (PREPARE in process)

interface ImageRecord {
  entry: Message;
  blob?: Uint8Array;
}

/** Every entry of an image, with the data that follows it in pipes-data.img. */
function readRecords(path: string, kind: ImageKind): ImageRecord[] {
  const r = ImageReader.openPath(path, kind);
  const out: ImageRecord[] = [];
  try {
    for (let e = r.readEntry() as Message | null; e; e = r.readEntry() as Message | null) {
      out.push(
        kind === KINDS.PIPES_DATA
          ? { entry: e, blob: r.readBlob((e as pipe_data_entry).bytes) }
          : { entry: e },
      );
    }
  } finally {
    r.close();
  }
  return out;
}

/**
 * Copies the checkpoint of workload `label`, changes the records of one image with `edit`, and
 * returns PREPARE's refusal (or "loaded").
 */
async function prepareAfter(
  label: string,
  pick: (d: Dumped) => string,
  kind: ImageKind,
  edit: (records: ImageRecord[]) => void,
): Promise<string> {
  const d = (await checkpoints()).find((x) => x.label === label)!;
  const dir = tempDir("criu-ts-fuzz-case-");
  try {
    copyCheckpoint(d.dir, dir);
    const file = pick(d);
    const records = readRecords(`${dir}/${file}`, kind);
    edit(records);
    const w = ImageWriter.createPath(`${dir}/${file}`, kind);
    for (const r of records) {
      w.writeEntry(r.entry);
      if (r.blob) w.writeBlob(r.blob);
    }
    w.close();
    try {
      loadCheckpoint(dir);
      return "loaded";
    } catch (e) {
      assert.ok(e instanceof RestoreError, `not a RestoreError: ${(e as Error)?.stack}`);
      return e.message;
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

const fdinfoOf = (d: Dumped) => d.files.get("fdinfo")![0]!;
const coreOf = (d: Dumped) => `core-${d.pids[0]}.img`;

Deno.test("an fd of a file that files.img does not hold is refused naming both images", async () => {
  // Issue 15's "Internal error: files.img has no file with id 6".
  const said = await prepareAfter("shared_files", fdinfoOf, KINDS.FDINFO, (r) => {
    (r[0]!.entry as fdinfo_entry).id = 999;
  });
  assert.match(
    said,
    /^Refusing the images: fdinfo-\d+\.img refers to file 999 for fd \d+, which files\.img does not hold$/,
  );
});

Deno.test("pipe data beyond what the pipe holds is refused, not written until the restore hangs", async () => {
  const said = await prepareAfter("shared_files", () => "pipes-data.img", KINDS.PIPES_DATA, (r) => {
    const e = r[0]!.entry as pipe_data_entry;
    e.size = 65536;
    e.bytes = 70000;
    r[0]!.blob = new Uint8Array(70000);
  });
  assert.match(said, /pipes-data\.img has 70000 bytes queued in pipe \d+, more than its capacity of 65536/);
});

Deno.test("a queued SIGKILL is refused by name, not sent to the task half-way through the restore", async () => {
  const said = await prepareAfter("signals", coreOf, KINDS.CORE, (r) => {
    const info = (r[0]!.entry as core_entry).tc!.signalsS!.signals[0]!.siginfo;
    new DataView(info.buffer, info.byteOffset, 4).setInt32(0, 9, true);
  });
  assert.match(said, /core-\d+\.img has a queued signal 9, which cannot be queued again/);
});

Deno.test("a damaged file name is shown on one line, control characters escaped", async () => {
  const said = await prepareAfter("files", () => "files.img", KINDS.FILES, (r) => {
    const reg = r.map((x) => (x.entry as file_entry).reg).find((g) => g?.name.endsWith(".log"))!;
    reg.name = reg.name.replace(".log", "\n.log");
  });
  assert.match(said, /\\x0a\.log does not exist \(file \d+ of files\.img, fd \d+ in fdinfo-\d+\.img\)/);
  assert.ok(!said.includes("\n"));
});

Deno.test("mm fields PR_SET_MM_MAP would refuse are refused by name before anything is created", async () => {
  const said = await prepareAfter("counter", (d) => `mm-${d.pids[0]}.img`, KINDS.MM, (r) => {
    const mm = r[0]!.entry as mm_entry;
    mm.mmArgEnd = mm.mmArgStart - 1n;
  });
  assert.match(said, /mm-\d+\.img has arg_start 0x[0-9a-f]+ after arg_end/);
});

// ---------------------------------------------------------------------------------------------
// Whole restores through the launcher

interface Run {
  code: number | "timeout";
  stderr: string;
}

async function restoreWithTimeout(dir: string): Promise<Run> {
  const child = new Deno.Command(CRIU, {
    args: ["restore", "-D", dir, "-d", "-o", "restore.log", "-v4"],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, RESTORE_TIMEOUT_MS);
  try {
    const out = await child.output();
    return { code: timedOut ? "timeout" : out.code, stderr: new TextDecoder().decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Processes a restore made: our descendants (we are the subreaper of whatever it left), but for
 * those that were there before the rounds began (other tests' processes are not ours to kill).
 */
let preexisting = new Set<number>();
function madeByRestores(): number[] {
  return descendants(Deno.pid).filter((p) => !preexisting.has(p));
}

/** Processes a restore made that are still alive, i.e. not zombies. */
function liveDescendants(): number[] {
  return madeByRestores().filter(alive);
}

/** Kills and reaps every process the restore left, and waits until the dumped pids are free. */
async function killEverything(pids: readonly number[]): Promise<void> {
  for (const p of madeByRestores()) {
    try {
      Deno.kill(p, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
  for (const p of madeByRestores()) await reap(p);
  for (const p of pids) await reap(p);
  reapZombies();
}

/** What a restore that said it worked must have made: every task the pstree lists, untraced. */
function checkRestored(dir: string): string | null {
  let tree: pstree_entry[];
  const r = ImageReader.open(dir, KINDS.PSTREE);
  try {
    tree = r.readAll() as pstree_entry[];
  } finally {
    r.close();
  }
  if (tree[0]?.pid === 1) return null; // a PID namespace of its own: its pids are not ours to see
  for (const t of tree) {
    for (const tid of t.threads.length ? t.threads : [t.pid]) {
      if (tid === 0) continue; // a zombie's threads
      let status: Map<string, string>;
      try {
        status = readStatus(tid);
      } catch {
        // Zombies and group helpers end; their parents may reap them at once.
        continue;
      }
      if (status.get("TracerPid") !== "0") return `task ${tid} is still traced`;
    }
  }
  return null;
}

/**
 * A refusal because a dumped pid is in use by a process of someone else (a busy machine hands
 * out pids again while the rounds run): not the images' doing.
 */
function pidTakenMeanwhile(stderr: string, d: Dumped): boolean {
  const m = /PID (\d+) is already in use by process/.exec(stderr);
  const pid = Number(m?.[1]);
  return m !== null && d.pids.includes(pid) && !madeByRestores().includes(pid);
}

/** A refusal must be exactly one line "Error: ..." naming the file, without a stack. */
function checkRefusal(stderr: string, file: string): string | null {
  const lines = stderr.split("\n").filter((l) => l.startsWith("Error: "));
  if (lines.length !== 1) return `expected one error message, found ${lines.length}: ${stderr}`;
  if (stderr.includes("    at ") || stderr.includes("Internal error")) return `internal error: ${stderr}`;
  if (!namesFile(lines[0]!, file)) return `the message does not name ${file}: ${lines[0]}`;
  return null;
}

function alive(pid: number): boolean {
  try {
    return readStatus(pid).get("State")?.startsWith("Z") === false;
  } catch {
    return false;
  }
}

/**
 * Waits a little for what the restore killed to be gone; what is still alive then was left:
 * our descendants (we are the subreaper of whatever it made) and anything holding a dumped pid.
 */
async function leftBehind(pids: readonly number[]): Promise<number[]> {
  const end = Date.now() + 5000;
  for (;;) {
    reapZombies();
    const live = [...new Set([...liveDescendants(), ...pids.filter(alive)])];
    if (live.length === 0 || Date.now() > end) return live;
    await sleep(20);
  }
}

Deno.test("a restore of damaged images refuses cleanly or restores what they say", async () => {
  const all = await checkpoints();
  preexisting = new Set(descendants(Deno.pid));
  const work = tempDir("criu-ts-fuzz-restore-");
  const copies = new Map<Dumped, string>();
  const failures: string[] = [];
  const started = performance.now();
  let refused = 0;
  let restored = 0;
  let pidTaken = 0;
  const kinds = new Map<string, number>();
  try {
    for (const d of all) {
      const to = `${work}/${copies.size}`;
      copyCheckpoint(d.dir, to);
      copies.set(d, to);
    }
    for (const round of rounds(RESTORE_ROUNDS)) {
      const rnd = new Random(roundSeed(2, round));
      const { d, file } = pickFile(all, rnd);
      kinds.set(kindOfName(file), (kinds.get(kindOfName(file)) ?? 0) + 1);
      const dir = copies.get(d)!;
      const orig = Deno.readFileSync(`${d.dir}/${file}`);
      const { bytes, how } = damage(orig, file, rnd);
      Deno.writeFileSync(`${dir}/${file}`, bytes);
      const what = `${replayHint(round)}: ${d.label} ${file}, ${how}`;
      try {
        const run = await restoreWithTimeout(dir);
        if (run.code === 0) {
          restored++;
          const wrong = checkRestored(dir);
          if (wrong) failures.push(`${what}: restored, but ${wrong}`);
        } else if (run.code === 1 && pidTakenMeanwhile(run.stderr, d)) {
          pidTaken++; // the machine gave a dumped pid to another process: nothing to say about the images
        } else if (run.code === 1) {
          refused++;
          const wrong = checkRefusal(run.stderr, file);
          if (wrong) failures.push(`${what}: ${wrong}`);
          const left = await leftBehind(d.pids);
          if (left.length) failures.push(`${what}: refused, but left process(es) ${left.join(", ")} behind`);
        } else {
          failures.push(`${what}: criu ended with ${run.code}: ${run.stderr}`);
        }
      } finally {
        if (KEEP_FAILED && failures.at(-1)?.startsWith(what)) {
          copyCheckpoint(dir, `${KEEP_FAILED}/round-${round}`);
        }
        await killEverything(d.pids);
        Deno.writeFileSync(`${dir}/${file}`, orig);
      }
    }
  } finally {
    Deno.removeSync(work, { recursive: true });
  }
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  console.log(
    `restore: ${
      rounds(RESTORE_ROUNDS).length
    } rounds in ${secs} s, ${refused} refused, ${restored} restored` +
      (pidTaken ? `, ${pidTaken} not tried (a dumped pid was taken by another process meanwhile)` : ""),
  );
  console.log(
    `restore: images damaged, by kind: ${[...kinds].sort().map(([k, n]) => `${k} ${n}`).join(", ")}`,
  );
  assert.deepEqual(failures, []);
});

/** Removes the checkpoints and the workloads' directories (also when a filter skipped the test below). */
function removeCheckpoints(): void {
  for (const d of dumpedOnce ?? []) {
    if (exists(d.dir)) Deno.removeSync(d.dir, { recursive: true });
    if (exists(d.workload.dir)) d.workload.cleanup();
  }
  dumpedOnce = null;
}
globalThis.addEventListener("unload", removeCheckpoints);

Deno.test("the fuzzers' checkpoints are removed", () => {
  const dirs = (dumpedOnce ?? []).flatMap((d) => [d.dir, d.workload.dir]);
  removeCheckpoints();
  for (const dir of dirs) assert.ok(!exists(dir), `${dir} is left`);
});
