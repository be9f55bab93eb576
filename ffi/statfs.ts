/** Which filesystem a path lives on: statfs(2)'s f_type, the first long of `struct statfs` (120 bytes). */
import { addressOf, callBig, cstr, libc } from "./libc.ts";
import { NR } from "./syscalls.ts";

const STATFS_SIZE = 120;
export const FS_MAGIC = { MQUEUE: 0x19800202 } as const;

export function filesystemMagic(path: string): number {
  const buf = new BigInt64Array(STATFS_SIZE / 8);
  const name = cstr(path);
  callBig("statfs", libc.syscall(BigInt(NR.statfs), addressOf(name), addressOf(buf), 0n, 0n, 0n, 0n), path);
  return Number(buf[0]!);
}
