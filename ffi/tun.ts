/**
 * Persistent tun/tap devices, through /dev/net/tun: what CRIU's TunLinkEntry records of one (its
 * flags, virtio-net header size, send buffer) and making one again at a given index. A device is
 * looked up in the namespace of whoever opened /dev/net/tun, so both open it with the thread in
 * the device's namespace (`inNetns`). The ioctls take `struct ifreq` (name, then flags as a short)
 * or an int, by pointer or by value as the kernel's tun.c reads them.
 */
import { call, callBig, lastErrno, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";
import { closeFd, OPEN, openFd } from "./fd.ts";
import { ifreq, ifreqFlags, inNetns } from "./netdev.ts";
import { int32Bytes, INT_SIZE, readInt32 } from "./structs.ts";
import { NR } from "./syscalls.ts";

/** The tun ioctls (<linux/if_tun.h>). */
export const TUN = {
  SETIFF: 0x400454ca,
  SETPERSIST: 0x400454cb,
  SETOWNER: 0x400454cc,
  SETGROUP: 0x400454ce,
  GETIFF: 0x800454d2,
  GETSNDBUF: 0x800454d3,
  SETSNDBUF: 0x400454d4,
  GETVNETHDRSZ: 0x800454d7,
  SETVNETHDRSZ: 0x400454d8,
  SETQUEUE: 0x400454d9,
  SETIFINDEX: 0x400454da,
} as const;

/** IFF_* flags of a tun device, as TUNSETIFF takes them and TUNGETIFF gives them. */
export const TUN_FLAGS = {
  TUN: 0x1,
  TAP: 0x2,
  MULTI_QUEUE: 0x100,
  ATTACH_QUEUE: 0x200,
  DETACH_QUEUE: 0x400,
  PERSIST: 0x800,
  NO_PI: 0x1000,
  VNET_HDR: 0x4000,
} as const;

export interface TunDevice {
  flags: number;
  vnetHdrSize: number;
  sndbuf: number;
}

function openTun(nsPath: string): number {
  return inNetns(nsPath, () => openFd("/dev/net/tun", OPEN.RDWR | OPEN.CLOEXEC));
}

function getInt(fd: number, request: number, what: string): number {
  const buf = new Uint8Array(INT_SIZE);
  call(what, libc.ioctl(fd, BigInt(request), buf));
  return readInt32(buf);
}

function setIntByPointer(fd: number, request: number, value: number, what: string): void {
  call(what, libc.ioctl(fd, BigInt(request), int32Bytes(value)));
}

function setIntByValue(fd: number, request: number, value: number, what: string): void {
  callBig(what, libc.syscall(BigInt(NR.ioctl), BigInt(fd), BigInt(request), BigInt(value), 0n, 0n, 0n));
}

/**
 * Attaches to the persistent device `name` of the namespace at `nsPath` for a moment and reads
 * what TunLinkEntry holds. `flags` are those it was made with (TUNSETIFF must repeat them); a
 * device a process holds open cannot be attached to (EBUSY, thrown as a SyscallError).
 */
export function readTunDevice(nsPath: string, name: string, flags: number): TunDevice {
  const fd = openTun(nsPath);
  try {
    const req = ifreq(name, flags);
    call("ioctl(TUNSETIFF)", libc.ioctl(fd, BigInt(TUN.SETIFF), req), name);
    call("ioctl(TUNGETIFF)", libc.ioctl(fd, BigInt(TUN.GETIFF), req), name);
    return {
      flags: ifreqFlags(req),
      vnetHdrSize: getInt(fd, TUN.GETVNETHDRSZ, "ioctl(TUNGETVNETHDRSZ)"),
      sndbuf: getInt(fd, TUN.GETSNDBUF, "ioctl(TUNGETSNDBUF)"),
    };
  } finally {
    closeFd(fd);
  }
}

/**
 * Makes the persistent device `name` in the namespace at `nsPath`, at index `ifindex`, with its
 * owner and group (-1: none) and what readTunDevice read.
 */
export function makeTunDevice(
  nsPath: string,
  name: string,
  ifindex: number,
  owner: number,
  group: number,
  device: TunDevice,
): void {
  const fd = openTun(nsPath);
  try {
    setIntByPointer(fd, TUN.SETIFINDEX, ifindex, "ioctl(TUNSETIFINDEX)");
    call(
      "ioctl(TUNSETIFF)",
      libc.ioctl(fd, BigInt(TUN.SETIFF), ifreq(name, device.flags & ~TUN_FLAGS.PERSIST)),
      name,
    );
    if (owner !== -1) setIntByValue(fd, TUN.SETOWNER, owner, "ioctl(TUNSETOWNER)");
    if (group !== -1) setIntByValue(fd, TUN.SETGROUP, group, "ioctl(TUNSETGROUP)");
    setIntByPointer(fd, TUN.SETSNDBUF, device.sndbuf, "ioctl(TUNSETSNDBUF)");
    setIntByPointer(fd, TUN.SETVNETHDRSZ, device.vnetHdrSize, "ioctl(TUNSETVNETHDRSZ)");
    setIntByValue(fd, TUN.SETPERSIST, 1, "ioctl(TUNSETPERSIST)");
  } finally {
    closeFd(fd);
  }
}

/** What an open /dev/net/tun file is attached to, read through an fd of criu's own. */
export interface TunFile {
  /** The device's name. */
  name: string;
  /** TUNGETIFF's flags; 0x1000 there may mean "no filter" (IFF_NOFILTER) rather than IFF_NO_PI. */
  flags: number;
  /** The file is a queue of a multi-queue device, detached from it (TUNSETQUEUE). */
  detached: boolean;
  vnetHdrSize: number;
  sndbuf: number;
}

/** The device the tun file `fd` is attached to; null when it is attached to none (EBADFD). */
export function readTunFile(fd: number): TunFile | null {
  const req = ifreq("", 0);
  if (libc.ioctl(fd, BigInt(TUN.GETIFF), req) === -1) {
    const e = new SyscallError("ioctl(TUNGETIFF)", lastErrno());
    if (e.code === "EBADFD") return null;
    throw e;
  }
  const nul = req.indexOf(0);
  const flags = new DataView(req.buffer).getUint16(16, true);
  return {
    name: new TextDecoder().decode(req.subarray(0, nul < 0 || nul > 16 ? 16 : nul)),
    flags,
    detached: (flags & TUN_FLAGS.DETACH_QUEUE) !== 0,
    vnetHdrSize: getInt(fd, TUN.GETVNETHDRSZ, "ioctl(TUNGETVNETHDRSZ)"),
    sndbuf: getInt(fd, TUN.GETSNDBUF, "ioctl(TUNGETSNDBUF)"),
  };
}

/**
 * A remote ioctl on a tun file, for a task to make itself: the request and its argument, an
 * ifreq (put in the task's memory by the caller) or an int passed by value.
 */
export interface TunIoctl {
  name: string;
  request: number;
  ifreq?: Uint8Array<ArrayBuffer>;
  value?: number;
}

/**
 * What a task does to a /dev/net/tun file it opened to attach it again as it was: TUNSETIFF on
 * the device `name` with the device's `flags` (TUN or TAP, NO_PI, VNET_HDR, MULTI_QUEUE), its
 * queue detached again when it was, and the persistence the restore gave the device taken back
 * when the device was not persistent (the file keeps it alive, as before).
 */
export function tunAttachIoctls(name: string, flags: number, detached: boolean): TunIoctl[] {
  const out: TunIoctl[] = [{
    name: `ioctl(TUNSETIFF, ${name})`,
    request: TUN.SETIFF,
    ifreq: ifreq(name, flags & ~(TUN_FLAGS.PERSIST | TUN_FLAGS.DETACH_QUEUE | TUN_FLAGS.ATTACH_QUEUE)),
  }];
  if (detached) {
    out.push({
      name: `ioctl(TUNSETQUEUE, ${name})`,
      request: TUN.SETQUEUE,
      ifreq: ifreq("", TUN_FLAGS.DETACH_QUEUE),
    });
  }
  if (!(flags & TUN_FLAGS.PERSIST)) {
    out.push({ name: `ioctl(TUNSETPERSIST, ${name}, 0)`, request: TUN.SETPERSIST, value: 0 });
  }
  return out;
}
