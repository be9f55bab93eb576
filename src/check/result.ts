/** What a probe answers, and the environment probes share during one `criu check` run. */
import { errnoName, SyscallError } from "../../ffi/errors.ts";
import { closeFd } from "../../ffi/probe.ts";
import { ProbeChild, withChild } from "./child.ts";

/** A probe's answer: whether the feature works here, and how that was found (or why it does not). */
export interface ProbeResult {
  supported: boolean;
  detail: string;
}

export function yes(detail: string): ProbeResult {
  return { supported: true, detail };
}

export function no(detail: string): ProbeResult {
  return { supported: false, detail };
}

/**
 * The name of an errno given as a kernel-style negative result (-22 → "EINVAL"), a positive one,
 * or the SyscallError of a call run in a probe child.
 */
export function errnoText(result: number | bigint | SyscallError): string {
  return result instanceof SyscallError ? result.code : errnoName(Math.abs(Number(result)));
}

/** Runs `fn` with an fd the kernel returned (or -errno), closing it afterwards. */
export function withFd<T>(fd: number, fn: (fd: number) => T): T {
  try {
    return fn(fd);
  } finally {
    closeFd(fd);
  }
}

/** Closes every fd of the list that is valid. */
export function closeAll(...fds: number[]): void {
  for (const fd of fds) closeFd(fd);
}

/**
 * Shared state of one run: a child that non-destructive probes share (started on first use),
 * fresh children for the destructive ones, and answers several probes build on.
 */
export class ProbeEnv {
  #shared: ProbeChild | null = null;
  #memo = new Map<string, unknown>();

  /** The shared child: probes may run syscalls in it but must leave it usable for the next. */
  child(): ProbeChild {
    this.#shared ??= ProbeChild.start();
    this.#shared.resetScratch();
    return this.#shared;
  }

  /** A child of its own for a probe that damages it (moves its vDSO, changes its namespaces...). */
  fresh<T>(fn: (child: ProbeChild) => T): T {
    return withChild(fn);
  }

  /** Computes a value once per run (several features read the same kernel answer). */
  once<T>(key: string, fn: () => T): T {
    if (!this.#memo.has(key)) this.#memo.set(key, fn());
    return this.#memo.get(key) as T;
  }

  /** Kills the shared child. Safe to call more than once. */
  close(): void {
    const c = this.#shared;
    this.#shared = null;
    c?.kill();
  }
}
