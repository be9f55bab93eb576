/**
 * Pseudo-terminals of our own: a new master from /dev/ptmx, unlocked, with the path of its slave.
 */
import { call, callBig, lastErrno, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";
import { closeFd, OPEN, openFd } from "./fd.ts";
import { NR } from "./syscalls.ts";

const O_NOCTTY = 0o400;

/** The terminal ioctls criu-ts calls in a task (x86_64 numbers; pinned by ffi/structs_test.ts). */
export const TTY_IOCTL = {
  TCGETS: 0x5401,
  TIOCSCTTY: 0x540e,
  TIOCGPGRP: 0x540f,
  TIOCSPGRP: 0x5410,
  TIOCGWINSZ: 0x5413,
  FIONREAD: 0x541b,
  TIOCGSID: 0x5429,
  TIOCGPTN: 0x80045430,
  TIOCSPTLCK: 0x40045431,
  TIOCGPKT: 0x80045438,
  TIOCGPTLCK: 0x80045439,
  TIOCGEXCL: 0x80045440,
  TIOCGLCKTRMIOS: 0x5456,
} as const;
const TIOCSPTLCK = 0x40045431n; // _IOW('T', 0x31, int): lock (1) or unlock (0) the slave
const TIOCGPTN = 0x80045430n; // _IOR('T', 0x30, unsigned int): the slave's number

export interface Pty {
  /** Our fd of the master side (close-on-exec). */
  master: number;
  /** /dev/pts/N */
  slavePath: string;
}

export function openPty(): Pty {
  const master = openFd("/dev/ptmx", OPEN.RDWR | O_NOCTTY | OPEN.CLOEXEC);
  try {
    const value = new Int32Array(1);
    call("ioctl(TIOCSPTLCK)", libc.ioctl(master, TIOCSPTLCK, new Uint8Array(value.buffer)), "/dev/ptmx");
    call("ioctl(TIOCGPTN)", libc.ioctl(master, TIOCGPTN, new Uint8Array(value.buffer)), "/dev/ptmx");
    return { master, slavePath: `/dev/pts/${value[0]}` };
  } catch (e) {
    closeFd(master);
    throw e;
  }
}

const TIOCPKT = 0x5420n; // int *: packet mode on (1) or off (0)
const TIOCEXCL = 0x540cn; // exclusive mode: no further opens but root's
const TCSETS = 0x5402n;
const TIOCSLCKTRMIOS = 0x5457n;
const TIOCSWINSZ = 0x5414n;
/** How many other ptys may hold the indexes below the one wanted. */
const MAX_INDEX_TRIES = 1024;

/**
 * A new pty master of ours whose slave is pts `index` of the devpts of `ptmx`. Ptys get the lowest free index, so
 * masters are opened until that one comes, and the others closed again. The kernel frees a closed
 * pty's index a little later (its release is deferred), so an index in use is waited for a while;
 * throws when it stays taken.
 */
export function openPtyAt(index: number, waitMs = 3000, ptmx = "/dev/ptmx"): number {
  const until = Date.now() + waitMs;
  for (;;) {
    const master = tryOpenPtyAt(index, ptmx);
    if (master >= 0) return master;
    if (Date.now() >= until) throw new Error(`Pty ${index} of ${ptmx} is in use`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
}

/** One attempt of openPtyAt: our master, or -1 when the index is taken. */
function tryOpenPtyAt(index: number, ptmx: string): number {
  const extra: number[] = [];
  try {
    for (let i = 0; i < MAX_INDEX_TRIES; i++) {
      const master = openFd(ptmx, OPEN.RDWR | O_NOCTTY | OPEN.CLOEXEC);
      const value = new Int32Array(1);
      try {
        call("ioctl(TIOCGPTN)", libc.ioctl(master, TIOCGPTN, new Uint8Array(value.buffer)), ptmx);
      } catch (e) {
        closeFd(master);
        throw e;
      }
      if (value[0] === index) return master;
      extra.push(master);
      if (value[0]! > index) return -1;
    }
    return -1;
  } finally {
    extra.forEach(closeFd);
  }
}

function ioctlInt(fd: number, request: bigint, value: number, name: string): void {
  call(name, libc.ioctl(fd, request, new Uint8Array(new Int32Array([value]).buffer)));
}

/** Locks (or unlocks) the slave of our master `fd`. */
export function setPtyLocked(fd: number, locked: boolean): void {
  ioctlInt(fd, TIOCSPTLCK, locked ? 1 : 0, "ioctl(TIOCSPTLCK)");
}

export function setPacketMode(fd: number, on: boolean): void {
  ioctlInt(fd, TIOCPKT, on ? 1 : 0, "ioctl(TIOCPKT)");
}

/** The termios, locked termios (kernel layouts) and window size of the pty, through either side. */
export function setTerminalState(
  fd: number,
  s: {
    termios?: Uint8Array<ArrayBuffer>;
    locked?: Uint8Array<ArrayBuffer>;
    winsize?: Uint8Array<ArrayBuffer>;
  },
): void {
  // Termios first: the locked bits would keep it from changing what they lock.
  if (s.termios) call("ioctl(TCSETS)", libc.ioctl(fd, TCSETS, s.termios));
  if (s.locked) call("ioctl(TIOCSLCKTRMIOS)", libc.ioctl(fd, TIOCSLCKTRMIOS, s.locked));
  if (s.winsize) call("ioctl(TIOCSWINSZ)", libc.ioctl(fd, TIOCSWINSZ, s.winsize));
}

const TIOCGPTPEER = 0x5441n; // _IO('T', 0x41): a new open file of the slave of this master

/**
 * Opens the slave of our master `fd` (O_NOCTTY and close-on-exec added to `flags`), in the devpts
 * the master came from, whatever path the slave has in our own view (none, for a container's).
 */
export function openPtyPeer(fd: number, flags: number): number {
  const all = BigInt(flags | O_NOCTTY | OPEN.CLOEXEC);
  return callBig(
    "ioctl(TIOCGPTPEER)",
    libc.syscall(BigInt(NR.ioctl), BigInt(fd), TIOCGPTPEER, all, 0n, 0n, 0n),
  );
}

/** Puts the terminal behind `fd` in exclusive mode. */
export function setExclusive(fd: number): void {
  call("ioctl(TIOCEXCL)", libc.ioctl(fd, TIOCEXCL, new Uint8Array(4)));
}

const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const EAGAIN = 11;
const EIO = 5;

/**
 * Takes every byte one side of a pty has for reading now, up to `max`, without waiting: the open
 * file is made non-blocking for the reads (it is shared with a task: its flags are put back).
 */
export function drainTty(fd: number, max: number): Uint8Array<ArrayBuffer> {
  const flags = call("fcntl(F_GETFL)", libc.fcntl(fd, F_GETFL, 0n));
  call("fcntl(F_SETFL)", libc.fcntl(fd, F_SETFL, BigInt(flags | O_NONBLOCK)));
  const buf = new Uint8Array(max);
  let got = 0;
  try {
    while (got < max) {
      const n = libc.read(fd, buf.subarray(got), BigInt(max - got));
      if (n === -1n) {
        const errno = lastErrno();
        if (errno === EAGAIN || errno === EIO) break; // nothing more, or no other side open
        throw new SyscallError("read", errno, "a pty's queued bytes");
      }
      if (n === 0n) break;
      got += Number(n);
    }
  } finally {
    call("fcntl(F_SETFL)", libc.fcntl(fd, F_SETFL, BigInt(flags)));
  }
  return buf.slice(0, got);
}
