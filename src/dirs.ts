/** Directories a command is told to use (images, work dir): checked before anything is done. */

/**
 * Why `path` cannot serve as a directory we work in ("it does not exist", "it is not a
 * directory", ...), or undefined when it can. Commands check their directories with it before
 * they touch a process, so that a mistyped path costs nothing.
 */
function directoryProblem(path: string): string | undefined {
  try {
    if (!Deno.statSync(path).isDirectory) return "it is not a directory";
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "it does not exist";
    if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
    if (e instanceof Deno.errors.NotADirectory) return "a part of the path is not a directory";
    return e instanceof Error ? e.message : String(e);
  }
  return undefined;
}

/**
 * What to tell the user when the `what` ("images directory", "work directory") at `path` cannot
 * be used: "Cannot open the images directory /x: it does not exist". Undefined when it can.
 */
export function unusableDirectory(what: string, path: string): string | undefined {
  const problem = directoryProblem(path);
  return problem === undefined ? undefined : `Cannot open the ${what} ${path}: ${problem}`;
}
