/**
 * Network namespaces. A tree that runs in a network namespace of its own (`unshare --net`, a
 * container) gets one again on restore, as CRIU does, and the network-lock / network-unlock
 * action scripts run around it.
 *
 * What is saved so far: the loopback device, its flags (up or down) and MTU, in netdev-ID.img, with
 * an empty netns-ID.img marking the namespace (ID is the namespace's id in the ids images). A
 * namespace with any other device (veth, tun, macvlan...) is refused by name; its sysctls,
 * addresses beyond the loopback's own, routes and firewall rules are not saved yet.
 * `--empty-ns net` makes the namespace and leaves it as the kernel creates it (loopback down), for
 * a setup-namespaces script to fill.
 */
import { create } from "@bufbuild/protobuf";
import {
  nd_type,
  type net_device_entry,
  net_device_entrySchema,
  netns_entrySchema,
} from "../images/gen/netdev_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import { deviceNames, deviceState, ifreq, IFREQ_SIZE, SIOC } from "../../ffi/netdev.ts";
import { CLONE, NR } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import { refuse } from "./refusal.ts";
import { registerNamespaceKind } from "./namespaces.ts";
import type { Agent } from "../agent.ts";

const LOOPBACK = "lo";
/** A new namespace's loopback device: index 1, MTU 65536, down. */
const LOOPBACK_IFINDEX = 1;
const DEFAULT_LOOPBACK_MTU = 65536;
const AF_INET = 2;
const SOCK_DGRAM = 2;

/** The devices of a saved namespace, as the restore reads them. */
function readDevices(dir: ImageDir, nsId: number | undefined): net_device_entry[] | undefined {
  if (nsId === undefined || !dir.has(KINDS.NETNS, nsId)) return undefined;
  const devices = dir.readOptional<net_device_entry>(KINDS.NETDEV, nsId);
  for (const d of devices) {
    // The new namespace's loopback is "lo"; the devices are found by name when they are set up.
    if (d.type === nd_type.LOOPBACK && d.name !== LOOPBACK) {
      throw new RestoreError(
        `Refusing the images: netdev-${nsId}.img has a loopback device named ${d.name}, expected ${LOOPBACK}`,
      );
    }
    if (d.type !== nd_type.LOOPBACK) {
      throw new RestoreError(
        `Cannot restore network device ${d.name} (${
          nd_type[d.type] ?? d.type
        }): only the loopback device can be restored yet`,
      );
    }
  }
  return devices;
}

/** Saves the devices of the root's namespace (netdev-ID.img, netns-ID.img), or refuses them. */
function saveDevices(dir: ImageDir, rootPid: number, root: string, nsId: number): void {
  const others = deviceNames(rootPid).filter((n) => n !== LOOPBACK);
  if (others.length > 0) {
    refuse(
      rootPid,
      `network namespace ${root} with device(s) ${others.join(", ")}`,
      "only a namespace holding the loopback device alone can be saved yet",
    );
  }
  const lo = deviceState(rootPid, LOOPBACK);
  dir.write(KINDS.NETDEV, nsId, [
    create(net_device_entrySchema, {
      type: nd_type.LOOPBACK,
      ifindex: LOOPBACK_IFINDEX,
      mtu: lo.mtu,
      flags: lo.flags,
      name: LOOPBACK,
    }),
  ]);
  dir.write(KINDS.NETNS, nsId, [create(netns_entrySchema, {})]);
}

registerNamespaceKind({
  name: "net",
  words: "network",
  cloneFlag: CLONE.NEWNET,
  check(tree, nsIds) {
    // Every live task shares the root's network namespace: nested ones are not saved yet.
    const root = nsIds.linksOf(tree.root.pid).get("net");
    for (const t of tree.tasks) {
      const theirs = nsIds.linksOf(t.pid).get("net");
      if (t.state === "zombie" || theirs === root) continue;
      refuse(
        t.pid,
        `network namespace ${theirs}`,
        `it differs from the root's (${root}); nested network namespaces are not supported yet`,
      );
    }
  },
  dump(ctx) {
    const rootPid = ctx.tree.root.pid;
    saveDevices(ctx.dir, rootPid, Deno.readLinkSync(`/proc/${rootPid}/ns/net`), ctx.id);
    // Only a tree in a namespace of its own gets its network locked, as in CRIU. A lock script
    // that fails may have locked half-way: the unlock runs on failure too.
    const unlock = () => {
      try {
        ctx.hooks.run("network-unlock", rootPid);
      } catch (e) {
        ctx.log.error(`network-unlock: ${(e as Error).message}`);
      }
    };
    try {
      ctx.hooks.run("network-lock", rootPid);
    } catch (e) {
      unlock();
      throw e;
    }
    return {
      release: (leaveRunning) => {
        if (leaveRunning) unlock();
      },
      undo: unlock,
    };
  },
  prepareRestore(ctx) {
    const devices = readDevices(ctx.dir, ctx.tasks[0]!.ids?.netNsId);
    const empty = ctx.empty.has("net");
    if (!devices && !empty) return undefined;
    return {
      fill: (root) => {
        if (devices && !empty) restoreNetDevices(root, devices);
      },
      afterRestore: (rootPid) => ctx.hooks.run("network-unlock", rootPid),
    };
  },
});

/**
 * Gives the loopback device of the new namespace its saved MTU and flags, from inside the root
 * task (a socket made there belongs to its namespace).
 */
function restoreNetDevices(agent: Agent, devices: readonly net_device_entry[]): void {
  agent.reset();
  const sock = Number(agent.call("socket(AF_INET)", NR.socket, AF_INET, SOCK_DGRAM, 0));
  try {
    for (const d of devices) {
      if (d.mtu !== DEFAULT_LOOPBACK_MTU) {
        agent.call(
          `ioctl(SIOCSIFMTU ${d.name})`,
          NR.ioctl,
          sock,
          SIOC.SIFMTU,
          agent.alloc(IFREQ_SIZE, ifreq(d.name, d.mtu)),
        );
      }
      // Only the flags one can set matter; the kernel keeps the state bits (RUNNING...) itself.
      const flags = d.flags & 0xffff;
      agent.call(
        `ioctl(SIOCSIFFLAGS ${d.name})`,
        NR.ioctl,
        sock,
        SIOC.SIFFLAGS,
        agent.alloc(IFREQ_SIZE, ifreq(d.name, flags)),
      );
    }
  } finally {
    agent.attempt("close(ioctl socket)", NR.close, sock); // best effort: what failed before matters more
  }
}
