/**
 * The tmpfs archives of a mount namespace (tmpfs-dev-DEV.tar.gz.img: gzip'd tar, made by Debian's
 * tar with CRIU's flags), many at once. A container holds dozens of tmpfs mounts, and spawned one by
 * one from criu each tar, and the gzip that `tar --gzip` starts, cost a process start and waited for
 * the previous one: most of the time of a dump or restore of such a tree. Here one shell runs the
 * tars side by side, and criu itself compresses and decompresses the small archives (zlib), so a
 * tmpfs costs one short tar process. A large tmpfs still goes through `tar --gzip`, so that no
 * archive is ever held whole in memory.
 *
 * The tmpfs of a tree in a user namespace of its own (an id-mapped container's /dev) is archived
 * and filled by a tar in that namespace, as root there (`nsenter --user`), as CRIU does: the
 * archive holds the owners as the tree sees them (0, not 100000), and only such a tar may create
 * files in a tmpfs that namespace owns (criu's root is no id of it: EOVERFLOW). What that root may
 * not reach (criu's files, directories of criu's only, another task's /proc/PID/fd) the shell,
 * criu's, opens for it: tar reads and writes its archive on stdin and stdout, and starts in the
 * tmpfs as its working directory (`--directory .`).
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

/** A tar to run: its arguments, the files the shell gives it as stdin and stdout, where it starts. */
interface TarRun {
  argv: string[];
  stdin?: string;
  stdout?: string;
  directory?: string;
}

/**
 * Runs each tar command from one shell, PARALLEL at a time, inside the user namespace `userNs`
 * (a /proc/PID/ns/user path) when one is given; for each, undefined when it exited 0, else what it
 * printed on stderr (or its status).
 */
function runAll(commands: readonly TarRun[], userNs?: string): TarOutcome[] {
  if (commands.length === 0) return [];
  const scratch = Deno.makeTempDirSync({ prefix: "criu-ts-tar-" });
  const inNs = userNs === undefined ? [] : ["nsenter", `--user=${userNs}`, "--"];
  try {
    const lines = [
      `run() { i=$1; in=$2; out=$3; dir=$4; shift 4; (cd "$dir" && exec "$@") 2>${
        quote(scratch)
      }/$i.err <"$in" >"$out"; echo "$i $?"; }`,
    ];
    commands.forEach((c, i) => {
      const io = [c.stdin ?? "/dev/null", c.stdout ?? "/dev/null", c.directory ?? "/"];
      lines.push(`run ${i} ${[...io, ...inNs, ...c.argv].map(quote).join(" ")} &`);
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

/**
 * Archives each directory (a tmpfs, as the tree sees it) into its image, from inside the user
 * namespace `userNs` when given.
 */
export function archiveTmpfs(
  jobs: readonly { directory: string; image: string }[],
  userNs?: string,
): TarOutcome[] {
  const scratch = Deno.makeTempDirSync({ prefix: "criu-ts-tmpfs-" });
  try {
    const plain = (i: number) => `${scratch}/${i}.tar`;
    const outcomes = runAll(
      jobs.map((j, i) => ({
        argv: ["tar", ...TAR_CREATE, "--file", "-", "--directory", ".", "."],
        stdout: plain(i),
        directory: j.directory,
      })),
      userNs,
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
      large.map((i) => ({
        argv: ["tar", ...TAR_CREATE, "--gzip", "--file", "-", "--directory", ".", "."],
        stdout: jobs[i]!.image,
        directory: jobs[i]!.directory,
      })),
      userNs,
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
 * Extracts each image into its directory (a new tmpfs, as the restored tree sees it), from inside
 * the user namespace `userNs` when given.
 */
export function extractTmpfs(
  jobs: readonly { image: string; directory: string }[],
  userNs?: string,
): TarOutcome[] {
  if (jobs.length === 0) return [];
  const scratch = Deno.makeTempDirSync({ prefix: "criu-ts-tmpfs-" });
  try {
    const early: TarOutcome[] = [];
    const commands = jobs.map((j, i): TarRun => {
      const plain = `${scratch}/${i}.tar`;
      try {
        if (decompress(j.image, plain)) {
          return {
            argv: ["tar", ...TAR_EXTRACT, "--file", "-", "--directory", "."],
            stdin: plain,
            directory: j.directory,
          };
        }
      } catch (e) {
        early[i] = (e as Error).message;
        return { argv: ["false"] };
      }
      return {
        argv: ["tar", ...TAR_EXTRACT, "--gzip", "--file", "-", "--directory", "."],
        stdin: j.image,
        directory: j.directory,
      };
    });
    const outcomes = runAll(commands, userNs);
    return outcomes.map((o, i) => early[i] ?? o);
  } finally {
    Deno.removeSync(scratch, { recursive: true });
  }
}
