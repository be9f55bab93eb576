/**
 * tun files: an open /dev/net/tun attached to a tun/tap device of the tree's network namespace, as
 * CRIU saves them: a TUNF entry in files.img (TunfileEntry: the device's name, whether its queue
 * is detached, the id of the namespace whose netdev-ID.img holds the device) beside a REG entry of
 * the same id for /dev/net/tun itself (its open flags). The device is saved with the namespace
 * (`netdev_tun.ts`, which reads what only a file attached to it can tell through the same file).
 *
 * On restore the namespace stage has made the device again, persistent; each task opens
 * /dev/net/tun in its own namespace and attaches to the device with its flags (TUN or TAP, NO_PI,
 * VNET_HDR, MULTI_QUEUE), detaches its queue again when it was detached, and drops the device's
 * persistence when it had none, so that it goes with its last file as before.
 *
 * As in CRIU, a tun file needs the tree in a network namespace of its own.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { reg_file_entrySchema } from "../images/gen/regfile_pb.ts";
import { tunfile_entrySchema } from "../images/gen/tun_pb.ts";
import type { net_device_entry } from "../images/gen/netdev_pb.ts";
import { KINDS } from "../images/kinds.ts";
import { compact } from "../compact.ts";
import { copyFdOf } from "../../ffi/process.ts";
import { closeFd } from "../../ffi/fd.ts";
import { readTunFile, tunAttachIoctls } from "../../ffi/tun.ts";
import { IFREQ_SIZE } from "../../ffi/netdev.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import { emptyFown, type FdKind, type FilesSession, registerFdKind } from "./files.ts";
import { refuse } from "./refusal.ts";
import { RestoreError } from "../errors.ts";

const TUN_PATH = "/dev/net/tun";
/** Flags that only matter at open time. */
const OPEN_ONLY = O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY | O.CLOEXEC;

/** At restore: the flags of every tun device of the saved namespaces, by namespace id and name. */
interface TunDevices {
  flags: Map<string, number>;
}

function devicesOf(session: FilesSession): TunDevices {
  return session.table.stateOf("tunfile", () => ({ flags: new Map<string, number>() }));
}

/** The id of the one saved network namespace (nested ones are refused), from its netdev image. */
function savedNetnsId(session: FilesSession): number | undefined {
  const ids = [...Deno.readDirSync(session.dir.path)]
    .map((e) => /^netdev-(\d+)\.img$/.exec(e.name)?.[1])
    .filter((id): id is string => id !== undefined);
  return ids.length === 1 ? Number(ids[0]) : undefined;
}

export const tunfileKind: FdKind = {
  name: "tun file",
  type: fd_types.TUNF,
  detect(fd) {
    return fd.target === TUN_PATH;
  },
  dump(ctx, fd) {
    const what = `fd ${fd.fd} (tun file)`;
    if (Deno.readLinkSync(`/proc/${ctx.pid}/ns/net`) === Deno.readLinkSync("/proc/self/ns/net")) {
      refuse(ctx.pid, what, "a tun file is saved only in a network namespace of the tree's own, as in CRIU");
    }
    const copy = copyFdOf(ctx.pid, fd.fd);
    let attached;
    try {
      attached = readTunFile(copy);
    } finally {
      closeFd(copy);
    }
    const id = ctx.table.add(`fd:${ctx.pid}:${fd.fd}`, (id) =>
      create(file_entrySchema, {
        type: fd_types.TUNF,
        id,
        tunf: create(
          tunfile_entrySchema,
          compact({ id, netdev: attached?.name, detached: attached?.detached ? true : undefined }),
        ),
      }));
    ctx.table.addCompanion(create(file_entrySchema, {
      type: fd_types.REG,
      id,
      reg: create(reg_file_entrySchema, {
        id,
        flags: fd.flags & ~O.CLOEXEC,
        pos: 0n,
        fown: emptyFown(),
        name: TUN_PATH,
      }),
    }));
    ctx.log.info(
      `Tun file ${fd.fd} of ${ctx.pid}: ${attached ? `attached to ${attached.name}` : "not attached"}`,
    );
    return id;
  },
  finishDump(session) {
    // The namespace was saved before the files: its image names its id.
    const nsId = savedNetnsId(session);
    if (nsId === undefined) return;
    for (const e of session.table.entries) if (e.type === fd_types.TUNF && e.tunf) e.tunf.nsId = nsId;
  },
  loadImages(session) {
    const devices = devicesOf(session);
    for (const e of session.table.entries) {
      const t = e.tunf;
      if (e.type !== fd_types.TUNF || !t?.netdev) continue;
      const nsId = t.nsId ?? savedNetnsId(session);
      const known = nsId === undefined ? [] : session.dir.readOptional<net_device_entry>(KINDS.NETDEV, nsId);
      const device = known.find((d) => d.name === t.netdev && d.tun);
      if (!device) {
        throw new RestoreError(
          `Refusing the images: tun file ${e.id} is attached to ${t.netdev}, which no netdev image holds as a tun device`,
        );
      }
      devices.flags.set(t.netdev, device.tun!.flags);
    }
  },
  open(ctx, entry) {
    const t = entry.tunf;
    if (!t) throw new RestoreError(`File ${entry.id} has no tun file data`);
    const flags = ctx.table.companionOf(entry.id)?.reg?.flags ?? O.RDWR;
    const agent = ctx.agent;
    agent.reset();
    const fd = agent.call(`open(${TUN_PATH})`, NR.open, agent.string(TUN_PATH), flags & ~OPEN_ONLY, 0);
    if (!t.netdev) return Number(fd);
    const deviceFlags = devicesOf(ctx.session).flags.get(t.netdev)!;
    for (const ioctl of tunAttachIoctls(t.netdev, deviceFlags, t.detached === true)) {
      agent.reset();
      const arg = ioctl.ifreq ? agent.alloc(IFREQ_SIZE, ioctl.ifreq) : ioctl.value ?? 0;
      try {
        agent.call(ioctl.name, NR.ioctl, fd, ioctl.request, arg);
      } catch (e) {
        if (!isSyscallError(e)) throw e;
        throw new RestoreError(`Cannot attach tun file ${entry.id} to ${t.netdev}: ${e.message}`, e.errno, {
          cause: e,
        });
      }
    }
    return Number(fd);
  },
};

registerFdKind(tunfileKind);
