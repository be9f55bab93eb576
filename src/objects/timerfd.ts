/**
 * timerfd: its clock, whether it is armed, the time left and the interval, the expirations not yet
 * read (ticks) and its settime flags (absolute or relative), from fdinfo and timerfd_gettime in
 * the task. At restore a new timerfd
 * on the same clock is armed for what was left of the time once the time the tree was away is
 * taken off (a timer whose time ran out meanwhile fires at once, an interval timer counts the
 * expirations it missed), and its ticks are put back (TFD_IOC_SET_TICKS).
 *
 * The time left is kept as of the moment the tree was frozen (inventory's dump_uptime), so the
 * restore's reckoning needs no clock of the dump but that one.
 */
import { create } from "@bufbuild/protobuf";
import { fd_types, file_entrySchema } from "../images/gen/fdinfo_pb.ts";
import { type timerfd_entry, timerfd_entrySchema } from "../images/gen/timerfd_pb.ts";
import { NR, O, TFD_IOC_SET_TICKS } from "../../ffi/syscalls.ts";
import { itimer, ITIMER_SIZE, parseItimer, writeS64s } from "../../ffi/structs.ts";
import { CLOCK_BOOTTIME, clockNs } from "../../ffi/process.ts";
import type { Agent } from "../agent.ts";
import { addFdFile, emptyFown, type FdKind, fileFlags, registerFdKind } from "./files.ts";
import { refuse } from "./refusal.ts";
import { RestoreError } from "../errors.ts";

const TFD_TIMER_ABSTIME = 1;
const NS = 1_000_000_000n;

/** What fdinfo says of a timerfd: clock, settime flags, ticks; undefined when not as expected. */
function parseTimerfd(info: Map<string, string>) {
  const clockid = info.get("clockid") ?? "";
  const ticks = info.get("ticks") ?? "";
  const flags = info.get("settime flags") ?? "";
  if (!/^\d+$/.test(clockid) || !/^\d+$/.test(ticks) || !/^0[0-7]*$/.test(flags)) return undefined;
  return { clockid: Number(clockid), ticks: BigInt(ticks), flags: parseInt(flags, 8) };
}

function readFdinfo(pid: number, fd: number): Map<string, string> {
  const info = new Map<string, string>();
  for (const line of Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`).split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) info.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return info;
}

/**
 * The time left and the interval, asked in the task (timerfd_gettime), and when it was asked.
 * fdinfo would do for a one-shot timer, but it shows an interval timer that fired and was not read
 * since as "0 left": only timerfd_gettime moves it on to its next expiration (counting the ones in
 * between as ticks, which the task reads the same).
 */
function askTimeLeft(agent: Agent, fd: number): { value: bigint; interval: bigint; at: bigint } {
  agent.reset();
  const spec = agent.alloc(ITIMER_SIZE, new Uint8Array(ITIMER_SIZE));
  agent.call("timerfd_gettime", NR.timerfd_gettime, fd, spec);
  const at = clockNs(CLOCK_BOOTTIME);
  const t = parseItimer(agent.read(spec, ITIMER_SIZE));
  return { value: t.valueSec * NS + t.valueFrac, interval: t.intervalSec * NS + t.intervalFrac, at };
}

export const timerfdKind: FdKind = {
  name: "timerfd",
  type: fd_types.TIMERFD,
  detect(fd) {
    return fd.target === "anon_inode:[timerfd]";
  },
  dump(ctx, fd) {
    const left = askTimeLeft(ctx.agent, fd.fd);
    const info = readFdinfo(ctx.pid, fd.fd);
    const t = parseTimerfd(info);
    if (!t) {
      const shown = [...info].map(([k, v]) => `${k}: ${v}`).join("; ");
      refuse(
        ctx.pid,
        `fd ${fd.fd} (timerfd)`,
        `its fdinfo is not as expected (clockid, ticks, settime flags, it_value, it_interval): ${shown}`,
      );
    }
    // As of the freeze: the timer ran on while the tasks before this one were dumped.
    const frozen = ctx.session.frozenUptimeUs;
    const value = left.value > 0n && frozen !== undefined
      ? left.value + (left.at - frozen * 1000n)
      : left.value;
    return addFdFile(ctx, fd, (id) =>
      create(file_entrySchema, {
        type: fd_types.TIMERFD,
        id,
        tfd: create(timerfd_entrySchema, {
          id,
          flags: fileFlags(fd),
          fown: emptyFown(),
          clockid: t.clockid,
          ticks: t.ticks,
          settimeFlags: t.flags,
          vsec: value / NS,
          vnsec: value % NS,
          isec: left.interval / NS,
          insec: left.interval % NS,
        }),
      }));
  },
  open(ctx, entry) {
    const e = entry.tfd;
    if (!e) throw new RestoreError(`File ${entry.id} has no timerfd data`);
    const { agent } = ctx;
    const fd = agent.call(
      `timerfd_create(clock ${e.clockid})`,
      NR.timerfd_create,
      e.clockid,
      e.flags & O.NONBLOCK,
    );
    const { value, missed } = timeLeft(e, awayNs(ctx.session.frozenUptimeUs));
    const ticks = e.ticks + missed;
    agent.reset();
    if (value > 0n) {
      const abs = (e.settimeFlags & TFD_TIMER_ABSTIME) !== 0;
      const at = abs ? clockNs(e.clockid) + value : value;
      const interval = e.isec * NS + e.insec;
      const spec = agent.alloc(
        ITIMER_SIZE,
        itimer({
          intervalSec: interval / NS,
          intervalFrac: interval % NS,
          valueSec: at / NS,
          valueFrac: at % NS,
        }),
      );
      agent.call("timerfd_settime", NR.timerfd_settime, fd, e.settimeFlags, spec, 0);
    }
    if (ticks > 0n) {
      const count = agent.alloc(8, writeS64s([ticks]));
      agent.call("ioctl(TFD_IOC_SET_TICKS)", NR.ioctl, fd, TFD_IOC_SET_TICKS, count);
    }
    return Number(fd);
  },
};

/** How long ago the tree was frozen, by CLOCK_BOOTTIME; 0 when unknown or on another boot. */
function awayNs(frozenUptimeUs: bigint | undefined): bigint {
  if (frozenUptimeUs === undefined) return 0n;
  const away = clockNs(CLOCK_BOOTTIME) - frozenUptimeUs * 1000n;
  return away > 0n ? away : 0n;
}

/**
 * The time left to arm the timer with (0: disarmed) and the expirations it missed while away.
 * The missed ones of an interval timer: the first when its time ran out, then one per interval.
 */
function timeLeft(e: timerfd_entry, away: bigint): { value: bigint; missed: bigint } {
  const value = e.vsec * NS + e.vnsec;
  const interval = e.isec * NS + e.insec;
  // fdinfo (which CRIU dumps from) shows an interval timer that fired and was not read yet as
  // not armed: the kernel restarts it at the read. Its next expiry is one interval on.
  if (value === 0n) return { value: interval > 0n && e.ticks > 0n ? interval : 0n, missed: 0n };
  const left = value - away;
  if (left > 0n) return { value: left, missed: 0n };
  if (interval === 0n) return { value: 0n, missed: 1n };
  const late = -left;
  return { value: interval - (late % interval), missed: late / interval + 1n };
}

registerFdKind(timerfdKind);
