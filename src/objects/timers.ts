/**
 * Interval timers (setitimer: real, virtual, prof) and POSIX timers (timer_create), with their
 * remaining time and interval. POSIX timers come back with their old ids through
 * PR_TIMER_CREATE_RESTORE_IDS (Linux 6.17+): timer_create then takes the id from *timerid.
 */
import { create } from "@bufbuild/protobuf";
import { compact } from "../compact.ts";
import {
  type itimer_entry,
  itimer_entrySchema,
  type posix_timer_entry,
  posix_timer_entrySchema,
  type task_timers_entry,
  task_timers_entrySchema,
} from "../images/gen/timer_pb.ts";
import { readTimers } from "../../ffi/proc.ts";
import { readPairs, writeS64s } from "../../ffi/structs.ts";
import { NR, PR } from "../../ffi/syscalls.ts";
import type { Agent, Query } from "../agent.ts";
import { RestoreError } from "../errors.ts";

const ITIMERS = [0, 1, 2] as const; // ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
const SIGEV_THREAD_ID = 4;
const NOTIFY_KIND: Record<string, number> = { signal: 0, none: 1, thread: 2 };

/** The three interval timers: real, virtual, prof. */
export function itimersQuery(agent: Agent): Query<itimer_entry[]> {
  const qs = ITIMERS.map((which) => agent.fetchQuery("getitimer", 32, (b) => [NR.getitimer, which, b]));
  return {
    calls: qs.flatMap((q) => q.calls),
    answer: (r) =>
      qs.map((q, i) => {
        const [isec, iusec, vsec, vusec] = readPairs(q.answer([r[i]!]), 4);
        return create(itimer_entrySchema, { isec: isec!, iusec: iusec!, vsec: vsec!, vusec: vusec! });
      }),
  };
}

function dumpPosixTimers(agent: Agent, pid: number, imageTid: (tid: number) => number): posix_timer_entry[] {
  // In ascending id order, as CRIU writes them.
  return readTimers(pid).sort((a, b) => a.id - b.id).map((t) => {
    agent.reset();
    const [isec, insec, vsec, vnsec] = readPairs(
      agent.fetch("timer_gettime", 32, (b) => [NR.timer_gettime, t.id, b]),
      4,
    );
    const overrun = Number(agent.call("timer_getoverrun", NR.timer_getoverrun, t.id));
    const threadId = t.notifyTid !== 0 && t.notifyThread;
    return create(
      posix_timer_entrySchema,
      compact({
        itId: t.id,
        clockId: t.clockId,
        siSigno: t.signal,
        itSigevNotify: (NOTIFY_KIND[t.notify] ?? 0) | (threadId ? SIGEV_THREAD_ID : 0),
        sivalPtr: t.sigevValue,
        overrun,
        isec: isec!,
        insec: insec!,
        vsec: vsec!,
        vnsec: vnsec!,
        // /proc names the thread as criu's PID namespace sees it; the task's own is what it asks for.
        notifyThreadId: threadId ? imageTid(t.notifyTid) : undefined,
      }),
    );
  });
}

/**
 * The timers of a task, given its interval timers (asked with itimersQuery). `imageTid` turns a
 * thread id as /proc shows it into the one the task's PID namespace knows.
 */
export function dumpTimers(
  agent: Agent,
  pid: number,
  itimers: readonly itimer_entry[],
  imageTid: (tid: number) => number = (tid) => tid,
): task_timers_entry {
  const [real, virt, prof] = itimers;
  return create(task_timers_entrySchema, { real, virt, prof, posix: dumpPosixTimers(agent, pid, imageTid) });
}

export function restoreTimers(agent: Agent, timers: task_timers_entry | undefined): void {
  if (!timers) return;
  [timers.real, timers.virt, timers.prof].forEach((it, which) => {
    if (it && (it.vsec !== 0n || it.vusec !== 0n)) restoreItimer(agent, which, it);
  });
  if (timers.posix.length === 0) return;
  agent.call("prctl(PR_TIMER_CREATE_RESTORE_IDS)", NR.prctl, PR.TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0);
  // /proc lists the newest timer first. Ids are given out in ascending order, so creating them
  // in that order gives the list back as it was, whatever order the image has them in.
  for (const t of [...timers.posix].sort((a, b) => a.itId - b.itId)) restorePosixTimer(agent, t);
  agent.call("prctl(PR_TIMER_CREATE_RESTORE_IDS)", NR.prctl, PR.TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0);
}

/**
 * The kernel adds one tick to a CPU-time itimer when it is set (so it never fires early), and
 * getitimer reports it: set, read back, and take the tick off again so the value is the dumped one.
 */
function restoreItimer(agent: Agent, which: number, it: itimer_entry): void {
  const set = (usec: bigint) => {
    agent.reset();
    const val = agent.alloc(32, writeS64s([it.isec, it.iusec, usec / 1_000_000n, usec % 1_000_000n]));
    agent.call("setitimer", NR.setitimer, which, val, 0);
  };
  const want = it.vsec * 1_000_000n + it.vusec;
  set(want);
  if (which === 0) return; // ITIMER_REAL counts wall time and gets no extra tick
  agent.reset();
  const [, , sec, usec] = readPairs(agent.fetch("getitimer", 32, (b) => [NR.getitimer, which, b]), 4);
  const extra = sec! * 1_000_000n + usec! - want;
  if (extra > 0n && extra < 20_000n && want > extra) set(want - extra);
}

function restorePosixTimer(agent: Agent, t: posix_timer_entry): void {
  agent.reset();
  // struct sigevent: sigev_value (8), sigev_signo (4), sigev_notify (4), then a union (tid at 16).
  const ev = new DataView(new ArrayBuffer(64));
  ev.setBigUint64(0, t.sivalPtr, true);
  ev.setInt32(8, t.siSigno, true);
  ev.setInt32(12, t.itSigevNotify, true);
  ev.setInt32(16, t.notifyThreadId ?? 0, true);
  const sev = agent.alloc(64, new Uint8Array(ev.buffer));
  const idBuf = agent.alloc(4, new Uint8Array(new Int32Array([t.itId]).buffer));
  agent.call(`timer_create(${t.itId})`, NR.timer_create, t.clockId, sev, idBuf);
  const got = new DataView(agent.read(idBuf, 4).buffer).getInt32(0, true);
  if (got !== t.itId) throw new RestoreError(`POSIX timer came back with id ${got}, expected ${t.itId}`);
  if (t.vsec === 0n && t.vnsec === 0n) return;
  const spec = agent.alloc(32, writeS64s([t.isec, t.insec, t.vsec, t.vnsec]));
  agent.call("timer_settime", NR.timer_settime, t.itId, 0, spec, 0);
}
