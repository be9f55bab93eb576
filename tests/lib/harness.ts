/**
 * Test harness: runs the workloads of tests/workloads (zdtm-style: set up, wait for SIGTERM,
 * verify, write PASS/FAIL), and criu-ts itself through its launcher, as a user would.
 *
 * The test process makes itself a child subreaper, so a tree restored with -d is reparented to it
 * and can be reaped: no test leaves a zombie behind.
 */
import { spawn } from "../../ffi/spawn.ts";
import * as pt from "../../ffi/ptrace.ts";
import { libc } from "../../ffi/libc.ts";
import { closeFd, OPEN, openFd } from "../../ffi/fd.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { listChildren, readStat } from "../../ffi/proc.ts";
import { buildWorkloads } from "../workloads/build.ts";

export const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
export const CRIU = `${ROOT}/scripts/criu`;

const PR_SET_CHILD_SUBREAPER = 36;
libc.prctl(PR_SET_CHILD_SUBREAPER, 1n, 0n, 0n, 0n);

let binDir: string | null = null;
export async function workloadBin(name: string): Promise<string> {
  binDir ??= await buildWorkloads();
  return `${binDir}/${name}`;
}

export interface CriuRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `criu ARGS` through the launcher; stdin is /dev/null. */
export async function criu(
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<CriuRun> {
  const out = await new Deno.Command(CRIU, { args, stdin: "null", stdout: "piped", stderr: "piped", ...opts })
    .output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Like criu() but fails the test with criu's output when it does not exit 0. */
export async function criuOk(
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<CriuRun> {
  const r = await criu(args, opts);
  if (r.code !== 0) throw new Error(`criu ${args.join(" ")} exited ${r.code}\n${r.stderr}${r.stdout}`);
  return r;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Polls `cond` every 10 ms until it holds; throws after `ms`. */
export async function waitFor(what: string, cond: () => boolean, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`Timed out waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * Reaps our zombie children: processes of a dumped tree that were killed and handed to us, the
 * subreaper, when their parent died. Only zombies are waited for, so Deno's own children are safe.
 */
export function reapZombies(): void {
  for (const pid of listChildren(Deno.pid)) {
    try {
      if (readStat(pid).state === "Z") pt.wait(pid, pt.WNOHANG);
    } catch {
      // gone meanwhile
    }
  }
}

/** Reaps `pid` if it is our child (or adopted by us); otherwise waits until it is gone. */
export async function reap(pid: number, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    reapZombies();
    try {
      const st = pt.wait(pid, pt.WNOHANG);
      if (st && st.kind !== "stopped") return;
    } catch (e) {
      if (!isSyscallError(e, "ECHILD")) throw e;
      if (!exists(`/proc/${pid}`)) return;
    }
    if (Date.now() > end) throw new Error(`Process ${pid} did not end`);
    await sleep(10);
  }
}

/** Every descendant of `pid` (children of all its threads, recursively). */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number) => {
    let tids: string[] = [];
    try {
      tids = [...Deno.readDirSync(`/proc/${p}/task`)].map((e) => e.name);
    } catch {
      return;
    }
    for (const tid of tids) {
      for (const c of listChildren(p, Number(tid))) {
        out.push(c);
        walk(c);
      }
    }
  };
  walk(pid);
  return out;
}

/** SIGKILLs `pid` and all its descendants, and reaps them (test cleanup). */
export async function killTree(pid: number): Promise<void> {
  if (!pid) return;
  const all = [pid, ...descendants(pid)];
  for (const p of all) {
    try {
      Deno.kill(p, "SIGKILL");
    } catch {
      // gone already
    }
  }
  for (const p of all) await reap(p);
}

export function tempDir(prefix = "criu-ts-test-"): string {
  return Deno.makeTempDirSync({ prefix });
}

/** A running workload: `bin/NAME RESULT_FILE args...` in a session of its own. */
export class Workload {
  private constructor(
    readonly name: string,
    readonly pid: number,
    readonly dir: string,
    readonly result: string,
  ) {}

  /** `stdin`/`stdout`: fds of ours the workload gets instead of /dev/null and its log. */
  static async start(
    name: string,
    args: string[] = [],
    opts: { dir?: string; stdin?: number; stdout?: number } = {},
  ): Promise<Workload> {
    const dir = opts.dir ?? tempDir();
    const result = `${dir}/${name}.result`;
    const log = openFd(`${dir}/${name}.log`, OPEN.WRONLY | OPEN.CREAT | OPEN.APPEND | OPEN.CLOEXEC);
    const nul = openFd("/dev/null", OPEN.RDONLY | OPEN.CLOEXEC);
    const bin = name.endsWith(".sh") ? "/bin/sh" : await workloadBin(name);
    const argv = name.endsWith(".sh")
      ? ["sh", `${ROOT}/tests/workloads/${name}`, result, ...args]
      : [name, result, ...args];
    let pid: number;
    try {
      pid = spawn(bin, argv, { fds: { 0: opts.stdin ?? nul, 1: opts.stdout ?? log, 2: log }, setsid: true });
    } finally {
      closeFd(log);
      closeFd(nul);
    }
    const w = new Workload(name, pid, dir, result);
    await waitFor(`${name} to be ready`, () => exists(`${result}.ready`) || exists(result));
    if (exists(result) && !exists(`${result}.ready`)) {
      throw new Error(`${name} failed during setup: ${w.output()}`);
    }
    return w;
  }

  output(): string {
    const read = (p: string) => (exists(p) ? Deno.readTextFileSync(p) : "");
    return `${read(this.result)}${read(`${this.dir}/${this.name}.log`)}`;
  }

  /** Sends SIGTERM and returns what the workload reported ("PASS" or "FAIL: ..."). */
  async finish(): Promise<string> {
    Deno.kill(this.pid, "SIGTERM");
    await waitFor(
      `${this.name} to report`,
      () => exists(this.result) && Deno.readTextFileSync(this.result).endsWith("\n"),
      30000,
    );
    await reap(this.pid);
    return Deno.readTextFileSync(this.result).trim();
  }

  /** Kills the workload and its descendants whatever their state (test cleanup). */
  kill(): Promise<void> {
    return killTree(this.pid);
  }

  cleanup(): void {
    Deno.removeSync(this.dir, { recursive: true });
  }
}

/** Open fds of this process, to check a test leaks none. */
export function openFds(): Set<number> {
  return new Set([...Deno.readDirSync("/proc/self/fd")].map((e) => Number(e.name)));
}

/**
 * The first whole line a child prints, without its newline. A pipe hands over what was written so
 * far, so one read() may end mid-line under load: this reads on until the newline comes. The
 * stream is released for other readers afterwards; a stream that ends first is an error.
 */
export async function readLine(stream: ReadableStream<Uint8Array>): Promise<string> {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let text = "";
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`The child's output ended before a whole line: "${text}"`);
      text += dec.decode(value, { stream: true });
    }
  } finally {
    reader.releaseLock();
  }
  return text.slice(0, text.indexOf("\n"));
}

/** The numbers on the first line a child prints, each checked to be one. */
export async function readNumbers(stream: ReadableStream<Uint8Array>, count: number): Promise<number[]> {
  const line = await readLine(stream);
  const numbers = line.trim().split(/\s+/).map(Number);
  if (numbers.length !== count || numbers.some((n) => !Number.isInteger(n))) {
    throw new Error(`Expected ${count} number(s) on the child's first line, found "${line}"`);
  }
  return numbers;
}
