/**
 * tun/tap devices: CRIU's TunLinkEntry (flags, owner, group, virtio-net header size, send
 * buffer). A device a process of the tree holds open (through a tun file, `tunfile.ts`) is read
 * through a copy of that file; a persistent one that nobody holds by attaching to it for a moment
 * (`ffi/tun.ts`). On restore the device is made again at its index through /dev/net/tun, always
 * persistent at first: the first tun file attached to it again takes the persistence back when
 * the device had none, as CRIU does.
 */
import { create } from "@bufbuild/protobuf";
import type { net_device_entry } from "../images/gen/netdev_pb.ts";
import { type tun_link_entry, tun_link_entrySchema } from "../images/gen/tun_pb.ts";
import { makeTunDevice, readTunDevice, readTunFile, TUN_FLAGS, type TunDevice } from "../../ffi/tun.ts";
import { copyFdOf } from "../../ffi/process.ts";
import { closeFd } from "../../ffi/fd.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { DumpError, RestoreError } from "../errors.ts";
import type { Log } from "../log.ts";
import { refuse } from "./refusal.ts";
import { type IpLink, macText, runIp } from "./netdev_ip.ts";

/** The flags a tun device was made with, from what `ip -d` prints of it. */
function tunFlags(data: Record<string, unknown>): number {
  let flags = data.type === "tap" ? TUN_FLAGS.TAP : TUN_FLAGS.TUN;
  if (data.pi === false) flags |= TUN_FLAGS.NO_PI;
  if (data.vnet_hdr) flags |= TUN_FLAGS.VNET_HDR;
  if (data.multi_queue) flags |= TUN_FLAGS.MULTI_QUEUE;
  return flags;
}

/** A uid or gid as `ip` prints it: a name (looked up in `table`), a number, or absent (-1: none). */
function idOf(value: unknown, table: string): number {
  if (value === undefined) return -1;
  if (typeof value === "number") return value;
  const line = Deno.readTextFileSync(table).split("\n").find((l) => l.split(":")[0] === value);
  const id = Number(line?.split(":")[2]);
  if (!Number.isInteger(id)) throw new DumpError(`Cannot find ${String(value)} in ${table}`);
  return id;
}

/** A tun file of one of `pids` attached to device `name`, as "iff:" in its fdinfo names it. */
function holderOf(pids: readonly number[], name: string): { pid: number; fd: number } | undefined {
  for (const pid of pids) {
    let fds: Deno.DirEntry[];
    try {
      fds = [...Deno.readDirSync(`/proc/${pid}/fd`)];
    } catch {
      continue; // a zombie has no fds
    }
    for (const e of fds) {
      const fd = Number(e.name);
      try {
        if (Deno.readLinkSync(`/proc/${pid}/fd/${fd}`) !== "/dev/net/tun") continue;
        const info = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`);
        if (info.split("\n").some((l) => l === `iff:\t${name}`)) return { pid, fd };
      } catch {
        // closed meanwhile: the tree is frozen, so not one of its fds
      }
    }
  }
  return undefined;
}

/** What a tun file of the tree tells of its device (the file itself is saved by tunfile.ts). */
function readHeldDevice(holder: { pid: number; fd: number }, flags: number): TunDevice {
  const copy = copyFdOf(holder.pid, holder.fd);
  try {
    const file = readTunFile(copy);
    return { flags, vnetHdrSize: file?.vnetHdrSize ?? 0, sndbuf: file?.sndbuf ?? 0 };
  } finally {
    closeFd(copy);
  }
}

/**
 * The TunLinkEntry of device `link` of the namespace of `pid`; `tree` are the pids of the tree's
 * tasks, whose tun files may hold the device.
 */
export function tunEntry(pid: number, link: IpLink, tree: readonly number[]): tun_link_entry {
  const data = link.linkinfo?.info_data ?? {};
  const what = `network device ${link.ifname} (tun)`;
  const persist = data.persist === true;
  const holder = holderOf(tree, link.ifname);
  let device: TunDevice;
  if (holder) {
    device = readHeldDevice(holder, tunFlags(data) | (persist ? TUN_FLAGS.PERSIST : 0));
  } else {
    if (!persist) refuse(pid, what, "it is not persistent and no process of the tree holds it open");
    try {
      device = readTunDevice(`/proc/${pid}/ns/net`, link.ifname, tunFlags(data));
    } catch (e) {
      if (!isSyscallError(e)) throw e;
      const busy = e.code === "EBUSY";
      refuse(pid, what, busy ? "a process outside the tree holds it open" : e.message);
    }
  }
  return create(tun_link_entrySchema, {
    flags: device.flags,
    owner: idOf(data.user, "/etc/passwd"),
    group: idOf(data.group, "/etc/group"),
    vnethdr: device.vnetHdrSize,
    sndbuf: device.sndbuf,
  });
}

/** Makes tun device `d` in the namespace of `pid`, at its index; then its MTU and address. */
export function makeTun(pid: number, d: net_device_entry, log: Log): void {
  const t = d.tun!;
  try {
    makeTunDevice(`/proc/${pid}/ns/net`, d.name, d.ifindex, t.owner, t.group, {
      flags: t.flags,
      vnetHdrSize: t.vnethdr,
      sndbuf: t.sndbuf,
    });
  } catch (e) {
    if (!isSyscallError(e)) throw e;
    throw new RestoreError(`Cannot restore network device ${d.name} (TUN): ${e.message}`);
  }
  const args = ["link", "set", "dev", d.name, "mtu", `${d.mtu}`];
  const mac = macText(d.address);
  if (mac) args.push("address", mac);
  runIp(pid, d, args);
  log.info(`Made ${t.flags & TUN_FLAGS.TAP ? "tap" : "tun"} device ${d.name}`);
}
