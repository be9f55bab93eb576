/**
 * The tmpfs archives of a mount namespace (tmpfs-dev-DEV.tar.gz.img: gzip'd tar, made by Debian's
 * tar with CRIU's flags), many at once. A container holds dozens of tmpfs mounts, and spawned one by
 * one from criu each tar, and the gzip that `tar --gzip` starts, cost a process start and waited for
 * the previous one: most of the time of a dump or restore of such a tree. Here one shell runs the
 * tars side by side, and criu itself compresses and decompresses the small archives (zlib), so a
 * tmpfs costs one short tar process. A large tmpfs still goes through `tar --gzip`, so that no
 * archive is ever held whole in memory.
 */
import { gunzipSync, gzipSync } from "node:zlib";

/** CRIU's tar flags for a tmpfs archive (without the compression, chosen per archive). */
const TAR_CREATE = [
  "--create",
  "--no-unquote",
  "--no-wildcards",
  "--one-file-system",
  "--check-links",
  "--preserve-permissions",
  "--sparse",
  "--numeric-owner",
];
const TAR_EXTRACT = ["--extract", "--no-unquote", "--no-wildcards"];

/** Archives up to this size are compressed by criu; a larger one is made again by tar --gzip. */
const IN_MEMORY_MAX = 8 << 20;
/** An image up to this size is decompressed by criu, when it holds no more than IN_MEMORY_MAX. */
const IN_MEMORY_IMAGE_MAX = 1 << 20;

/** How many tar processes run at once. */
const PARALLEL = 4;

/** What a failed archive or extraction said; undefined when it worked. */
export type TarOutcome = string | undefined;

/** A word for the shell: single-quoted, with each single quote closed, escaped and reopened. */
function quote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * One tar run: in `directory` (its working directory, entered by criu's shell), reading its
 * archive from `input` or writing it to `output` (opened by criu's shell too).
 */
interface TarRun {
  argv: string[];
  directory: string;
  input?: string;
  output?: string;
}

/**
 * Runs each tar from one shell, PARALLEL at a time; for each, undefined when it exited 0, else
 * what it printed on stderr (or its status). With `userns` (a /proc/PID/ns/user of a user
 * namespace other than criu's), each tar runs as that namespace's root, as CRIU runs it: a tmpfs a
 * container's user namespace owns takes new files only from a creator whose ids that namespace
 * maps, and the archive's owners are the container's ids, as CRIU writes them. criu's shell opens
 * the archive and enters the directory first, so tar needs no right over criu's files.
 */
function runAll(runs: readonly TarRun[], userns?: string): TarOutcome[] {
  if (runs.length === 0) return [];
  const scratch = Deno.makeTempDirSync({ prefix: "criu-ts-tar-" });
  const enter = userns ? `nsenter --user=${quote(userns)} -- ` : "";
  try {
    const lines = [
      "run() {",
      "  i=$1 dir=$2 in=$3 out=$4; shift 4",
      `  ( cd "$dir" && exec "$@" <"$in" >"$out" ) 2>${quote(scratch)}/$i.err`,
      '  echo "$i $?"',
      "}",
    ];
    runs.forEach((r, i) => {
      const files = [r.directory, r.input ?? "/dev/null", r.output ?? "/dev/null"].map(quote).join(" ");
      lines.push(`run ${i} ${files} ${enter}${r.argv.map(quote).join(" ")} &`);
      if ((i + 1) % PARALLEL === 0) lines.push("wait");
    });
    lines.push("wait");
    const out = new Deno.Command("/bin/sh", {
      args: ["-c", lines.join("\n")],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    const status = new Map<number, number>();
    for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
      const m = /^(\d+) (\d+)$/.exec(line);
      if (m) status.set(Number(m[1]), Number(m[2]));
    }
    return runs.map((_, i) => {
      const rc = status.get(i);
      if (rc === 0) return undefined;
      let error = "";
      try {
        error = Deno.readTextFileSync(`${scratch}/${i}.err`).trim();
      } catch { /* the shell never ran it */ }
      if (rc === undefined) {
        return error || `the shell running tar failed: ${new TextDecoder().decode(out.stderr).trim()}`;
      }
      return error || `exit status ${rc}`;
    });
  } finally {
    Deno.removeSync(scratch, { recursive: true });
  }
}

/**
 * Archives each directory (a tmpfs, as the tree sees it) into its image; `userns` as for runAll.
 */
export function archiveTmpfs(
  jobs: readonly { directory: string; image: string }[],
  userns?: string,
): TarOutcome[] {
  const scratch = Deno.makeTempDirSync({ prefix: "criu-ts-tmpfs-" });
  try {
    const plain = (i: number) => `${scratch}/${i}.tar`;
    const create = (gzip: boolean) => ["tar", ...TAR_CREATE, ...(gzip ? ["--gzip"] : []), "--file", "-", "."];
    const outcomes = runAll(
      jobs.map((j, i) => ({ argv: create(false), directory: j.directory, output: plain(i) })),
      userns,
    );
    const large: number[] = [];
    jobs.forEach((j, i) => {
      if (outcomes[i] !== undefined) return;
      if (Deno.statSync(plain(i)).size > IN_MEMORY_MAX) {
        large.push(i);
      } else {
        Deno.writeFileSync(j.image, gzipSync(Deno.readFileSync(plain(i))));
      }
      Deno.removeSync(plain(i));
    });
    const again = runAll(
      large.map((i) => ({ argv: create(true), directory: jobs[i]!.directory, output: jobs[i]!.image })),
      userns,
    );
    large.forEach((i, k) => outcomes[i] = again[k]);
    return outcomes;
  } finally {
    Deno.removeSync(scratch, { recursive: true });
  }
}

/** The archive `image` as a plain tar at `plain`; false when it is too large to hold in memory. */
function decompress(image: string, plain: string): boolean {
  if (Deno.statSync(image).size > IN_MEMORY_IMAGE_MAX) return false;
  let data: Uint8Array;
  try {
    data = gunzipSync(Deno.readFileSync(image), { maxOutputLength: IN_MEMORY_MAX });
  } catch (e) {
    if (e instanceof RangeError) return false;
    throw new Error(`it is not a gzip'd archive (${(e as Error).message})`);
  }
  Deno.writeFileSync(plain, data);
  return true;
}

/**
 * Extracts each image into its directory (a new tmpfs, as the restored tree sees it); `userns` as
 * for runAll.
 */
export function extractTmpfs(
  jobs: readonly { image: string; directory: string }[],
  userns?: string,
): TarOutcome[] {
  if (jobs.length === 0) return [];
  const scratch = Deno.makeTempDirSync({ prefix: "criu-ts-tmpfs-" });
  try {
    const early: TarOutcome[] = [];
    const runs = jobs.map((j, i): TarRun => {
      const plain = `${scratch}/${i}.tar`;
      try {
        if (decompress(j.image, plain)) {
          return { argv: ["tar", ...TAR_EXTRACT, "--file", "-"], directory: j.directory, input: plain };
        }
      } catch (e) {
        early[i] = (e as Error).message;
        return { argv: ["false"], directory: "/" };
      }
      return {
        argv: ["tar", ...TAR_EXTRACT, "--gzip", "--file", "-"],
        directory: j.directory,
        input: j.image,
      };
    });
    const outcomes = runAll(runs, userns);
    return outcomes.map((o, i) => early[i] ?? o);
  } finally {
    Deno.removeSync(scratch, { recursive: true });
  }
}
