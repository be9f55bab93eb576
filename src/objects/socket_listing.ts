/**
 * The sockets sock_diag lists for a dump, asked of the kernel once per network namespace and kind
 * (unix, netlink, packet): a tree of many tasks in one namespace costs one netlink exchange.
 */
import { SockDiag } from "../../ffi/sock_diag.ts";
import { socketNetnsFd } from "../../ffi/netdev.ts";
import { closeFd } from "../../ffi/fd.ts";
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
  const netns = Deno.statSync(`/proc/${pid}/ns/net`).ino ?? 0;
  return listedOnce(table, kind, netns, () => SockDiag.open(pid), list);
}

/**
 * The sockets of `kind` in the network namespace the socket at `sock` (criu's copy) belongs to,
 * by inode: a socket made in a namespace its holder has left since is listed only there.
 */
export function socketsInNetnsOfSocket<T extends { ino: number }>(
  table: FileTable,
  kind: string,
  sock: number,
  list: (diag: SockDiag) => T[],
): Map<number, T> {
  const nsFd = socketNetnsFd(sock);
  try {
    const netns = Deno.statSync(`/proc/self/fd/${nsFd}`).ino ?? 0;
    return listedOnce(table, kind, netns, () => SockDiag.openInNetns(nsFd), list);
  } finally {
    closeFd(nsFd);
  }
}

function listedOnce<T extends { ino: number }>(
  table: FileTable,
  kind: string,
  netns: number,
  open: () => SockDiag,
  list: (diag: SockDiag) => T[],
): Map<number, T> {
  const byNetns = table.stateOf(`sock-diag-${kind}`, () => new Map<number, Map<number, T>>());
  let sockets = byNetns.get(netns);
  if (!sockets) {
    const diag = open();
    try {
      sockets = new Map(list(diag).map((s) => [s.ino, s]));
    } finally {
      diag.close();
    }
    byNetns.set(netns, sockets);
  }
  return sockets;
}
