/**
 * The sockets sock_diag lists for a dump, asked of the kernel once per network namespace and kind
 * (unix, netlink, packet): a tree of many tasks in one namespace costs one netlink exchange.
 */
import { SockDiag } from "../../ffi/sock_diag.ts";
import type { FileTable } from "./files.ts";

/**
 * The sockets of `kind` in the network namespace of `pid`, by inode. `list` asks an open
 * sock_diag socket (inside that namespace) for them; its answer is kept in the dump's file table.
 */
export function socketsInNetnsOf<T extends { ino: number }>(
  table: FileTable,
  kind: string,
  pid: number,
  list: (diag: SockDiag) => T[],
): Map<number, T> {
  const byNetns = table.stateOf(`sock-diag-${kind}`, () => new Map<number, Map<number, T>>());
  const netns = Deno.statSync(`/proc/${pid}/ns/net`).ino ?? 0;
  let sockets = byNetns.get(netns);
  if (!sockets) {
    const diag = SockDiag.open(pid);
    try {
      sockets = new Map(list(diag).map((s) => [s.ino, s]));
    } finally {
      diag.close();
    }
    byNetns.set(netns, sockets);
  }
  return sockets;
}
