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
import {
  int32Bytes,
  INT_SIZE,
  itimer,
  ITIMER_SIZE,
  parseItimer,
  readInt32,
  sigevent,
  SIGEVENT_SIZE,
} from "../../ffi/structs.ts";
import { NR, PR } from "../../ffi/syscalls.ts";
import type { Agent, Query } from "../agent.ts";
import { RestoreError } from "../errors.ts";

const ITIMERS = [0, 1, 2] as const; // ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
const SIGEV_THREAD_ID = 4;
const NOTIFY_KIND: Record<string, number> = { signal: 0, none: 1, thread: 2 };

/** The three interval timers: real, virtual, prof. */
export function itimersQuery(agent: Agent): Query<itimer_entry[]> {
  const qs = ITIMERS.map((which) =>
    agent.fetchQuery("getitimer", ITIMER_SIZE, (b) => [NR.getitimer, which, b])
  );
  return {
    calls: qs.flatMap((q) => q.calls),
    answer: (r) =>
      qs.map((q, i) => {
        const t = parseItimer(q.answer([r[i]!]));
        return create(itimer_entrySchema, {
          isec: t.intervalSec,
          iusec: t.intervalFrac,
          vsec: t.valueSec,
          vusec: t.valueFrac,
        });
      }),
  };
}

function dumpPosixTimers(agent: Agent, pid: number, imageTid: (tid: number) => number): posix_timer_entry[] {
  // In ascending id order, as CRIU writes them.
  return readTimers(pid).sort((a, b) => a.id - b.id).map((t) => {
    agent.reset();
    const spec = parseItimer(agent.fetch("timer_gettime", ITIMER_SIZE, (b) => [NR.timer_gettime, t.id, b]));
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
        isec: spec.intervalSec,
        insec: spec.intervalFrac,
        vsec: spec.valueSec,
        vnsec: spec.valueFrac,
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
  agent.call(
    "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
    NR.prctl,
    PR.TIMER_CREATE_RESTORE_IDS,
    PR.TIMER_CREATE_RESTORE_IDS_ON,
    0,
    0,
    0,
  );
  // /proc lists the newest timer first. Ids are given out in ascending order, so creating them
  // in that order gives the list back as it was, whatever order the image has them in.
  for (const t of [...timers.posix].sort((a, b) => a.itId - b.itId)) restorePosixTimer(agent, t);
  agent.call(
    "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
    NR.prctl,
    PR.TIMER_CREATE_RESTORE_IDS,
    PR.TIMER_CREATE_RESTORE_IDS_OFF,
    0,
    0,
    0,
  );
}

/**
 * The kernel adds one tick to a CPU-time itimer when it is set (so it never fires early), and
 * getitimer reports it: set, read back, and take the tick off again so the value is the dumped one.
 */
function restoreItimer(agent: Agent, which: number, it: itimer_entry): void {
  const set = (usec: bigint) => {
    agent.reset();
    const val = agent.alloc(
      ITIMER_SIZE,
      itimer({
        intervalSec: it.isec,
        intervalFrac: it.iusec,
        valueSec: usec / 1_000_000n,
        valueFrac: usec % 1_000_000n,
      }),
    );
    agent.call("setitimer", NR.setitimer, which, val, 0);
  };
  const want = it.vsec * 1_000_000n + it.vusec;
  set(want);
  if (which === 0) return; // ITIMER_REAL counts wall time and gets no extra tick
  agent.reset();
  const now = parseItimer(agent.fetch("getitimer", ITIMER_SIZE, (b) => [NR.getitimer, which, b]));
  const extra = now.valueSec * 1_000_000n + now.valueFrac - want;
  if (extra > 0n && extra < 20_000n && want > extra) set(want - extra);
}

function restorePosixTimer(agent: Agent, t: posix_timer_entry): void {
  agent.reset();
  const ev = sigevent({
    value: t.sivalPtr,
    signo: t.siSigno,
    notify: t.itSigevNotify,
    threadId: t.notifyThreadId ?? 0,
  });
  const sev = agent.alloc(SIGEVENT_SIZE, ev);
  const idBuf = agent.alloc(INT_SIZE, int32Bytes(t.itId));
  agent.call(`timer_create(${t.itId})`, NR.timer_create, t.clockId, sev, idBuf);
  const got = readInt32(agent.read(idBuf, INT_SIZE));
  if (got !== t.itId) throw new RestoreError(`POSIX timer came back with id ${got}, expected ${t.itId}`);
  if (t.vsec === 0n && t.vnsec === 0n) return;
  const spec = agent.alloc(
    ITIMER_SIZE,
    itimer({ intervalSec: t.isec, intervalFrac: t.insec, valueSec: t.vsec, valueFrac: t.vnsec }),
  );
  agent.call("timer_settime", NR.timer_settime, t.itId, 0, spec, 0);
}
