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
 * Runs each argv (a tar command) from one shell, PARALLEL at a time; for each, undefined when it
 * exited 0, else what it printed on stderr (or its status).
 */
function runAll(commands: readonly string[][]): TarOutcome[] {
  if (commands.length === 0) return [];
  const scratch = Deno.makeTempDirSync({ prefix: "criu-ts-tar-" });
  try {
    const lines = [
      `run() { i=$1; shift; "$@" 2>${quote(scratch)}/$i.err </dev/null >/dev/null; echo "$i $?"; }`,
    ];
    commands.forEach((argv, i) => {
      lines.push(`run ${i} ${argv.map(quote).join(" ")} &`);
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
    return commands.map((_, i) => {
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

/** Archives each directory (a tmpfs, as the tree sees it) into its image. */
export function archiveTmpfs(jobs: readonly { directory: string; image: string }[]): TarOutcome[] {
  const scratch = Deno.makeTempDirSync({ prefix: "criu-ts-tmpfs-" });
  try {
    const plain = (i: number) => `${scratch}/${i}.tar`;
    const outcomes = runAll(
      jobs.map((j, i) => ["tar", ...TAR_CREATE, "--file", plain(i), "--directory", j.directory, "."]),
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
    const again = runAll(large.map((i) => [
      "tar",
      ...TAR_CREATE,
      "--gzip",
      "--file",
      jobs[i]!.image,
      "--directory",
      jobs[i]!.directory,
      ".",
    ]));
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

/** Extracts each image into its directory (a new tmpfs, as the restored tree sees it). */
export function extractTmpfs(jobs: readonly { image: string; directory: string }[]): TarOutcome[] {
  if (jobs.length === 0) return [];
  const scratch = Deno.makeTempDirSync({ prefix: "criu-ts-tmpfs-" });
  try {
    const early: TarOutcome[] = [];
    const commands = jobs.map((j, i) => {
      const plain = `${scratch}/${i}.tar`;
      try {
        if (decompress(j.image, plain)) {
          return ["tar", ...TAR_EXTRACT, "--file", plain, "--directory", j.directory];
        }
      } catch (e) {
        early[i] = (e as Error).message;
        return ["false"];
      }
      return ["tar", ...TAR_EXTRACT, "--gzip", "--file", j.image, "--directory", j.directory];
    });
    const outcomes = runAll(commands);
    return outcomes.map((o, i) => early[i] ?? o);
  } finally {
    Deno.removeSync(scratch, { recursive: true });
  }
}
