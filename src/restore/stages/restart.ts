/** The restart fix-ups: an interrupted syscall made to start again when the thread resumes. */
import { parseTimespec, type Regs, timespec, TIMESPEC_SIZE } from "../../../ffi/structs.ts";
import { ProcMem } from "../../../ffi/memory.ts";
import { applyRestart, restartedSleepTimespec } from "../../objects/cpu.ts";

/**
 * Makes an interrupted syscall start again on resume. Images hold it restarted already, as CRIU
 * stores it (see applyRestart), or, when made by criu-ts before it followed CRIU here, with the
 * kernel's -ERESTART* code, which gets the same treatment now. A sleep made again is shortened by
 * the time the task was away, as the kernel's own restart would have counted it.
 */
export function fixRestart(regs: Regs, sleep: SleepFixup): void {
  if (regs.getSigned("orig_ax") < 0n) return;
  applyRestart(regs);
  const timespec = restartedSleepTimespec(regs);
  if (timespec !== 0n) sleep(timespec);
  regs.set("orig_ax", -1);
}

/** Shortens a sleep's remaining time (a timespec in the task) by the time the task was away. */
export type SleepFixup = (remaining: bigint) => void;

/** A SleepFixup that takes `awayNs` off the timespec at the given address of task `pid`. */
export function sleepFixup(pid: number, awayNs: bigint): SleepFixup {
  return (addr) => {
    const mem = new ProcMem(pid);
    try {
      const left = parseTimespec(mem.read(addr, TIMESPEC_SIZE)) - awayNs;
      mem.write(addr, timespec(left > 0n ? left : 0n));
    } finally {
      mem.close();
    }
  };
}
