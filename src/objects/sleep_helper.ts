/**
 * A helper process a dump drives by remote syscalls where criu itself cannot act (criu runs
 * threads, and a threaded process cannot join another mount or time namespace): coreutils' sleep,
 * seized and stopped before it runs any code of its own, then killed and reaped.
 */
import * as pt from "../../ffi/ptrace.ts";
import { spawn } from "../../ffi/spawn.ts";
import { readMaps } from "../../ffi/proc.ts";
import { findSyscallInstruction } from "../../ffi/remote.ts";
import { SIG } from "../../ffi/syscalls.ts";
import { DumpError } from "../errors.ts";

function sleepBinary(purpose: string): string {
  for (const p of ["/bin/sleep", "/usr/bin/sleep"]) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // try the next
    }
  }
  throw new DumpError(`${purpose} needs coreutils' sleep (/bin/sleep) as a helper`);
}

/**
 * Runs `work` with a stopped, seized helper (given `fds` at their numbers) and the address of a
 * syscall instruction in it (in its vDSO), for a RemoteThread or an Agent to enter.
 */
export function withSleepHelper<T>(
  purpose: string,
  fds: Record<number, number>,
  work: (helper: number, syscallAt: bigint) => T,
): T {
  const helper = spawn(sleepBinary(purpose), ["sleep", "600"], { fds, env: {} });
  try {
    pt.seize(helper, pt.PTRACE_O.EXITKILL);
    pt.interrupt(helper);
    const st = pt.wait(helper);
    if (st?.kind !== "stopped") {
      throw new DumpError(`${purpose}: the helper ${helper} did not stop (${st?.kind})`);
    }
    const vdso = readMaps(helper).find((m) => m.path === "[vdso]");
    if (!vdso) throw new DumpError(`${purpose}: the helper ${helper} has no [vdso]`);
    return work(helper, findSyscallInstruction(helper, vdso.start, vdso.end));
  } finally {
    try {
      pt.kill(helper, SIG.KILL);
    } catch {
      // already gone
    }
    pt.reapAll([helper]);
  }
}
