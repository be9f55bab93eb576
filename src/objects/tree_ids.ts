/**
 * Owners as a tree in a user namespace of its own sees them. What criu reads from its own side (a
 * removed file's or a memfd's stat, /proc/sysvipc, a unix socket's file, a pty, a queue, the
 * loginuid, net.ipv4.ping_group_range) holds ids of criu's user namespace; CRIU writes them into
 * the images through the root's maps (its userns_uid and userns_gid), so a checkpoint of an
 * id-mapped container holds the container's ids (0, not 100000) and restores anywhere its maps
 * lead. Where criu sets an owner back itself (chown, IPC_SET from criu's thread), the image's ids
 * go back through the maps the other way (CRIU's host_uid). An id outside the maps becomes
 * INVALID_ID, as in CRIU; chown leaves an owner of -1 as it is.
 *
 * A tree whose root is in criu's user namespace (also one with user namespaces nested below the
 * root) keeps criu's ids: there is no translation (undefined).
 */
import type { uid_gid_extent, userns_entry } from "../images/gen/userns_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import { readMap } from "./userns.ts";

/** CRIU's INVALID_ID: an id that no map covers. */
export const INVALID_ID = 0xffffffff;

export interface TreeIds {
  /** An id read from criu's side, as the tree sees it (what the images hold). */
  uidInside(id: number): number;
  gidInside(id: number): number;
  /** An id of the images, as criu must set it from its side. */
  uidOutside(id: number): number;
  gidOutside(id: number): number;
}

/** `id` through the extents, from the side `from` names to the other one. */
function through(extents: readonly uid_gid_extent[], id: number, from: "inside" | "outside"): number {
  for (const e of extents) {
    const [start, other] = from === "outside" ? [e.lowerFirst, e.first] : [e.first, e.lowerFirst];
    if (id >= start && id - start < e.count) return other + (id - start);
  }
  return INVALID_ID;
}

export function treeIdsOfMaps(maps: Pick<userns_entry, "uidMap" | "gidMap">): TreeIds {
  return {
    uidInside: (id) => through(maps.uidMap, id, "outside"),
    gidInside: (id) => through(maps.gidMap, id, "outside"),
    uidOutside: (id) => through(maps.uidMap, id, "inside"),
    gidOutside: (id) => through(maps.gidMap, id, "inside"),
  };
}

/** At dump: the maps of the root's user namespace, when it is not criu's. */
export function treeIdsAtDump(rootPid: number): TreeIds | undefined {
  if (Deno.readLinkSync(`/proc/${rootPid}/ns/user`) === Deno.readLinkSync("/proc/self/ns/user")) {
    return undefined;
  }
  return treeIdsOfMaps({ uidMap: readMap(rootPid, "uid_map"), gidMap: readMap(rootPid, "gid_map") });
}

/** At restore: the maps the root's userns image holds (none: the root stays in criu's). */
export function treeIdsAtRestore(dir: ImageDir, rootUserNsId: number | undefined): TreeIds | undefined {
  if (rootUserNsId === undefined || !dir.has(KINDS.USERNS, rootUserNsId)) return undefined;
  const [maps] = dir.read<userns_entry>(KINDS.USERNS, rootUserNsId);
  return maps ? treeIdsOfMaps(maps) : undefined;
}

/** An owner read from criu's side, as the images hold it. */
export function ownerInside(
  ids: TreeIds | undefined,
  uid: number,
  gid: number,
): { uid: number; gid: number } {
  return ids ? { uid: ids.uidInside(uid), gid: ids.gidInside(gid) } : { uid, gid };
}

/** An owner of the images, as criu sets it from its side. */
export function ownerOutside(
  ids: TreeIds | undefined,
  uid: number,
  gid: number,
): { uid: number; gid: number } {
  return ids ? { uid: ids.uidOutside(uid), gid: ids.gidOutside(gid) } : { uid, gid };
}

/**
 * chown from criu's side of `path` (a /proc/PID/fd/N link reaches the file itself) to an owner of
 * the images; an id outside the maps is left as it is.
 */
export function chownAsSaved(path: string, ids: TreeIds | undefined, uid: number, gid: number): void {
  const owner = ownerOutside(ids, uid, gid);
  const keep = (id: number) => id === INVALID_ID ? null : id;
  Deno.chownSync(path, keep(owner.uid), keep(owner.gid));
}
