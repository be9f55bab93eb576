/**
 * The log, as CRIU writes it: each line prefixed with the seconds since start, `(00.001234)`, and
 * with `--log-pid` the pid of the writing process. Levels: 0 errors only ... 4 debug (CRIU's -v).
 */

export const LOG_LEVEL = { error: 1, warn: 2, info: 3, debug: 4 } as const;

export class Log {
  #start = performance.now();
  #file: Deno.FsFile | null = null;
  #encoder = new TextEncoder();

  constructor(
    public level = 2,
    public logPid = false,
    /** Where errors go besides the file: CRIU prints them on stderr too. */
    private readonly toStderr = true,
  ) {}

  /** Sends the log to a file ("-" keeps stderr). */
  openFile(path: string): void {
    if (path === "-") return;
    this.#file = Deno.openSync(path, { write: true, create: true, truncate: true });
  }

  close(): void {
    this.#file?.close();
    this.#file = null;
  }

  #write(level: number, tag: string, msg: string): void {
    if (level > this.level && !(level === LOG_LEVEL.error)) return;
    const secs = ((performance.now() - this.#start) / 1000).toFixed(6).padStart(9, "0");
    const pid = this.logPid ? `${Deno.pid}: ` : "";
    const line = `(${secs}) ${pid}${tag}${msg}\n`;
    if (this.#file) this.#file.writeSync(this.#encoder.encode(line));
    if (level === LOG_LEVEL.error && this.toStderr) {
      Deno.stderr.writeSync(this.#encoder.encode(`Error: ${pid}${msg}\n`));
    } else if (!this.#file && level <= this.level) Deno.stderr.writeSync(this.#encoder.encode(line));
  }

  error(msg: string): void {
    this.#write(LOG_LEVEL.error, "Error: ", msg);
  }
  warn(msg: string): void {
    this.#write(LOG_LEVEL.warn, "Warn: ", msg);
  }
  info(msg: string): void {
    this.#write(LOG_LEVEL.info, "", msg);
  }
  debug(msg: string): void {
    this.#write(LOG_LEVEL.debug, "", msg);
  }
}

/** A log that drops everything: for library callers and tests. */
export function quietLog(): Log {
  return new Log(0, false, false);
}
