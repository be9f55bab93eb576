/** What a probe answers, and the environment probes share during one `criu check` run. */
import { SyscallError } from "../../ffi/errors.ts";
import { type Answer, closeFd } from "../../ffi/probe.ts";
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

/** The errno name of a failed probe call (from ffi/probe.ts or a probe child), e.g. "EINVAL". */
export function errnoText(failure: SyscallError): string {
  return failure.code;
}

/**
 * What a probe call answered, for a message: the errno name when it failed, else its result (a
 * probe that expected 0 and got 1 says "result 1", not an errno).
 */
export function answerText(r: Answer | bigint): string {
  return r instanceof SyscallError ? r.code : `result ${r}`;
}

/** Runs `fn` with an open fd, closing it afterwards. */
export function withFd<T>(fd: number, fn: (fd: number) => T): T {
  try {
    return fn(fd);
  } finally {
    closeFd(fd);
  }
}

/**
 * Runs `fn` with the fd a probe call answered, closing it afterwards; when the call failed, the
 * answer is `failed` of its error instead.
 */
export function withOpened<T>(
  fd: Answer,
  fn: (fd: number) => T,
  failed: (error: SyscallError) => T,
): T {
  return fd instanceof SyscallError ? failed(fd) : withFd(fd, fn);
}

/** Closes every fd of the list that was opened (failed or never made calls are skipped). */
export function closeAll(...fds: (Answer | undefined)[]): void {
  for (const fd of fds) if (typeof fd === "number") closeFd(fd);
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
