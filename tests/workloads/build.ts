/**
 * Builds the test workloads: every `NAME.c` here (except the shared lib.c) becomes `bin/NAME`,
 * linked with lib.c, and every `NAME.sh` is installed as `bin/NAME.sh`. A target is rebuilt only
 * when it is missing or older than one of its sources (its own file, lib.c, lib.h or this module).
 * Binaries are dynamic and linked against glibc as usual, so that restores exercise shared
 * libraries. Each target is written to a temporary name and renamed, so concurrent builds from
 * parallel test processes never see or leave a half-written file.
 *
 * As a script: `deno run -A tests/workloads/build.ts` builds and prints the bin directory.
 */

const SRC_DIR = new URL(".", import.meta.url).pathname.replace(/\/$/, "");
const BIN_DIR = `${SRC_DIR}/bin`;
const CFLAGS = ["-O1", "-g", "-Wall", "-Werror"];
const SHARED = ["lib.c", "lib.h"];
const SELF = new URL(import.meta.url).pathname;

/** Modification time in ms, or null when the file does not exist. */
function mtime(path: string): number | null {
  try {
    return Deno.statSync(path).mtime?.getTime() ?? 0;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

function isStale(target: string, sources: readonly string[]): boolean {
  const built = mtime(target);
  if (built === null) return true;
  return sources.some((s) => (mtime(s) ?? Infinity) > built);
}

function tempName(target: string): string {
  return `${target}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
}

async function compile(name: string): Promise<void> {
  const target = `${BIN_DIR}/${name}`;
  const sources = [`${SRC_DIR}/${name}.c`, ...SHARED.map((s) => `${SRC_DIR}/${s}`), SELF];
  if (!isStale(target, sources)) return;
  const tmp = tempName(target);
  const out = await new Deno.Command("gcc", {
    args: [...CFLAGS, "-o", tmp, `${SRC_DIR}/${name}.c`, `${SRC_DIR}/lib.c`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    try {
      Deno.removeSync(tmp);
    } catch {
      // gcc wrote nothing
    }
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    throw new Error(`Compiling workload ${name}.c failed (gcc exited ${out.code}):\n${text}`);
  }
  Deno.renameSync(tmp, target);
}

function install(script: string): void {
  const target = `${BIN_DIR}/${script}`;
  const source = `${SRC_DIR}/${script}`;
  if (!isStale(target, [source])) return;
  const tmp = tempName(target);
  Deno.copyFileSync(source, tmp);
  Deno.chmodSync(tmp, 0o755);
  Deno.renameSync(tmp, target);
}

/** Compiles what is out of date and returns the directory holding the workload programs. */
export async function buildWorkloads(): Promise<string> {
  Deno.mkdirSync(BIN_DIR, { recursive: true });
  const programs: string[] = [];
  for (const entry of Deno.readDirSync(SRC_DIR)) {
    if (!entry.isFile) continue;
    if (entry.name.endsWith(".c") && entry.name !== "lib.c") programs.push(entry.name.slice(0, -2));
    if (entry.name.endsWith(".sh")) install(entry.name);
  }
  const failures: string[] = [];
  for (const r of await Promise.allSettled(programs.map(compile))) {
    if (r.status === "rejected") {
      failures.push(r.reason instanceof Error ? r.reason.message : String(r.reason));
    }
  }
  if (failures.length > 0) throw new Error(failures.join("\n"));
  return BIN_DIR;
}

if (import.meta.main) {
  console.log(await buildWorkloads());
}
