/**
 * Errors in options. A UsageError means the command line, a config file or an RPC config file is wrong;
 * the caller prints it (and usually the short usage) and exits with status 1.
 */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export function isUsageError(error: unknown): error is UsageError {
  return error instanceof UsageError;
}

/**
 * Thrown by an option's store function when its argument is malformed. It only says what was
 * expected; the parser knows the option's spelling and the value, and turns it into a UsageError.
 */
export class InvalidValue extends Error {
  constructor(readonly expected: string) {
    super(`Expected ${expected}`);
    this.name = "InvalidValue";
  }
}
