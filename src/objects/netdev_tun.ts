/**
 * tun/tap devices that no process holds (persistent ones): CRIU's TunLinkEntry (flags, owner,
 * group, virtio-net header size, send buffer), read by attaching to the device for a moment
 * (`ffi/tun.ts`), and the device made again at its index through /dev/net/tun. A device a process
 * holds open is refused: the tun files of tasks are not saved yet.
 */
import { create } from "@bufbuild/protobuf";
import type { net_device_entry } from "../images/gen/netdev_pb.ts";
import { type tun_link_entry, tun_link_entrySchema } from "../images/gen/tun_pb.ts";
import { makeTunDevice, readTunDevice, TUN_FLAGS } from "../../ffi/tun.ts";
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

export function tunEntry(pid: number, link: IpLink): tun_link_entry {
  const data = link.linkinfo?.info_data ?? {};
  const what = `network device ${link.ifname} (tun)`;
  if (!data.persist) refuse(pid, what, "it is not persistent: tun files of tasks are not saved yet");
  let device;
  try {
    device = readTunDevice(`/proc/${pid}/ns/net`, link.ifname, tunFlags(data));
  } catch (e) {
    if (!isSyscallError(e)) throw e;
    const busy = e.code === "EBUSY";
    refuse(pid, what, busy ? "a process holds it open: tun files of tasks are not saved yet" : e.message);
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
