/** Reading and writing another task's memory. */
import { addressOf, call, callBig, cstr, lastErrno, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";
import { killPoint } from "./ptrace.ts";

/** process_vm_readv of one range into `into` (or a fresh buffer); short reads are errors. */
/** The two iovecs of a one-range copy (ours, then the task's), made once. */
const iov = new BigUint64Array(4);
const localIov = new Uint8Array(iov.buffer, 0, 16);
const remoteIov = new Uint8Array(iov.buffer, 16, 16);

function oneRange(buf: Uint8Array<ArrayBuffer>, addr: bigint, len: number): void {
  iov[0] = addressOf(buf);
  iov[1] = BigInt(len);
  iov[2] = addr;
  iov[3] = BigInt(len);
}

/** process_vm_readv of one range into `into` (or a fresh buffer); short reads are errors. */
export function readMemory(
  pid: number,
  addr: bigint,
  len: number,
  into?: Uint8Array<ArrayBuffer>,
): Uint8Array<ArrayBuffer> {
  const buf = into ?? new Uint8Array(len);
  oneRange(buf, addr, len);
  const n = libc.process_vm_readv(pid, localIov, 1n, remoteIov, 1n, 0n);
  if (n !== BigInt(len)) {
    const why = n === -1n ? `errno ${lastErrno()}` : `short read ${n} of ${len}`;
    throw new SyscallError(
      "process_vm_readv",
      n === -1n ? lastErrno() : 14,
      `${why} at 0x${addr.toString(16)}`,
    );
  }
  return buf;
}

/** process_vm_writev; only for writable mappings (use ProcMem for read-only ones). */
export function writeMemory(pid: number, addr: bigint, data: Uint8Array<ArrayBuffer>): void {
  killPoint();
  oneRange(data, addr, data.byteLength);
  const n = libc.process_vm_writev(pid, localIov, 1n, remoteIov, 1n, 0n);
  if (n !== BigInt(data.byteLength)) {
    const why = n === -1n ? `errno ${lastErrno()}` : `short write ${n} of ${data.byteLength}`;
    throw new SyscallError(
      "process_vm_writev",
      n === -1n ? lastErrno() : 14,
      `${why} at 0x${addr.toString(16)}`,
    );
  }
}

/** /proc/PID/mem: writes even into read-only private mappings, as a debugger does. */
export class ProcMem {
  #fd: number;
  constructor(readonly pid: number) {
    this.#fd = call("open", libc.open(cstr(`/proc/${pid}/mem`), 2 | 0o2000000, 0), `/proc/${pid}/mem`);
  }
  write(addr: bigint, data: Uint8Array<ArrayBuffer>): void {
    killPoint();
    const n = callBig("pwrite(/proc/PID/mem)", libc.pwrite(this.#fd, data, BigInt(data.byteLength), addr));
    if (n !== data.byteLength) {
      throw new SyscallError("pwrite(/proc/PID/mem)", 14, `short write at 0x${addr.toString(16)}`);
    }
  }
  read(addr: bigint, len: number): Uint8Array<ArrayBuffer> {
    const buf = new Uint8Array(len);
    const n = callBig("pread(/proc/PID/mem)", libc.pread(this.#fd, buf, BigInt(len), addr));
    if (n !== len) throw new SyscallError("pread(/proc/PID/mem)", 14, `short read at 0x${addr.toString(16)}`);
    return buf;
  }
  close(): void {
    libc.close(this.#fd);
  }
}
