/**
 * posix_spawn through FFI. Deno.Command is not usable for tasks we trace: Deno reaps its own
 * children and would race our waitpid. Only the fds named in `fds` reach the child; every other fd
 * of ours is closed in it (addclosefrom_np), and its signal dispositions and mask start clean.
 */
import { cstr, cstrArray, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";

const POSIX_SPAWN_SETPGROUP = 0x02;
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSID = 0x80;

export interface SpawnOptions {
  /** Child fd number → our fd to put there. Unlisted fds are closed in the child. */
  fds?: Record<number, number>;
  env?: Record<string, string>;
  /** Start a new session (setsid) in the child. */
  setsid?: boolean;
  /** Put the child in process group `pgroup` (0: its own). */
  pgroup?: number;
}

function check(name: string, rc: number): void {
  if (rc !== 0) throw new SyscallError(name, rc);
}

export function spawn(path: string, argv: readonly string[], opts: SpawnOptions = {}): number {
  const actions = new Uint8Array(256); // posix_spawn_file_actions_t is 80 bytes in glibc
  const attr = new Uint8Array(512); // posix_spawnattr_t is 336 bytes
  check("posix_spawn_file_actions_init", libc.posix_spawn_file_actions_init(actions));
  check("posix_spawnattr_init", libc.posix_spawnattr_init(attr));
  try {
    const fds = Object.entries(opts.fds ?? {}).map(([child, ours]) => [Number(child), ours] as const);
    // Park every source far up first, so that one dup2 cannot clobber another's source.
    const park = 1000;
    fds.forEach(([, ours], i) =>
      check("adddup2", libc.posix_spawn_file_actions_adddup2(actions, ours, park + i))
    );
    fds.forEach(([child], i) =>
      check("adddup2", libc.posix_spawn_file_actions_adddup2(actions, park + i, child))
    );
    const firstFree = fds.length ? Math.max(...fds.map(([c]) => c)) + 1 : 0;
    for (let fd = 0; fd < firstFree; fd++) {
      if (!fds.some(([c]) => c === fd)) {
        check("addclose", libc.posix_spawn_file_actions_addclose(actions, fd));
      }
    }
    check("addclosefrom_np", libc.posix_spawn_file_actions_addclosefrom_np(actions, firstFree));
    const allSignals = new Uint8Array(128).fill(0xff);
    const noSignals = new Uint8Array(128);
    check("setsigdefault", libc.posix_spawnattr_setsigdefault(attr, allSignals));
    check("setsigmask", libc.posix_spawnattr_setsigmask(attr, noSignals));
    let flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
    if (opts.setsid) flags |= POSIX_SPAWN_SETSID;
    if (opts.pgroup !== undefined) {
      flags |= POSIX_SPAWN_SETPGROUP;
      check("setpgroup", libc.posix_spawnattr_setpgroup(attr, opts.pgroup));
    }
    check("posix_spawnattr_setflags", libc.posix_spawnattr_setflags(attr, flags));
    const args = cstrArray(argv);
    const env = cstrArray(Object.entries(opts.env ?? Deno.env.toObject()).map(([k, v]) => `${k}=${v}`));
    const pid = new Int32Array(1);
    const rc = libc.posix_spawn(
      new Uint8Array(pid.buffer),
      cstr(path),
      actions,
      attr,
      new Uint8Array(args.ptrs.buffer),
      new Uint8Array(env.ptrs.buffer),
    );
    if (rc !== 0) throw new SyscallError("posix_spawn", rc, path);
    return pid[0]!;
  } finally {
    libc.posix_spawn_file_actions_destroy(actions);
    libc.posix_spawnattr_destroy(attr);
  }
}
