/** Reading and writing another task's memory. */
import { addressOf, call, callBig, cstr, libc } from "./libc.ts";
import { SyscallError } from "./errors.ts";
import { iovecs } from "./structs.ts";

/** process_vm_readv of one range into `into` (or a fresh buffer); short reads are errors. */
export function readMemory(
  pid: number,
  addr: bigint,
  len: number,
  into?: Uint8Array<ArrayBuffer>,
): Uint8Array<ArrayBuffer> {
  const buf = into ?? new Uint8Array(len);
  const local = iovecs([{ base: addressOf(buf), len }]);
  const remote = iovecs([{ base: addr, len }]);
  const n = callBig(
    "process_vm_readv",
    libc.process_vm_readv(pid, new Uint8Array(local.buffer), 1n, new Uint8Array(remote.buffer), 1n, 0n),
    `pid ${pid}, 0x${addr.toString(16)}+${len}`,
  );
  if (n !== len) {
    throw new SyscallError("process_vm_readv", 14, `short read ${n} of ${len} at 0x${addr.toString(16)}`);
  }
  return buf;
}

/** process_vm_writev; only for writable mappings (use ProcMem for read-only ones). */
export function writeMemory(pid: number, addr: bigint, data: Uint8Array<ArrayBuffer>): void {
  const local = iovecs([{ base: addressOf(data), len: data.byteLength }]);
  const remote = iovecs([{ base: addr, len: data.byteLength }]);
  const n = callBig(
    "process_vm_writev",
    libc.process_vm_writev(pid, new Uint8Array(local.buffer), 1n, new Uint8Array(remote.buffer), 1n, 0n),
    `pid ${pid}, 0x${addr.toString(16)}+${data.byteLength}`,
  );
  if (n !== data.byteLength) {
    throw new SyscallError("process_vm_writev", 14, `short write at 0x${addr.toString(16)}`);
  }
}

/** /proc/PID/mem: writes even into read-only private mappings, as a debugger does. */
export class ProcMem {
  #fd: number;
  constructor(readonly pid: number) {
    this.#fd = call("open", libc.open(cstr(`/proc/${pid}/mem`), 2 | 0o2000000, 0), `/proc/${pid}/mem`);
  }
  write(addr: bigint, data: Uint8Array<ArrayBuffer>): void {
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
