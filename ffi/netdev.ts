/**
 * Network devices of a network namespace: their names (from /proc/PID/net/dev, which shows the
 * namespace of PID) and the flags and MTU of one of them, asked through a socket made inside
 * that namespace. `struct ifreq` is 40 bytes: the name in 16, then a union (flags are a short,
 * the MTU an int, both at offset 16).
 */
import { call, libc } from "./libc.ts";
import { closeFd, OPEN, openFd } from "./fd.ts";

export const IFREQ_SIZE = 40;
export const SIOC = { GIFFLAGS: 0x8913, SIFFLAGS: 0x8914, GIFMTU: 0x8921, SIFMTU: 0x8922 } as const;
export const IFF_UP = 0x1;
const CLONE_NEWNET = 0x40000000;
const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;

/** The device names of PID's network namespace, in the kernel's order. */
export function deviceNames(pid: number): string[] {
  const lines = Deno.readTextFileSync(`/proc/${pid}/net/dev`).split("\n").slice(2);
  return lines.map((l) => l.split(":")[0]!.trim()).filter((n) => n !== "");
}

/** An ifreq naming `name`, with `value` in its union (a short for flags, an int for the MTU). */
export function ifreq(name: string, value = 0): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(IFREQ_SIZE);
  const bytes = new TextEncoder().encode(name);
  if (bytes.length > 15) throw new RangeError(`Interface name ${name} is longer than 15 bytes`);
  buf.set(bytes);
  new DataView(buf.buffer).setInt32(16, value, true);
  return buf;
}

export interface DeviceState {
  flags: number;
  mtu: number;
}

/**
 * Flags and MTU of device `name` in the network namespace of `pid`. The calling thread enters that
 * namespace only long enough to make a socket there (a socket stays in the namespace it was made
 * in), then comes back.
 */
export function deviceState(pid: number, name: string): DeviceState {
  const sock = socketInNetns(`/proc/${pid}/ns/net`);
  try {
    const req = ifreq(name);
    const view = new DataView(req.buffer);
    call("ioctl(SIOCGIFFLAGS)", libc.ioctl(sock, BigInt(SIOC.GIFFLAGS), req), name);
    const flags = view.getUint16(16, true);
    call("ioctl(SIOCGIFMTU)", libc.ioctl(sock, BigInt(SIOC.GIFMTU), req), name);
    return { flags, mtu: view.getInt32(16, true) };
  } finally {
    closeFd(sock);
  }
}

function socketInNetns(nsPath: string): number {
  const own = openFd("/proc/thread-self/ns/net", OPEN.RDONLY | OPEN.CLOEXEC);
  const target = openFd(nsPath, OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    call("setns(net)", libc.setns(target, CLONE_NEWNET), nsPath);
    try {
      return call("socket", libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), `in ${nsPath}`);
    } finally {
      call("setns(back)", libc.setns(own, CLONE_NEWNET));
    }
  } finally {
    closeFd(target);
    closeFd(own);
  }
}
