/**
 * The receive queue of a socket of ours, read without consuming it: what a dump stores for a unix
 * socket (CRIU's sk-queues image: one entry per message, its bytes, and the fds and credentials
 * that travel with it).
 *
 * Each recvmsg(MSG_PEEK) returns one queued message (a datagram; for a stream, the bytes of several
 * writes, up to and including the first write that carried fds: those fds come with all of them),
 * and with SO_PEEK_OFF enabled the kernel moves the peek offset past it, so the next peek sees the
 * next one. The socket's own peek offset is put back afterwards.
 * Credentials come with each message only when the socket has SO_PASSCRED.
 */
import { addressOf, lastErrno, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";
import { CMSG_HDR_SIZE, cmsgSpace, iovecs, msghdr, SCM_RIGHTS, SOL_SOCKET } from "./structs.ts";
import { getIntOption, setIntOption, SO, SOL } from "./sockopt.ts";
import { peerName } from "./sockcall.ts";

export const SCM_CREDENTIALS = 2;
/** The kernel passes at most this many fds in one message (SCM_MAX_FD). */
export const SCM_MAX_FD = 253;
/** `struct ucred`: pid, uid, gid (u32 each). */
export const UCRED_SIZE = 12;

const MSG_PEEK = 0x2;
const MSG_TRUNC = 0x20;
const MSG_CTRUNC = 0x8;
const MSG_DONTWAIT = 0x40;
const MSG_CMSG_CLOEXEC = 0x40000000;
const EAGAIN = 11;
const EINTR = 4;
/** msg_flags in struct msghdr. */
const MSGHDR_FLAGS_AT = 48;
const MSGHDR_CONTROLLEN_AT = 40;

export interface Credentials {
  pid: number;
  uid: number;
  gid: number;
}

export interface QueuedMessage {
  data: Uint8Array<ArrayBuffer>;
  /** Copies of the fds in flight with the message, in our fd table (close-on-exec); the caller closes them. */
  fds: number[];
  /** Present when the socket has SO_PASSCRED. */
  creds?: Credentials;
}

/** The control messages of one received msghdr. */
export function parseControl(
  control: Uint8Array<ArrayBuffer>,
  len: number,
): { fds: number[]; creds?: Credentials } {
  const v = new DataView(control.buffer, control.byteOffset, control.byteLength);
  const out: { fds: number[]; creds?: Credentials } = { fds: [] };
  let off = 0;
  while (off + CMSG_HDR_SIZE <= len) {
    const cmsgLen = Number(v.getBigUint64(off, true));
    if (cmsgLen < CMSG_HDR_SIZE || off + cmsgLen > len) break;
    const level = v.getInt32(off + 8, true);
    const type = v.getInt32(off + 12, true);
    const data = off + CMSG_HDR_SIZE;
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let p = data; p + 4 <= off + cmsgLen; p += 4) out.fds.push(v.getInt32(p, true));
    } else if (level === SOL_SOCKET && type === SCM_CREDENTIALS && cmsgLen >= CMSG_HDR_SIZE + UCRED_SIZE) {
      out.creds = {
        pid: v.getInt32(data, true),
        uid: v.getUint32(data + 4, true),
        gid: v.getUint32(data + 8, true),
      };
    }
    off += (cmsgLen + 7) & ~7;
  }
  return out;
}

/** A control buffer carrying `creds` with SCM_CREDENTIALS (to send a message as someone, if allowed). */
export function scmCredentials(creds: Credentials): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(cmsgSpace(UCRED_SIZE));
  const v = new DataView(out.buffer);
  v.setBigUint64(0, BigInt(CMSG_HDR_SIZE + UCRED_SIZE), true);
  v.setInt32(8, SOL_SOCKET, true);
  v.setInt32(12, SCM_CREDENTIALS, true);
  v.setInt32(16, creds.pid, true);
  v.setUint32(20, creds.uid, true);
  v.setUint32(24, creds.gid, true);
  return out;
}

const SOCK_DGRAM = 2;
const ENOTCONN = 107;

function connected(fd: number): boolean {
  try {
    peerName(fd);
    return true;
  } catch (e) {
    if (e instanceof SyscallError && e.errno === ENOTCONN) return false;
    throw e;
  }
}

function setPeekOffset(fd: number, value: number): void {
  setIntOption(fd, SOL.SOCKET, SO.PEEK_OFF, value);
}

/**
 * Every message waiting in the receive queue of our socket `fd`, left in place (none for a listener
 * or an unconnected stream socket). Throws if a message
 * does not fit the buffer (it cannot happen for a message the kernel accepted under the buffer
 * sizes of the socket) or if its fds did not all fit.
 */
export function peekQueue(fd: number): QueuedMessage[] {
  // A listener's queue holds connections, not data (sock_diag's icons lists them), and a stream or
  // seqpacket socket never connected has no queue at all (recvmsg says EINVAL).
  if (getIntOption(fd, SOL.SOCKET, SO.ACCEPTCONN) === 1) return [];
  if (getIntOption(fd, SOL.SOCKET, SO.TYPE) !== SOCK_DGRAM && !connected(fd)) return [];
  const savedPeekOff = getIntOption(fd, SOL.SOCKET, SO.PEEK_OFF);
  const size = Math.max(
    getIntOption(fd, SOL.SOCKET, SO.SNDBUF),
    getIntOption(fd, SOL.SOCKET, SO.RCVBUF),
    256 * 1024,
  );
  const data = new Uint8Array(size);
  const control = new Uint8Array(cmsgSpace(4 * SCM_MAX_FD) + cmsgSpace(UCRED_SIZE));
  const iov = iovecs([{ base: addressOf(data), len: data.length }]);
  const out: QueuedMessage[] = [];
  setPeekOffset(fd, 0);
  try {
    for (;;) {
      const header = msghdr(1, addressOf(iov), { addr: addressOf(control), len: control.length });
      const n = libc.recvmsg(fd, header, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n === 0n) break; // the peer shut down: nothing after this
      if (n < 0n) {
        const errno = lastErrno();
        if (errno === EINTR) continue;
        if (errno === EAGAIN) break;
        throw new SyscallError("recvmsg(MSG_PEEK)", errno, `fd ${fd}`);
      }
      const hv = new DataView(header.buffer);
      const flags = hv.getInt32(MSGHDR_FLAGS_AT, true);
      const cmsg = parseControl(control, Number(hv.getBigUint64(MSGHDR_CONTROLLEN_AT, true)));
      const message: QueuedMessage = { data: data.slice(0, Number(n)), fds: cmsg.fds };
      if (cmsg.creds) message.creds = cmsg.creds;
      out.push(message);
      if (flags & (MSG_TRUNC | MSG_CTRUNC)) {
        throw new SyscallError(
          "recvmsg(MSG_PEEK)",
          7,
          `fd ${fd}: a queued message did not fit (${flags & MSG_TRUNC ? "data" : "fds"} cut off)`,
        );
      }
    }
    return out;
  } catch (e) {
    for (const m of out) for (const f of m.fds) libc.close(f);
    throw e;
  } finally {
    setPeekOffset(fd, savedPeekOff);
  }
}
