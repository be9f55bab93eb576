/**
 * Writes finished image files from a worker thread, while the main thread goes on dumping.
 *
 * Creating a file costs this kind of machine from 40 µs to over 500 µs of kernel time (ext4 and its
 * journal), and a dump of a 500-thread process creates 500 core images. Done in turn with the
 * ptrace work that is up to a quarter of a second more frozen time; on a second thread it overlaps
 * with that work. Only bytes travel to the worker (moved, not copied): encoding stays here.
 *
 * The dump stays synchronous: the worker counts finished files in shared memory, and finish()
 * sleeps on that counter (Atomics.wait) until it reaches the number queued. The worker is plain
 * JavaScript given as text, so it needs no file of its own next to a bundle or in a binary.
 */
import { errnoOfName, SyscallError } from "../../ffi/errors.ts";

/** Slots of the shared state. */
const DONE = 0; // files handled so far
const FAILED = 1; // 1 + the number of the first file that could not be written, or 0
const TEXT_LEN = 2; // length of the failure text in the shared text buffer
const TEXT_ROOM = 1024;
/** Files sent to the worker per message: a message costs tens of microseconds, whatever it holds. */
const FILES_PER_MESSAGE = 32;
/** No progress for this long means the worker is gone. */
const STALL_MS = 60_000;

const WORKER_SOURCE = `
let state, text;
self.onmessage = ({ data }) => {
  if (data.state) {
    state = new Int32Array(data.state);
    text = new Uint8Array(data.text);
    return;
  }
  data.files.forEach(({ path, bytes }, i) => {
    if (Atomics.load(state, ${FAILED}) === 0) {
      try {
        Deno.writeFileSync(path, bytes, { mode: 0o644 });
      } catch (e) {
        const why = new TextEncoder().encode((e?.code ?? "") + "\\n" + (e?.message ?? e)).subarray(0, text.length);
        text.set(why);
        state[${TEXT_LEN}] = why.length;
        Atomics.store(state, ${FAILED}, data.first + i + 1);
      }
    }
    Atomics.add(state, ${DONE}, 1);
    Atomics.notify(state, ${DONE});
  });
};
`;

export class BackgroundWriter {
  #worker: Worker | undefined;
  #state = new Int32Array(new SharedArrayBuffer(4 * 4));
  #text = new Uint8Array(new SharedArrayBuffer(TEXT_ROOM));
  #paths: string[] = [];
  /** Files not sent yet, and the number of the first of them. */
  #batch: { path: string; bytes: Uint8Array<ArrayBuffer> }[] = [];
  #batchFirst = 0;

  /** Starts the worker now, so that it is ready by the time the first image is. */
  start(): void {
    if (this.#worker) return;
    const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    this.#worker = new Worker(url, { type: "module" });
    URL.revokeObjectURL(url);
    this.#worker.postMessage({ state: this.#state.buffer, text: this.#text.buffer });
  }

  /** Queues `bytes` to be written to `path` (created, or truncated, mode 0644 as CRIU). */
  write(path: string, bytes: Uint8Array): void {
    this.start();
    // The buffer moves to the worker: it must be the whole of one we own.
    const own = bytes.buffer instanceof ArrayBuffer && bytes.byteOffset === 0 &&
        bytes.byteLength === bytes.buffer.byteLength
      ? bytes as Uint8Array<ArrayBuffer>
      : bytes.slice();
    if (this.#batch.length === 0) this.#batchFirst = this.#paths.length;
    this.#batch.push({ path, bytes: own });
    this.#paths.push(path);
    if (this.#batch.length >= FILES_PER_MESSAGE) this.#send();
  }

  #send(): void {
    if (this.#batch.length === 0) return;
    const files = this.#batch;
    this.#batch = [];
    this.#worker!.postMessage({ files, first: this.#batchFirst }, files.map((f) => f.bytes.buffer));
  }

  /**
   * Waits until every queued file is written and stops the worker; throws a SyscallError naming
   * the first file that could not be written.
   */
  finish(): void {
    if (!this.#worker) return;
    try {
      this.#send();
      this.#waitAll();
      const failed = Atomics.load(this.#state, FAILED);
      if (failed > 0) {
        const text = new TextDecoder().decode(this.#text.slice(0, this.#state[TEXT_LEN]));
        const [code = "", ...why] = text.split("\n");
        throw new SyscallError(`write(${this.#paths[failed - 1]})`, errnoOfName(code), why.join("\n"));
      }
    } finally {
      this.#worker.terminate();
      this.#worker = undefined;
      this.#paths = [];
      this.#batch = [];
      this.#state.fill(0);
    }
  }

  #waitAll(): void {
    for (;;) {
      const done = Atomics.load(this.#state, DONE);
      if (done >= this.#paths.length) return;
      if (Atomics.wait(this.#state, DONE, done, STALL_MS) === "timed-out") {
        throw new Error(`The image writer thread stopped after ${done} of ${this.#paths.length} files`);
      }
    }
  }
}
