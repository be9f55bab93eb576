/**
 * AF_UNIX SOCK_SEQPACKET sockets for the RPC modes: one message per packet, optionally carrying fds
 * (SCM_RIGHTS). Every fd made here is close-on-exec, so action scripts and restored tasks never
 * inherit an RPC connection.
 *
 * Calls block the calling thread, except `waitReadable()`, which polls on a worker thread so that an
 * async caller (the TypeScript client) keeps its event loop running.
 */
import { addressOf, call, lastErrno, libc } from "./libc.ts";
import { ERRNO, SyscallError } from "./errors.ts";
import { cmsgSpace, iovecs, msghdr, parseScmRights, scmRights, sockaddrUn, SOL_SOCKET } from "./structs.ts";

const AF_UNIX = 1;
const SOCK_SEQPACKET = 5;
const SOCK_CLOEXEC = 0o2000000;
const SO_TYPE = 3;
const SO_PEERCRED = 17;
const MSG_PEEK = 0x2;
const MSG_TRUNC = 0x20;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
const POLLIN = 0x1;
const EBADF = 9;
const ECONNABORTED = 103;
const ECONNRESET = 104;

/** Room for this many fds in one received message; more are cut off by the kernel (MSG_CTRUNC). */
const MAX_FDS_PER_MESSAGE = 16;

/** Who is at the other end of a connection, as the kernel recorded it at connect()/socketpair(). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** One received message and the fds that came with it (owned by the receiver, close-on-exec). */
export interface Received {
  data: Uint8Array<ArrayBuffer>;
  fds: number[];
}

function setCloexec(fd: number): void {
  const flags = call("fcntl(F_GETFD)", libc.fcntl(fd, F_GETFD, 0n), `fd ${fd}`);
  call("fcntl(F_SETFD)", libc.fcntl(fd, F_SETFD, BigInt(flags | FD_CLOEXEC)), `fd ${fd}`);
}

function pollFd(fd: number): Uint8Array<ArrayBuffer> {
  const pfd = new Uint8Array(8); // struct pollfd { int fd; short events; short revents; }
  const v = new DataView(pfd.buffer);
  v.setInt32(0, fd, true);
  v.setInt16(4, POLLIN, true);
  return pfd;
}

/** A connected SOCK_SEQPACKET socket. */
export class SeqpacketSocket {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Takes over an fd we inherited (`criu swrk FD`); checks it is a SOCK_SEQPACKET socket. */
  static adopt(fd: number): SeqpacketSocket {
    const value = new Int32Array(1);
    const len = new Uint32Array([4]);
    const rc = libc.getsockopt(
      fd,
      SOL_SOCKET,
      SO_TYPE,
      new Uint8Array(value.buffer),
      new Uint8Array(len.buffer),
    );
    if (rc === -1) throw new SyscallError("getsockopt(SO_TYPE)", lastErrno(), `fd ${fd}`);
    if (value[0] !== SOCK_SEQPACKET) {
      throw new SyscallError("getsockopt(SO_TYPE)", ERRNO.EINVAL, `fd ${fd} is not a SOCK_SEQPACKET socket`);
    }
    setCloexec(fd);
    return new SeqpacketSocket(fd);
  }

  /** Wraps an fd this process made (accept4, socketpair) and owns. */
  static own(fd: number): SeqpacketSocket {
    return new SeqpacketSocket(fd);
  }

  /** A connected pair, both ends close-on-exec. */
  static pair(): [SeqpacketSocket, SeqpacketSocket] {
    const fds = new Int32Array(2);
    call(
      "socketpair",
      libc.socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, new Uint8Array(fds.buffer)),
    );
    return [new SeqpacketSocket(fds[0]!), new SeqpacketSocket(fds[1]!)];
  }

  /** Connects to a listening socket at `path`. */
  static connect(path: string): SeqpacketSocket {
    const fd = call("socket", libc.socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    const { addr, len } = sockaddrUn(path);
    for (;;) {
      if (libc.connect(fd, addr, len) === 0) return new SeqpacketSocket(fd);
      const errno = lastErrno();
      if (errno === ERRNO.EINTR) continue;
      libc.close(fd);
      throw new SyscallError("connect", errno, path);
    }
  }

  /** The fd, for handing to a child process. -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  #live(): number {
    if (this.#fd < 0) throw new SyscallError("socket", EBADF, "the socket is closed");
    return this.#fd;
  }

  /** Sends one message, with `fds` attached. A peer that is gone gives EPIPE (never SIGPIPE). */
  send(data: Uint8Array<ArrayBuffer>, fds: readonly number[] = []): void {
    const fd = this.#live();
    const msg = new MessageBuffers(data, fds.length ? scmRights(fds) : null);
    for (;;) {
      const n = libc.sendmsg(fd, msg.header, MSG_NOSIGNAL);
      if (n >= 0n) return;
      const errno = lastErrno();
      if (errno !== ERRNO.EINTR) throw new SyscallError("sendmsg", errno);
    }
  }

  /** Receives one whole message; blocks until one comes. Null when the peer has closed. */
  receive(): Received | null {
    const fd = this.#live();
    // A peek with MSG_TRUNC tells the size of the next message without consuming it.
    const size = recvmsg(fd, new MessageBuffers(new Uint8Array(0), null), MSG_PEEK | MSG_TRUNC);
    if (size === null || size === 0) return null;
    const msg = new MessageBuffers(new Uint8Array(size), new Uint8Array(cmsgSpace(4 * MAX_FDS_PER_MESSAGE)));
    const n = recvmsg(fd, msg, MSG_CMSG_CLOEXEC);
    if (n === null || n === 0) return null;
    return { data: msg.data.subarray(0, n), fds: parseScmRights(msg.control!, msg.controlLength()) };
  }

  /** True when a message (or the peer's close) is waiting; waits up to `timeoutMs` (-1: forever). */
  readable(timeoutMs: number): boolean {
    const pfd = pollFd(this.#live());
    for (;;) {
      const n = libc.poll(pfd, 1n, timeoutMs);
      if (n >= 0) return n > 0;
      const errno = lastErrno();
      if (errno !== ERRNO.EINTR) throw new SyscallError("poll", errno);
    }
  }

  /** Resolves when a message (or the peer's close) is waiting, without blocking the event loop. */
  async waitReadable(): Promise<void> {
    const pfd = pollFd(this.#live());
    // errno of a call made on a worker thread cannot be read here; any failure is retried after
    // a pause, and a closed socket shows up as readable (POLLHUP).
    for (;;) {
      const n = await libc.poll_async(pfd, 1n, 1000);
      if (n > 0) return;
      if (n < 0) await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** The peer's pid, uid and gid (SO_PEERCRED). */
  peerCredentials(): PeerCredentials {
    const cred = new Int32Array(3); // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
    const len = new Uint32Array([12]);
    const rc = libc.getsockopt(
      this.#live(),
      SOL_SOCKET,
      SO_PEERCRED,
      new Uint8Array(cred.buffer),
      new Uint8Array(len.buffer),
    );
    if (rc === -1) throw new SyscallError("getsockopt(SO_PEERCRED)", lastErrno());
    return { pid: cred[0]!, uid: cred[1]! >>> 0, gid: cred[2]! >>> 0 };
  }

  close(): void {
    if (this.#fd < 0) return;
    libc.close(this.#fd);
    this.#fd = -1;
  }
}

/** A msghdr with its buffers, kept together so that none is collected before the call returns. */
class MessageBuffers {
  readonly iov: BigUint64Array<ArrayBuffer>;
  readonly header: Uint8Array<ArrayBuffer>;

  constructor(readonly data: Uint8Array<ArrayBuffer>, readonly control: Uint8Array<ArrayBuffer> | null) {
    this.iov = iovecs([{ base: addressOf(data), len: data.byteLength }]);
    const ctl = control ? { addr: addressOf(control), len: control.byteLength } : null;
    this.header = msghdr(1, addressOf(this.iov), ctl);
  }

  /** msg_controllen after a receive: how much of `control` the kernel filled. */
  controlLength(): number {
    return Number(new DataView(this.header.buffer).getBigUint64(40, true));
  }
}

function recvmsg(fd: number, msg: MessageBuffers, flags: number): number | null {
  for (;;) {
    const n = libc.recvmsg(fd, msg.header, flags);
    if (n >= 0n) return Number(n);
    const errno = lastErrno();
    if (errno === ERRNO.EINTR) continue;
    if (errno === ECONNRESET) return null;
    throw new SyscallError("recvmsg", errno);
  }
}

/** A listening SOCK_SEQPACKET socket bound to a path. */
export class SeqpacketListener {
  #fd: number;
  readonly path: string;

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.path = path;
  }

  /**
   * Binds `path` (a stale socket file there is removed first, as CRIU does) and listens. The file
   * is created under a umask that lets nobody in, then gets group `gid` (when given) and mode
   * `mode`, all before anyone can connect.
   */
  static listen(
    path: string,
    access: { mode: number; gid?: number | undefined },
    backlog = 16,
  ): SeqpacketListener {
    const fd = call("socket", libc.socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    // Bound under a name of its own, given its owner and mode, listening, and only then renamed
    // into place: a client that finds the path finds a socket ready to take it, with its rights.
    const staging = `${path}.${Deno.pid}.new`;
    try {
      const { addr, len } = sockaddrUn(staging);
      for (const p of [path, staging]) {
        try {
          Deno.removeSync(p);
        } catch (e) {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        }
      }
      const oldMask = libc.umask(0o777);
      try {
        call("bind", libc.bind(fd, addr, len), path);
      } finally {
        libc.umask(oldMask);
      }
      if (access.gid !== undefined) Deno.chownSync(staging, null, access.gid);
      Deno.chmodSync(staging, access.mode);
      call("listen", libc.listen(fd, backlog), path);
      Deno.renameSync(staging, path);
      return new SeqpacketListener(fd, path);
    } catch (e) {
      libc.close(fd);
      try {
        Deno.removeSync(staging);
      } catch {
        // not made, or renamed already
      }
      throw e;
    }
  }

  /** Serves an fd inherited from the process that bound it (the `service --daemon` parent). */
  static adopt(fd: number, path: string): SeqpacketListener {
    setCloexec(fd);
    return new SeqpacketListener(fd, path);
  }

  get fd(): number {
    return this.#fd;
  }

  /** Waits up to `timeoutMs` (-1: forever) for a connection; null when none came. */
  accept(timeoutMs: number): SeqpacketSocket | null {
    const pfd = pollFd(this.#fd);
    for (;;) {
      const ready = libc.poll(pfd, 1n, timeoutMs);
      if (ready === 0) return null;
      if (ready < 0) {
        const errno = lastErrno();
        if (errno === ERRNO.EINTR) continue;
        throw new SyscallError("poll", errno);
      }
      const fd = libc.accept4(this.#fd, null, null, SOCK_CLOEXEC);
      if (fd >= 0) return SeqpacketSocket.own(fd);
      const errno = lastErrno();
      // The connecting client may have given up meanwhile; wait for the next one.
      if (errno === ERRNO.EINTR || errno === ERRNO.EAGAIN || errno === ECONNABORTED) continue;
      throw new SyscallError("accept4", errno, this.path);
    }
  }

  close(): void {
    if (this.#fd < 0) return;
    libc.close(this.#fd);
    this.#fd = -1;
  }
}

/**
 * Sends `fds` (ours) with one byte over `fd`, a datagram or seqpacket socket of ours (SCM_RIGHTS):
 * the way to hand a file to a task that can see neither criu's pid nor its /proc.
 */
export function sendFds(fd: number, fds: readonly number[]): void {
  const msg = new MessageBuffers(new Uint8Array([0]), scmRights(fds));
  for (;;) {
    const n = libc.sendmsg(fd, msg.header, MSG_NOSIGNAL);
    if (n >= 0n) return;
    const errno = lastErrno();
    if (errno !== ERRNO.EINTR) throw new SyscallError("sendmsg", errno);
  }
}
