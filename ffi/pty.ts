/**
 * Pseudo-terminals of our own: a new master from /dev/ptmx, unlocked, with the path of its slave.
 */
import { call, libc } from "./libc.ts";
import { closeFd, OPEN, openFd } from "./fd.ts";

const O_NOCTTY = 0o400;
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
