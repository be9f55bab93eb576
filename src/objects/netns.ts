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
import { NR } from "../../ffi/syscalls.ts";
import { RestoreError, UnsupportedObjectError } from "../errors.ts";
import type { Agent } from "../agent.ts";

const LOOPBACK = "lo";
/** A new namespace's loopback device: index 1, MTU 65536, down. */
const LOOPBACK_IFINDEX = 1;
const DEFAULT_LOOPBACK_MTU = 65536;
const AF_INET = 2;
const SOCK_DGRAM = 2;

function netnsLink(pid: number): string {
  return Deno.readLinkSync(`/proc/${pid}/ns/net`);
}

/** True when `pid` runs in another network namespace than criu-ts. */
export function hasOwnNetns(pid: number): boolean {
  try {
    return netnsLink(pid) !== netnsLink(Deno.pid);
  } catch {
    return false;
  }
}

/**
 * Saves the network namespace of `rootPid`, which every task of `pids` must share. Throws
 * UnsupportedObjectError for what cannot be saved yet, before anything is written.
 */
export function dumpNetns(dir: ImageDir, rootPid: number, pids: readonly number[], nsId: number): void {
  const root = netnsLink(rootPid);
  for (const pid of pids) {
    if (netnsLink(pid) !== root) {
      throw new UnsupportedObjectError(
        pid,
        `network namespace ${netnsLink(pid)}`,
        `it differs from the root's (${root}); nested network namespaces are not supported yet`,
      );
    }
  }
  const others = deviceNames(rootPid).filter((n) => n !== LOOPBACK);
  if (others.length > 0) {
    throw new UnsupportedObjectError(
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

/** The devices of the saved namespace `nsId`; undefined when the tree had none of its own. */
export function readNetns(dir: ImageDir, nsId: number | undefined): net_device_entry[] | undefined {
  if (nsId === undefined || !dir.has(KINDS.NETNS, nsId)) return undefined;
  const devices = dir.readOptional<net_device_entry>(KINDS.NETDEV, nsId);
  for (const d of devices) {
    if (d.type !== nd_type.LOOPBACK) {
      throw new RestoreError(
        `Cannot restore network device ${d.name} (${nd_type[d.type] ?? d.type}) of netdev-${nsId}.img: ` +
          "only the loopback device can be restored yet",
      );
    }
  }
  return devices;
}

/**
 * Gives the loopback device of the new namespace its saved MTU and flags, from inside the root
 * task (a socket made there belongs to its namespace).
 */
export function restoreNetDevices(agent: Agent, devices: readonly net_device_entry[]): void {
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
    agent.raw(NR.close, sock);
  }
}
