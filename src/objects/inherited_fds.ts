/**
 * `--inherit-fd fd[N]:NAME` (RPC `inherit_fd`, key and fd): the caller of a restore hands in its own
 * fd N to stand for the dumped file CRIU calls NAME, wherever the tree held it. runc passes a
 * container's new stdio pipes this way (`pipe:[INO]` of the dumped pipes); a file dumped as external
 * (`--external file[MNT_ID:INODE]`) can only come back this way.
 *
 * The names are CRIU's, made by each fd kind (`FdKind.inheritName`): `pipe:[INO]`, `socket:[INO]`,
 * `tty[RDEV:DEV]` (hex), a regular file's path without its leading slash, `file[MNT_ID:INODE]`
 * (hex) for an external file. A name matches exactly or not at all, as in CRIU.
 *
 * `debug[N]:MESSAGE` writes MESSAGE to fd N when the restore starts (a marker in the output stream
 * of the restored process), as CRIU does.
 */
import type { RunOptions } from "../options/options.ts";
import type { Log } from "../log.ts";
import { RestoreError } from "../errors.ts";
import { isOpenFd, writeFull } from "../../ffi/fd.ts";

/** The fd of criu's own that stands for the dumped file `name`, if the caller gave one. */
export function inheritedFdFor(opts: RunOptions, name: string): number | undefined {
  return opts.inheritFds.find((f) => !f.debug && f.resource === name)?.fd;
}

/** What `--inherit-fd` spells for criu's fd `fd` standing for `name`. */
export function inheritFdSpelling(fd: number, name: string): string {
  return `--inherit-fd fd[${fd}]:${name}`;
}

/**
 * At the start of a restore, before any process exists: every fd named by --inherit-fd must be
 * open in criu (CRIU fstat()s each one), and debug messages are written. Logs which file each fd
 * will stand for.
 */
export function prepareInheritedFds(opts: RunOptions, log: Log): void {
  for (const f of opts.inheritFds) {
    const spelled = `${f.debug ? "debug" : "fd"}[${f.fd}]:${f.resource}`;
    if (!isOpenFd(f.fd)) {
      throw new RestoreError(
        `Cannot use --inherit-fd ${spelled}: criu has no fd ${f.fd} open (the caller must pass it to criu)`,
      );
    }
    if (f.debug) {
      writeAll(f.fd, f.resource, spelled);
      continue;
    }
    log.info(`File ${f.resource} will be restored from inherit fd ${f.fd}`);
  }
}

/** CRIU writes a debug message at once and fails the restore when it cannot. */
function writeAll(fd: number, message: string, spelled: string): void {
  try {
    writeFull(fd, new TextEncoder().encode(message), `inherit fd ${fd}`);
  } catch (e) {
    throw new RestoreError(
      `Cannot write the debug message of --inherit-fd ${spelled}: ${(e as Error).message}`,
    );
  }
}
