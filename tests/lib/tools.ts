/**
 * The programs of this machine the tests drive, checked before use: a missing one is a clear
 * failure naming the Debian package `scripts/setup.sh` installs it from, never a bare ENOENT from
 * Deno.Command, and a program that can live anywhere (Node) is looked for where the machine has it.
 */

function isExecutable(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

function missing(what: string, pkg: string): Error {
  return new Error(
    `No ${what} on this machine: Debian's ${pkg} package has it (bash scripts/setup.sh installs it)`,
  );
}

/** `path`, the one program the tests mean (a Debian package's), once it is known to be there. */
export function installed(path: string, pkg: string): string {
  if (!isExecutable(path)) throw missing(path, pkg);
  return path;
}

/** Where `name` is in PATH; throws naming `pkg` when it is in none of its directories. */
export function inPath(name: string, pkg: string): string {
  const path = findInPath(name);
  if (path === undefined) throw missing(`${name} in PATH`, pkg);
  return path;
}

/** Debian's crit (package criu): the independent reader of our images, not criu-ts's own crit. */
export function debianCrit(): string {
  return installed("/usr/bin/crit", "criu");
}

/** An image as Debian's crit decodes it (JSON): fails the test, with crit's words, if crit cannot. */
export function critDecode(path: string): { entries: Record<string, unknown>[] } {
  const out = new Deno.Command(debianCrit(), { args: ["decode", "-i", path] }).outputSync();
  if (!out.success) throw new Error(`crit decode ${path}: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** The Python that Debian's pycriu (package criu) is installed for. */
export function python3(): string {
  return installed("/usr/bin/python3", "python3");
}

/** Node, wherever this machine has it (the README's commands need Node and npm). */
export function nodeBin(): string {
  return inPath("node", "nodejs");
}

/** Where `name` is in PATH, or undefined. */
export function findInPath(name: string): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== "");
  return dirs.map((d) => `${d}/${name}`).find(isExecutable);
}
