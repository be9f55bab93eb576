/**
 * AIO rings (io_setup): the kernel maps each context's completion ring into the task as a shared
 * area "/[aio] (deleted)", whose address is the context's id. Recorded as CRIU records them: the
 * area with status VMA_AREA_AIORING and every page stored, and an aio_ring_entry in mm-ID.img.
 *
 * On restore the area is first mapped as plain memory and filled with the ring as it was; then the
 * task makes a new context with io_setup, for as many requests as give a ring of the same size,
 * the new ring's tail is moved to the old one by completing writes to /dev/null (user space may
 * move the head itself, the kernel alone moves the tail), the old events are copied in, and the
 * new ring is moved over the old area with mremap, which also gives the context its old id.
 * Requests still in flight at dump time are not saved (CRIU does not save them either).
 */
import { refuse } from "./refusal.ts";
import { create } from "@bufbuild/protobuf";
import type { vma_entry } from "../images/gen/vma_pb.ts";
import { aio_ring_entrySchema } from "../images/gen/mm_pb.ts";
import {
  AIO_RING_HEAD_OFFSET,
  AIO_RING_HEADER_SIZE,
  AIO_RING_MAGIC,
  type AioRingHeader,
  IO_EVENT_SIZE,
  IOCB_SIZE,
  parseAioRingHeader,
  u32Bytes,
  writeIocb,
} from "../../ffi/aio.ts";
import { readMemory, writeMemory } from "../../ffi/memory.ts";
import { MREMAP, NR, O } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import { type MappingBacking, type MappingRestoreContext, registerMappingBacking } from "./mappings.ts";
import { PAGE_SIZE, VMA } from "./memory.ts";
import { readU64 } from "../../ffi/structs.ts";

/** Events a ring of `len` bytes holds. */
function eventsIn(len: number): number {
  return (len - AIO_RING_HEADER_SIZE) / IO_EVENT_SIZE;
}

/**
 * The nr_events to ask io_setup for to get a ring of `len` bytes: the kernel doubles the request,
 * adds two, and rounds the ring up to whole pages (CRIU estimates it the same way).
 */
export function requestsFor(len: number): number {
  return Math.floor((eventsIn(len) - 2) / 2);
}

function hex(x: bigint): string {
  return `0x${x.toString(16)}`;
}

/** What a ring's header must say for its state to be taken as it is. */
function ringProblem(h: AioRingHeader, len: number): string | null {
  if (h.magic !== AIO_RING_MAGIC) return `its magic is ${h.magic.toString(16)}`;
  if (h.headerLength !== AIO_RING_HEADER_SIZE) return `its header is ${h.headerLength} bytes`;
  if (h.nr !== eventsIn(len)) return `it holds ${h.nr} events in ${len} bytes`;
  if (h.head >= h.nr || h.tail >= h.nr) {
    return `its head ${h.head} or tail ${h.tail} is beyond its ${h.nr} events`;
  }
  return null;
}

/** Most iocbs submitted at once: their pointers go in the agent's scratch. */
const SUBMIT_BATCH = 512;

/**
 * Completes writes to /dev/null until the fresh ring's tail is where the old one's was. The head
 * is moved along so the ring never fills, and ends where the old one was.
 */
function advanceTail(ctx: MappingRestoreContext, ring: bigint, old: AioRingHeader): void {
  const count = old.tail < old.head ? old.nr + old.tail : old.tail;
  if (count === 0) return;
  const agent = ctx.agent;
  const pid = agent.pid;
  const perCall = Math.min(count, old.nr - 1, SUBMIT_BATCH);
  agent.reset();
  const fd = agent.call("open(/dev/null)", NR.open, agent.string("/dev/null"), O.WRONLY | O.CLOEXEC, 0);
  try {
    const byte = agent.alloc(8, new Uint8Array(8));
    const iocb = agent.alloc(IOCB_SIZE, writeIocb(Number(fd), byte, 1));
    const pointers = agent.alloc(perCall * 8, new Uint8Array(new BigUint64Array(perCall).fill(iocb).buffer));
    let done = 0;
    while (done < count) {
      const n = Number(
        agent.call("io_submit", NR.io_submit, ring, Math.min(count - done, perCall), pointers),
      );
      if (n <= 0) {
        throw new RestoreError(`io_submit made no progress rebuilding the AIO ring at ${hex(ring)}`);
      }
      done += n;
      writeMemory(pid, ring + BigInt(AIO_RING_HEAD_OFFSET), u32Bytes(Math.min(done, old.head)));
    }
  } finally {
    agent.attempt("close(aio ring fd)", NR.close, fd); // best effort: what failed before matters more
  }
}

/** Rebuilds the ring whose old content is in the area `e` now, and puts the new one in its place. */
function rebuildRing(ctx: MappingRestoreContext, e: vma_entry): void {
  const agent = ctx.agent;
  const pid = agent.pid;
  const len = Number(e.end - e.start);
  const where = `The AIO ring at ${hex(e.start)} of process ${pid}`;
  const old = parseAioRingHeader(readMemory(pid, e.start, AIO_RING_HEADER_SIZE));
  const problem = ringProblem(old, len);
  if (problem) throw new RestoreError(`${where} cannot be restored: ${problem} in the image`);
  agent.reset();
  const ctxId = agent.fetch("io_setup", 8, (b) => [NR.io_setup, requestsFor(len), b]);
  const ring = readU64(ctxId);
  const fresh = parseAioRingHeader(readMemory(pid, ring, AIO_RING_HEADER_SIZE));
  if (fresh.nr !== old.nr) {
    throw new RestoreError(
      `${where} cannot be restored: io_setup made a ring of ${fresh.nr} events, not ${old.nr}`,
    );
  }
  advanceTail(ctx, ring, old);
  const events = readMemory(pid, e.start + BigInt(AIO_RING_HEADER_SIZE), len - AIO_RING_HEADER_SIZE);
  writeMemory(pid, ring + BigInt(AIO_RING_HEADER_SIZE), events);
  agent.call("mremap(aio ring)", NR.mremap, ring, len, len, MREMAP.MAYMOVE | MREMAP.FIXED, e.start);
  ctx.log.debug(`${where}: rebuilt with head ${old.head}, tail ${old.tail} of ${old.nr} events`);
}

export const aioRingMapping: MappingBacking = {
  name: "AIO ring",
  detect(m) {
    return m.path.startsWith("/[aio]");
  },
  dump(ctx, m, entry) {
    const len = Number(m.end - m.start);
    const header = parseAioRingHeader(readMemory(ctx.pid, m.start, AIO_RING_HEADER_SIZE));
    const problem = len % PAGE_SIZE ? `it is ${len} bytes long` : ringProblem(header, len);
    if (problem) refuse(ctx.pid, `the AIO ring at ${hex(m.start)}`, problem);
    entry.status = VMA.AIORING; // only this bit, as CRIU records it
  },
  ownPages() {
    return "all";
  },
  dumpMm(mm, v) {
    const len = Number(v.entry.end - v.entry.start);
    mm.aios.push(create(aio_ring_entrySchema, { id: v.entry.start, nrReq: requestsFor(len), ringLen: len }));
  },
  owns(entry) {
    return (entry.status & VMA.AIORING) !== 0;
  },
  sameObject() {
    return false; // a ring belongs to its own task's context: never kept from a parent
  },
  open() {
    return -1n; // plain memory holding the old ring until finish() rebuilds it
  },
  finish(ctx, vmas) {
    for (const e of vmas) if (e.status & VMA.AIORING) rebuildRing(ctx, e);
  },
};

registerMappingBacking(aioRingMapping);
