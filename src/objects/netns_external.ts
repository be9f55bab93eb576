/**
 * An external network namespace: one the caller owns and hands in, which criu neither saves nor
 * makes. runc does this for a container whose network namespace is a path in its config (Podman's
 * bridge networks, a namespace from `ip netns`): at checkpoint it names the namespace with
 * `--external net[INODE]:extRootNetNS` (INODE: the namespace's nsfs inode, in decimal), and at
 * restore it hands in the new namespace it made (the network set up again by Podman) with
 * `--inherit-fd fd[N]:extRootNetNS`.
 *
 * As CRIU: the dump writes netns-ID.img holding only the key (`ext_key`), and no device, address,
 * route or firewall of the namespace; the restore puts the root into the namespace of the fd given
 * with that key (setns) where it would otherwise make a new one. Its sockets, TCP connections
 * included, are made there again.
 */
import { create } from "@bufbuild/protobuf";
import { netns_entrySchema } from "../images/gen/netdev_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import type { Agent } from "../agent.ts";
import type { Log } from "../log.ts";
import type { RunOptions } from "../options/options.ts";
import { CLONE, NR } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import { takeFromCriu } from "./files.ts";
import { inheritedFdFor } from "./inherited_fds.ts";

/** The key `--external net[INODE]:KEY` gives the network namespace of process `pid`, if any. */
export function externalNetnsKey(external: readonly string[], pid: number): string | undefined {
  const inode = Deno.statSync(`/proc/${pid}/ns/net`).ino;
  const prefix = `net[${inode}]:`;
  return external.find((e) => e.startsWith(prefix))?.slice(prefix.length);
}

/** Saves namespace `nsId` as external: its key, nothing of what it holds. */
export function saveExternalNetns(dir: ImageDir, nsId: number, key: string): void {
  dir.write(KINDS.NETNS, nsId, [create(netns_entrySchema, { extKey: key })]);
}

/**
 * criu's fd standing for the external namespace `key` (--inherit-fd); refused before any process
 * exists when the caller gave none.
 */
export function externalNetnsFd(options: RunOptions, key: string): number {
  const fd = inheritedFdFor(options, key);
  if (fd === undefined) {
    throw new RestoreError(
      `The checkpoint's network namespace is external (key ${key}): give the namespace to restore into with --inherit-fd fd[N]:${key} (CRIU: Unable to find an external netns: ${key})`,
    );
  }
  return fd;
}

/** Moves `agent` (the task the root is cloned from, or the root) into the namespace of criu's `fd`. */
export function enterExternalNetns(agent: Agent, fd: number, key: string, log: Log): void {
  const theirs = takeFromCriu({ agent }, fd);
  try {
    const r = agent.attempt("setns(net)", NR.setns, theirs, CLONE.NEWNET);
    if (typeof r !== "bigint") {
      throw new RestoreError(
        `Cannot enter the external network namespace ${key} (inherit fd ${fd}): ${r.message}`,
        r.errno,
      );
    }
  } finally {
    agent.call("close", NR.close, theirs);
  }
  log.info(`The root enters the external network namespace ${key} (inherit fd ${fd})`);
}
