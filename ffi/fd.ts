/** Raw fds of our own process, for handing to children (Deno 2 does not expose its fd numbers). */
import { call, cstr, libc } from "./libc.ts";

export const OPEN = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  CREAT: 0o100,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  CLOEXEC: 0o2000000,
} as const;

export function openFd(path: string, flags: number, mode = 0o644): number {
  return call("open", libc.open(cstr(path), flags, mode), path);
}

export function closeFd(fd: number): void {
  libc.close(fd);
}
