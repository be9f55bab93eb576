/**
 * The one place where criu-ts says it cannot dump an object of a task. Every "not supported" of
 * the object kinds comes here, so that plugins (-L, the plugins issue) can be asked first: a
 * plugin that takes the object answers instead of this refusal. The dump catches the error, resumes
 * the tree as it was and removes what it wrote.
 */
import { UnsupportedObjectError } from "../errors.ts";

/** Refuses `object` of process `pid` for `reason`, naming both: "Cannot dump OBJECT of process PID: REASON". */
export function refuse(pid: number, object: string, reason: string): never {
  throw new UnsupportedObjectError(pid, object, reason);
}
