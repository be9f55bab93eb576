/**
 * AF_PACKET sockets: the SOL_PACKET option numbers and the structs their setsockopt calls and bind
 * take (linux/if_packet.h), written here so nothing above ffi/ lays them out.
 *
 *   struct sockaddr_ll    { u16 family; be16 protocol; i32 ifindex; u16 hatype; u8 pkttype;
 *                           u8 halen; u8 addr[8]; }                                  20 bytes
 *   struct packet_mreq    { i32 ifindex; u16 type; u16 alen; u8 address[8]; }        16 bytes,
 *                         the kernel takes up to MAX_ADDR_LEN (32) address bytes:    40 bytes
 *   struct tpacket_req3   { u32 block_size, block_nr, frame_size, frame_nr,
 *                           retire_blk_tov, sizeof_priv, feature_req_word; }       28 bytes
 *   struct sockaddr       { u16 family; char data[14]; }   SOCK_PACKET binds by device name
 *   struct ifreq          { char name[16]; union { int ifindex; ... } }            40 bytes
 */
import { call, libc } from "./libc.ts";
import { IFREQ_SIZE } from "./netdev.ts";
import { setIntOption, setOptionBytes } from "./sockopt.ts";

export const SOL_PACKET = 263;

export const PACKET_OPT = {
  ADD_MEMBERSHIP: 1,
  RX_RING: 5,
  COPY_THRESH: 7,
  AUXDATA: 8,
  ORIGDEV: 9,
  VERSION: 10,
  RESERVE: 12,
  TX_RING: 13,
  LOSS: 14,
  VNET_HDR: 15,
  TIMESTAMP: 17,
  FANOUT: 18,
} as const;

/** packet_mreq.mr_type: what a membership adds. */
export const PACKET_MR = { MULTICAST: 0, PROMISC: 1, ALLMULTI: 2, UNICAST: 3 } as const;

/** packet_diag_info.pdi_flags. */
export const PDI = { RUNNING: 1, AUXDATA: 2, ORIGDEV: 4, VNETHDR: 8, LOSS: 16 } as const;

/** The obsolete socket type of AF_PACKET (bound by device name). */
export const SOCK_PACKET = 10;

const AF_PACKET = 17;
const SOCKADDR_LL_SIZE = 20;
const MAX_ADDR_LEN = 32;
const PACKET_MREQ_MAX_SIZE = 8 + MAX_ADDR_LEN;
const TPACKET_REQ3_SIZE = 28;
const SOCKADDR_SIZE = 16;
const SIOCGIFNAME = 0x8910;
const IFNAMSIZ = 16;

/** Binds a packet socket to interface `ifindex` (0: every one), keeping the protocol it has. */
export function bindPacketSocket(fd: number, ifindex: number): void {
  const sll = new Uint8Array(SOCKADDR_LL_SIZE);
  const v = new DataView(sll.buffer);
  v.setUint16(0, AF_PACKET, true);
  v.setInt32(4, ifindex, true);
  call("bind(AF_PACKET)", libc.bind(fd, sll, SOCKADDR_LL_SIZE), `fd ${fd} ifindex ${ifindex}`);
}

/** The name of interface `ifindex` in the network namespace of socket `fd` (SIOCGIFNAME). */
export function interfaceName(fd: number, ifindex: number): string {
  const req = new Uint8Array(IFREQ_SIZE);
  new DataView(req.buffer).setInt32(IFNAMSIZ, ifindex, true);
  call("ioctl(SIOCGIFNAME)", libc.ioctl(fd, BigInt(SIOCGIFNAME), req), `ifindex ${ifindex}`);
  const name = req.subarray(0, IFNAMSIZ);
  const end = name.indexOf(0);
  return new TextDecoder().decode(name.subarray(0, end < 0 ? IFNAMSIZ : end));
}

/** Binds an obsolete SOCK_PACKET socket to a device by name (at most 13 bytes fit, as in the kernel). */
export function bindPacketSocketToName(fd: number, name: string): void {
  const sa = new Uint8Array(SOCKADDR_SIZE);
  new DataView(sa.buffer).setUint16(0, AF_PACKET, true);
  sa.set(new TextEncoder().encode(name).subarray(0, SOCKADDR_SIZE - 3), 2);
  call("bind(SOCK_PACKET)", libc.bind(fd, sa, SOCKADDR_SIZE), `fd ${fd} device ${name}`);
}

/** PACKET_ADD_MEMBERSHIP: a multicast or unicast address, or promiscuous / all-multicast mode. */
export function addPacketMembership(fd: number, ifindex: number, type: number, address: Uint8Array): void {
  if (address.length > MAX_ADDR_LEN) {
    throw new RangeError(
      `A packet membership address of ${address.length} bytes; at most ${MAX_ADDR_LEN} fit`,
    );
  }
  const mreq = new Uint8Array(PACKET_MREQ_MAX_SIZE);
  const v = new DataView(mreq.buffer);
  v.setInt32(0, ifindex, true);
  v.setUint16(4, type, true);
  v.setUint16(6, address.length, true);
  mreq.set(address, 8);
  setOptionBytes(fd, SOL_PACKET, PACKET_OPT.ADD_MEMBERSHIP, mreq);
}

/**
 * PACKET_RX_RING or PACKET_TX_RING from the seven numbers of a ring (block size and count, frame
 * size and count, retire timeout, private size, features: packet_diag_ring's order).
 */
export function setPacketRing(fd: number, which: "rx" | "tx", ring: readonly number[]): void {
  const req = new Uint8Array(TPACKET_REQ3_SIZE);
  const v = new DataView(req.buffer);
  ring.slice(0, 7).forEach((n, i) => v.setUint32(4 * i, n >>> 0, true));
  setOptionBytes(fd, SOL_PACKET, which === "rx" ? PACKET_OPT.RX_RING : PACKET_OPT.TX_RING, req);
}

/** An int option of SOL_PACKET. */
export function setPacketOption(fd: number, name: number, value: number): void {
  setIntOption(fd, SOL_PACKET, name, value);
}
