/**
 * Persistent tun/tap devices, through /dev/net/tun: what CRIU's TunLinkEntry records of one (its
 * flags, virtio-net header size, send buffer) and making one again at a given index. A device is
 * looked up in the namespace of whoever opened /dev/net/tun, so both open it with the thread in
 * the device's namespace (`inNetns`). The ioctls take `struct ifreq` (name, then flags as a short)
 * or an int, by pointer or by value as the kernel's tun.c reads them.
 */
import { call, callBig, libc } from "./libc.ts";
import { closeFd, OPEN, openFd } from "./fd.ts";
import { ifreq, inNetns } from "./netdev.ts";
import { NR } from "./syscalls.ts";

const TUN = {
  SETIFF: 0x400454ca,
  SETPERSIST: 0x400454cb,
  SETOWNER: 0x400454cc,
  SETGROUP: 0x400454ce,
  GETIFF: 0x800454d2,
  GETSNDBUF: 0x800454d3,
  SETSNDBUF: 0x400454d4,
  GETVNETHDRSZ: 0x800454d7,
  SETVNETHDRSZ: 0x400454d8,
  SETIFINDEX: 0x400454da,
} as const;

/** IFF_* flags of a tun device, as TUNSETIFF takes them and TUNGETIFF gives them. */
export const TUN_FLAGS = {
  TUN: 0x1,
  TAP: 0x2,
  MULTI_QUEUE: 0x100,
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
  const buf = new Uint8Array(4);
  call(what, libc.ioctl(fd, BigInt(request), buf));
  return new DataView(buf.buffer).getInt32(0, true);
}

function setIntByPointer(fd: number, request: number, value: number, what: string): void {
  const buf = new Uint8Array(4);
  new DataView(buf.buffer).setInt32(0, value, true);
  call(what, libc.ioctl(fd, BigInt(request), buf));
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
      flags: new DataView(req.buffer).getUint16(16, true),
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
