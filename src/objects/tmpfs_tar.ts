/**
 * Runs the tar commands of many tmpfs archives (one per tmpfs, as CRIU makes them) in one shell,
 * a few at a time. A container holds dozens of tmpfs mounts: spawned one by one from criu each tar
 * (and the gzip it starts) costs a process start from Deno and waits for the previous one, which
 * made most of the time of a dump or restore of such a tree. The shell forks cheaply and runs them
 * side by side; each job's exit status and error text still come back on their own.
 */

/** One tar run: the archive, the directory it reads or fills, and the members (create only). */
export interface TarJob {
  file: string;
  directory: string;
  members: string[];
}

export interface TarResult {
  ok: boolean;
  /** What tar printed on stderr, trimmed. */
  error: string;
}

/** How many tar processes run at once (each also starts a gzip; the machine may be small). */
const PARALLEL = 4;

/** A word for the shell: single-quoted, with each single quote closed, escaped and reopened. */
function quote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * Runs `tar FLAGS --file F --directory D MEMBERS...` for each job; the results are in the jobs'
 * order. Throws only when the shell itself cannot run.
 */
export function runTarJobs(flags: readonly string[], jobs: readonly TarJob[]): TarResult[] {
  if (jobs.length === 0) return [];
  const scratch = Deno.makeTempDirSync({ prefix: "criu-ts-tar-" });
  try {
    const lines = [
      `run() { i=$1; shift; "$@" 2>${quote(scratch)}/$i.err </dev/null >/dev/null; echo "$i $?"; }`,
    ];
    jobs.forEach((j, i) => {
      const argv = ["tar", ...flags, "--file", j.file, "--directory", j.directory, ...j.members];
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
    return jobs.map((_, i) => {
      const rc = status.get(i);
      if (rc === 0) return { ok: true, error: "" };
      let error = "";
      try {
        error = Deno.readTextFileSync(`${scratch}/${i}.err`).trim();
      } catch { /* the shell never ran it */ }
      if (rc === undefined) {
        error ||= `the shell running tar failed: ${new TextDecoder().decode(out.stderr).trim()}`;
      }
      return { ok: false, error: error || `exit status ${rc}` };
    });
  } finally {
    Deno.removeSync(scratch, { recursive: true });
  }
}
