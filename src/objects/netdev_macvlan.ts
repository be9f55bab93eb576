/**
 * macvlan devices: CRIU's MacvlanLinkEntry (mode, flags). A macvlan's parent is outside the
 * namespace, so the restore makes it in criu's namespace on the parent that
 * `--external macvlan[NAME]:PARENT` names, straight into the restored namespace (where its index is
 * taken); without a parent it is refused, as CRIU does.
 */
import { create } from "@bufbuild/protobuf";
import type { net_device_entry } from "../images/gen/netdev_pb.ts";
import { type macvlan_link_entry, macvlan_link_entrySchema } from "../images/gen/macvlan_pb.ts";
import { RestoreError } from "../errors.ts";
import type { Log } from "../log.ts";
import { refuse } from "./refusal.ts";
import { commonArgs, type IpLink, runIp } from "./netdev_ip.ts";

/** MACVLAN_MODE_* by the name `ip` prints, and the MACVLAN_FLAG_* bits by theirs. */
const MODES: Record<string, number> = { private: 1, vepa: 2, bridge: 4, passthru: 8, source: 16 };
const FLAGS: Record<string, number> = { nopromisc: 1, nodst: 2 };

export function macvlanEntry(pid: number, link: IpLink): macvlan_link_entry {
  const data = link.linkinfo?.info_data ?? {};
  const mode = MODES[String(data.mode)];
  if (mode === undefined) {
    refuse(pid, `network device ${link.ifname} (macvlan)`, `its mode ${String(data.mode)} is not known`);
  }
  const flags = Object.entries(FLAGS).reduce((f, [name, bit]) => (data[name] ? f | bit : f), 0);
  return create(macvlan_link_entrySchema, { mode, flags });
}

/** Makes macvlan `d` of the namespace of `pid` on `parent`, a device of criu's namespace. */
export function makeMacvlan(pid: number, d: net_device_entry, parent: string | undefined, log: Log): void {
  if (parent === undefined) {
    throw new RestoreError(
      `Cannot restore network device ${d.name} (MACVLAN): a macvlan parent for ${d.name} is required ` +
        `(--external macvlan[${d.name}]:PARENT, PARENT a device of criu's namespace)`,
    );
  }
  const mode = Object.entries(MODES).find(([, m]) => m === d.macvlan!.mode)?.[0];
  if (mode === undefined) {
    throw new RestoreError(`Cannot restore macvlan ${d.name}: unknown mode ${d.macvlan!.mode}`);
  }
  const flags = Object.entries(FLAGS).filter(([, bit]) => (d.macvlan!.flags ?? 0) & bit);
  const made = ["link", "add", d.name, "link", parent, ...commonArgs(d), "netns", `/proc/${pid}/ns/net`];
  const kind = ["type", "macvlan", "mode", mode, ...flags.flatMap(([name]) => ["flag", name])];
  runIp(Deno.pid, d, [...made, ...kind]);
  log.info(`Made macvlan ${d.name} on ${parent}`);
}
