/**
 * CPU state of a thread: general registers and the XSAVE area (x87, SSE, AVX, AVX-512, PKRU),
 * converted to and from thread_info_x86 as CRIU lays it out.
 *
 * XSAVE offsets below are the standard (non-compacted) layout that PTRACE_GETREGSET(NT_X86_XSTATE)
 * returns; restore starts from the puppet's own XSAVE buffer, so sizes always match this CPU.
 */
import { create } from "@bufbuild/protobuf";
import {
  type thread_info_x86,
  thread_info_x86Schema,
  user_x86_fpregs_entrySchema,
  user_x86_regs_entrySchema,
  user_x86_regs_mode,
  user_x86_xsave_entrySchema,
} from "../images/gen/core-x86_pb.ts";
import {
  parseXsave,
  REG_NAMES,
  type RegName,
  Regs,
  writeXsave,
  XSAVE_COMPONENTS,
  type XsaveComponent,
} from "../../ffi/structs.ts";
import { ERRNO } from "../../ffi/errors.ts";
import { NR } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";

/** The end of user space on x86_64 with 4-level paging, less the guard page. */
const TASK_SIZE_MAX = (1n << 47n) - 4096n;
/** The image's field (user_x86_xsave_entry) of each extended XSAVE component. */
const XSAVE_FIELDS: Record<XsaveComponent, string> = {
  ymmh: "ymmhSpace",
  bndregs: "bndregState",
  bndcsr: "bndcsrState",
  opmask: "opmaskReg",
  zmmUpper: "zmmUpper",
  hi16Zmm: "hi16Zmm",
  pkru: "pkru",
};
const COMPONENT_NAMES = Object.keys(XSAVE_FIELDS) as XsaveComponent[];

/**
 * Each user_regs_struct slot with the gpregs field that holds it (the image spells a few of them
 * in camelCase), worked out once: every thread of a dump or restore goes through them.
 */
const GP_FIELDS = REG_NAMES.map((reg) =>
  [reg, reg.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())] as const
);

const RESTART_ERRORS = new Set([ERRNO.ERESTARTSYS, ERRNO.ERESTARTNOINTR, ERRNO.ERESTARTNOHAND].map(BigInt));
const TIMER_ABSTIME = 1n;

/**
 * Where a relative sleep keeps its request and its `rem` timespec (registers of the call), or
 * undefined for any other call. An absolute clock_nanosleep has a deadline, not a duration.
 */
function relativeSleep(regs: Regs, nr: bigint): { request: RegName; rem: RegName } | undefined {
  if (nr === BigInt(NR.nanosleep)) return { request: "di", rem: "si" };
  if (nr === BigInt(NR.clock_nanosleep) && !(regs.get("si") & TIMER_ABSTIME)) {
    return { request: "dx", rem: "r10" };
  }
  return undefined;
}

/**
 * A sleep interrupted through its restart block can be made again: an absolute one as it is, a
 * relative one from what the kernel wrote in its `rem` timespec, which becomes the request. False
 * when there is nothing to go on (no `rem`, or a call keeping its state in the restart block).
 */
function sleepFromRemaining(regs: Regs, nr: bigint): boolean {
  if (nr === BigInt(NR.clock_nanosleep) && regs.get("si") & TIMER_ABSTIME) return true;
  const sleep = relativeSleep(regs, nr);
  if (!sleep || regs.get(sleep.rem) === 0n) return false;
  regs.set(sleep.request, regs.get(sleep.rem));
  return true;
}

/**
 * Applies to a thread stopped inside an interrupted syscall the restart the kernel would have
 * made, as CRIU does before storing registers: the call is made again on resume. A call that
 * restarts through its restart block returns EINTR, as with CRIU, except sleeps, which go on
 * for the time they had left (CRIU-readable, and better). orig_ax keeps the call's number.
 */
export function applyRestart(regs: Regs): void {
  const orig = regs.getSigned("orig_ax");
  if (orig < 0n) return;
  const err = -regs.getSigned("ax");
  const restart = RESTART_ERRORS.has(err) ||
    (err === BigInt(ERRNO.ERESTART_RESTARTBLOCK) && sleepFromRemaining(regs, orig));
  if (restart) {
    regs.set("ax", orig);
    regs.set("ip", regs.get("ip") - 2n);
  } else if (err === BigInt(ERRNO.ERESTART_RESTARTBLOCK)) {
    regs.set("ax", -ERRNO.EINTR);
  }
}

/** The timespec address of a relative sleep that `applyRestart` made again, or 0. */
export function restartedSleepTimespec(regs: Regs): bigint {
  const nr = regs.getSigned("orig_ax");
  const sleep = relativeSleep(regs, nr);
  return sleep && regs.getSigned("ax") === nr ? regs.get(sleep.request) : 0n;
}

export function threadInfoFromCpu(
  regs: Regs,
  xstate: Uint8Array<ArrayBuffer>,
  clearTidAddr: bigint,
): thread_info_x86 {
  const gp: Record<string, bigint> = {};
  for (const [reg, field] of GP_FIELDS) gp[field] = regs.get(reg);
  const { fx, extended } = parseXsave(xstate);
  const xsave: Record<string, unknown> = { xstateBv: extended?.xstateBv ?? 0n };
  for (const [name, words] of Object.entries(extended?.components ?? {})) {
    xsave[XSAVE_FIELDS[name as XsaveComponent]] = words;
  }
  return create(thread_info_x86Schema, {
    clearTidAddr,
    gpregs: create(user_x86_regs_entrySchema, { ...gp, mode: user_x86_regs_mode.NATIVE }),
    fpregs: create(user_x86_fpregs_entrySchema, {
      ...fx,
      xsave: extended ? create(user_x86_xsave_entrySchema, xsave) : undefined,
    }),
  });
}

export function regsFromThreadInfo(ti: thread_info_x86): Regs {
  const regs = new Regs();
  const gp = ti.gpregs as unknown as Record<string, bigint> | undefined;
  if (!gp) throw new RestoreError("The core image has no general registers");
  for (const [reg, field] of GP_FIELDS) regs.set(reg, gp[field] ?? 0n);
  return regs;
}

/**
 * What is wrong with a thread's saved CPU state, or undefined: registers missing, or FPU areas
 * longer than the XSAVE layout has room for (they are copied into it word by word).
 */
export function threadInfoProblem(ti: thread_info_x86): string | undefined {
  const gp = ti.gpregs;
  if (gp) {
    // What PTRACE_SETREGSET refuses with EIO (arch/x86/kernel/ptrace.c, putreg): selectors not
    // of user privilege, a null code or stack segment, bases outside user space.
    for (
      const [name, v] of [["cs", gp.cs], ["ss", gp.ss], ["ds", gp.ds], ["es", gp.es], ["fs", gp.fs], [
        "gs",
        gp.gs,
      ]] as const
    ) {
      const zeroOk = name !== "cs" && name !== "ss";
      if ((v !== 0n || !zeroOk) && (v & 3n) !== 3n || v > 0xffffn) return `an invalid ${name} selector ${v}`;
    }
    for (const [name, v] of [["fs_base", gp.fsBase], ["gs_base", gp.gsBase]] as const) {
      if (v >= TASK_SIZE_MAX) return `a ${name} of 0x${v.toString(16)}, outside user space`;
    }
  }
  const fp = ti.fpregs;
  if (!fp) return undefined;
  if (fp.stSpace.length > 32) return `${fp.stSpace.length} x87 register words, expected 32`;
  if (fp.xmmSpace.length > 64) return `${fp.xmmSpace.length} SSE register words, expected 64`;
  for (const name of COMPONENT_NAMES) {
    const field = XSAVE_FIELDS[name];
    const n = XSAVE_COMPONENTS[name].words;
    const words = (fp.xsave as unknown as Record<string, unknown[]> | undefined)?.[field] ?? [];
    if (words.length > n) return `${words.length} words of XSAVE ${field}, expected ${n}`;
  }
  return undefined;
}

/** Fills `template` (the puppet's own XSAVE buffer) with the image's FPU state. */
export function xstateFromThreadInfo(
  ti: thread_info_x86,
  template: Uint8Array<ArrayBuffer>,
): Uint8Array<ArrayBuffer> {
  const fp = ti.fpregs;
  if (!fp) return template.slice();
  const xs = fp.xsave;
  if (!xs) return writeXsave(template, fp);
  // Only components this CPU's buffer has room for can come back; xstate_bv says which are live.
  const fields = xs as unknown as Record<string, (number | bigint)[]>;
  const components = Object.fromEntries(
    COMPONENT_NAMES.map((name) => [name, fields[XSAVE_FIELDS[name]] ?? []]),
  );
  return writeXsave(template, fp, { xstateBv: xs.xstateBv, components });
}
