/**
 * Linux AIO (io_setup): the syscall numbers, the header the kernel puts at the start of a ring
 * (struct aio_ring, include/linux/aio.h... fs/aio.c) and struct iocb (include/uapi/linux/aio_abi.h).
 *
 * struct aio_ring { u32 id, nr, head, tail, magic, compat_features, incompat_features,
 *                   header_length; struct io_event io_events[]; }   (32 bytes, then 32 per event)
 * struct iocb { u64 aio_data; u32 aio_key, aio_rw_flags; u16 aio_lio_opcode; s16 aio_reqprio;
 *               u32 aio_fildes; u64 aio_buf, aio_nbytes; s64 aio_offset; u64 aio_reserved2;
 *               u32 aio_flags, aio_resfd; }   (64 bytes)
 */

export const AIO_RING_MAGIC = 0xa10a10a1;
export const AIO_RING_HEADER_SIZE = 32;
export const IO_EVENT_SIZE = 32;
export const IOCB_SIZE = 64;
export const IOCB_CMD_PWRITE = 1;
/** Where head sits in the ring header: user space moves it as it reaps events. */
export const AIO_RING_HEAD_OFFSET = 8;

export interface AioRingHeader {
  id: number;
  nr: number;
  head: number;
  tail: number;
  magic: number;
  compatFeatures: number;
  incompatFeatures: number;
  headerLength: number;
}

export function parseAioRingHeader(b: Uint8Array): AioRingHeader {
  const v = new DataView(b.buffer, b.byteOffset, AIO_RING_HEADER_SIZE);
  const u = (i: number) => v.getUint32(i * 4, true);
  return {
    id: u(0),
    nr: u(1),
    head: u(2),
    tail: u(3),
    magic: u(4),
    compatFeatures: u(5),
    incompatFeatures: u(6),
    headerLength: u(7),
  };
}

/** A little-endian u32, for writing the ring's head. */
export function u32Bytes(x: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, x, true);
  return b;
}

/** One iocb asking for a write of `nbytes` from `buf` to `fd`. */
export function writeIocb(fd: number, buf: bigint, nbytes: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(IOCB_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(16, IOCB_CMD_PWRITE, true);
  v.setUint32(20, fd, true);
  v.setBigUint64(24, buf, true);
  v.setBigUint64(32, BigInt(nbytes), true);
  return b;
}
