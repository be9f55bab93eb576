/**
 * A TypeScript client of the CRIU RPC protocol, for criu-ts or CRIU itself. It either starts
 * `criu swrk 3` with one end of a socketpair as fd 3 (as libcriu, pycriu and go-criu do), or
 * connects to a running `criu service`. A request goes out, NOTIFY messages are answered through
 * callbacks (one per action-script hook, as go-criu's Notify interface), and the final reply comes
 * back.
 *
 *     const criu = new CriuClient();
 *     await criu.dump({ pid, imagesDir: "/tmp/ckpt", leaveRunning: true }, {
 *       postDump() { console.log("images written"); },
 *     });
 *     const { pid: restored } = await criu.restore({ imagesDir: "/tmp/ckpt" });
 *
 * Each call of CriuClient opens a connection of its own (a new swrk, or a new service connection)
 * and closes it when the reply is in. Use `connect()` for several requests on one connection,
 * e.g. RESTORE and then WAIT_PID for the restored tree (which is a child of that swrk). criu-ts
 * serves a connection until the client closes it; upstream CRIU stops after one request unless it
 * carries `keepOpen: true`, which CRIU accepts only for some request types.
 *
 * Waiting for replies does not block the event loop; callbacks may be async.
 */
import { create, isFieldSet, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type criu_dump_resp,
  criu_dump_respSchema,
  type criu_features,
  criu_featuresSchema,
  type criu_notify,
  criu_notifySchema,
  criu_optsSchema,
  criu_req_type,
  criu_reqSchema,
  type criu_resp,
  criu_respSchema,
  type criu_restore_resp,
  type criu_version,
} from "../images/gen/rpc_pb.ts";
import { SeqpacketSocket } from "../../ffi/socket.ts";
import { spawn } from "../../ffi/spawn.ts";
import { closeFd } from "../../ffi/fd.ts";
import { signalProcess, waitRaw } from "../../ffi/wait.ts";
import { SIG } from "../../ffi/syscalls.ts";
import { RpcChannel } from "./channel.ts";

/** The options of a request, as a plain object: `{ pid: 42, imagesDir: "/tmp/x", shellJob: true }`. */
export type CriuOptionsInit = MessageInitShape<typeof criu_optsSchema>;
/** A whole request, for `request()`. */
export type CriuRequestInit = MessageInitShape<typeof criu_reqSchema>;

type Awaitable<T> = T | Promise<T>;

/**
 * Callbacks for the notifications of a dump or restore, one per hook. A callback that throws (or
 * rejects) makes the client answer with a failure: criu aborts the operation, and the call throws
 * a CriuRpcError whose `cause` is the callback's error. Hooks without a callback are agreed to.
 */
export interface CriuNotify {
  preDump?(): Awaitable<void>;
  postDump?(): Awaitable<void>;
  preRestore?(): Awaitable<void>;
  /** `pid`: the restored root task. */
  postRestore?(pid: number): Awaitable<void>;
  networkLock?(): Awaitable<void>;
  networkUnlock?(): Awaitable<void>;
  /** `pid`: the restored root task, which exists from here on. */
  setupNamespaces?(pid: number): Awaitable<void>;
  postSetupNamespaces?(): Awaitable<void>;
  preResume?(): Awaitable<void>;
  postResume?(): Awaitable<void>;
  /** The master side of an orphaned pty comes with this notification (CRIU); the fd is yours to close. */
  orphanPtsMaster?(fd: number | undefined): Awaitable<void>;
  /** Any notification without a callback of its own above (e.g. CRIU's query-ext-files). */
  other?(script: string, notify: criu_notify): Awaitable<void>;
}

/** criu answered a request with success = false (or a notification callback failed). */
export class CriuRpcError extends Error {
  override name = "CriuRpcError";
  constructor(readonly requestType: criu_req_type, readonly response: criu_resp, options?: ErrorOptions) {
    const reason = response.crErrmsg || "criu gave no reason";
    const errno = response.crErrno ? ` (errno ${response.crErrno})` : "";
    super(`${criu_req_type[requestType] ?? requestType} failed: ${reason}${errno}`, options);
  }
  get crErrno(): number {
    return this.response.crErrno;
  }
  get crErrmsg(): string {
    return this.response.crErrmsg;
  }
}

/** The connection broke, or criu answered something that is not a reply to the request. */
export class CriuConnectionError extends Error {
  override name = "CriuConnectionError";
}

/** The requests, for both a one-shot client and a long-lived connection. */
abstract class CriuRequests {
  /** Sends a request, answers its notifications, returns the final reply whatever its success. */
  abstract request(req: CriuRequestInit, notify?: CriuNotify): Promise<criu_resp>;

  async #call(
    type: criu_req_type,
    init: { opts?: CriuOptionsInit; features?: criu_features; pid?: number },
    notify?: CriuNotify,
  ): Promise<criu_resp> {
    const req = create(criu_reqSchema, { type });
    if (init.opts !== undefined) req.opts = create(criu_optsSchema, init.opts);
    if (init.features !== undefined) req.features = init.features;
    if (init.pid !== undefined) req.pid = init.pid;
    const resp = await this.request(req, notify);
    if (!resp.success) throw new CriuRpcError(type, resp);
    if (resp.type !== type) {
      throw new CriuConnectionError(
        `Expected a ${criu_req_type[type]} reply, got ${criu_req_type[resp.type] ?? resp.type}`,
      );
    }
    return resp;
  }

  /** Checkpoints the tree rooted at `opts.pid` (the caller itself when unset). */
  async dump(opts: CriuOptionsInit, notify?: CriuNotify): Promise<criu_dump_resp> {
    const resp = await this.#call(criu_req_type.DUMP, { opts }, notify);
    return resp.dump ?? create(criu_dump_respSchema);
  }

  /** Restores a tree; it runs detached from criu. Resolves with the root's pid. */
  async restore(opts: CriuOptionsInit, notify?: CriuNotify): Promise<criu_restore_resp> {
    const resp = await this.#call(criu_req_type.RESTORE, { opts }, notify);
    if (!resp.restore) throw new CriuConnectionError("The RESTORE reply carries no pid");
    return resp.restore;
  }

  async preDump(opts: CriuOptionsInit, notify?: CriuNotify): Promise<void> {
    await this.#call(criu_req_type.PRE_DUMP, { opts }, notify);
  }

  /** Whether criu can work on this system; throws CriuRpcError if not. */
  async check(opts?: CriuOptionsInit): Promise<void> {
    await this.#call(criu_req_type.CHECK, opts === undefined ? {} : { opts });
  }

  async version(): Promise<criu_version> {
    const resp = await this.#call(criu_req_type.VERSION, {});
    if (!resp.version) throw new CriuConnectionError("The VERSION reply carries no version");
    return resp.version;
  }

  /** Asks which of `features` criu supports; each asked-for feature is answered true or false. */
  async featureCheck(features: MessageInitShape<typeof criu_featuresSchema>): Promise<criu_features> {
    const resp = await this.#call(criu_req_type.FEATURE_CHECK, {
      features: create(criu_featuresSchema, features),
    });
    return resp.features ?? create(criu_featuresSchema);
  }

  /**
   * Waits for a child of the criu serving this connection (a tree it restored) to end; resolves
   * with the raw wait status. Only meaningful on a CriuConnection.
   */
  async waitPid(pid: number): Promise<number> {
    const resp = await this.#call(criu_req_type.WAIT_PID, { pid });
    return resp.status;
  }
}

/** Where to find criu: `criuPath` to start it as swrk, or a running service's socket. */
export interface CriuClientOptions {
  /** The criu to start as `criu swrk 3`. Default: criu-ts's own launcher, else `criu` in PATH. */
  criuPath?: string;
  /** Connect to a `criu service` listening here instead of starting criu. */
  serviceAddress?: string;
  /** Environment of the started criu (default: ours). */
  env?: Record<string, string>;
  /** Give the started criu our stdout and stderr (default true); otherwise both are /dev/null. */
  inheritOutput?: boolean;
  /**
   * More fds of ours for the started criu, by the number it gets them at (the fds `inherit_fd`
   * names: runc passes a container's new stdio pipes as criu's 0, 1 and 2). These win over
   * inheritOutput; 3 is taken by the RPC socket.
   */
  fds?: Record<number, number>;
}

/** One-shot requests: each call has a connection of its own. */
export class CriuClient extends CriuRequests {
  constructor(readonly options: CriuClientOptions = {}) {
    super();
  }

  /** A connection for several requests; close it when done. */
  connect(): Promise<CriuConnection> {
    const o = this.options;
    if (o.serviceAddress !== undefined) return Promise.resolve(CriuConnection.toService(o.serviceAddress));
    return Promise.resolve(CriuConnection.startSwrk(o.criuPath ?? defaultCriuPath(), o));
  }

  async request(req: CriuRequestInit, notify?: CriuNotify): Promise<criu_resp> {
    const conn = await this.connect();
    try {
      return await conn.request(req, notify);
    } finally {
      await conn.close();
    }
  }
}

/** One connection to criu: a swrk we started, or a service connection. */
export class CriuConnection extends CriuRequests {
  #channel: RpcChannel;
  #child: number | undefined;
  #closed = false;

  private constructor(channel: RpcChannel, child: number | undefined) {
    super();
    this.#channel = channel;
    this.#child = child;
  }

  /** Starts `criuPath swrk 3` with one end of a socketpair as its fd 3. */
  static startSwrk(
    criuPath: string,
    o: Omit<CriuClientOptions, "criuPath" | "serviceAddress"> = {},
  ): CriuConnection {
    const path = resolveExecutable(criuPath);
    const [ours, theirs] = SeqpacketSocket.pair();
    let child: number;
    try {
      const fds: Record<number, number> = { 3: theirs.fd };
      if (o.inheritOutput !== false) Object.assign(fds, { 1: 1, 2: 2 });
      for (const [at, ours] of Object.entries(o.fds ?? {})) if (Number(at) !== 3) fds[Number(at)] = ours;
      child = spawn(path, [path, "swrk", "3"], { fds, ...(o.env ? { env: o.env } : {}) });
    } catch (e) {
      ours.close();
      throw e;
    } finally {
      theirs.close();
    }
    return new CriuConnection(new RpcChannel(ours), child);
  }

  /** Connects to a `criu service` socket. */
  static toService(address: string): CriuConnection {
    return new CriuConnection(new RpcChannel(SeqpacketSocket.connect(address)), undefined);
  }

  /** The pid of the swrk this connection started, if it started one. */
  get pid(): number | undefined {
    return this.#child;
  }

  async request(req: CriuRequestInit, notify?: CriuNotify): Promise<criu_resp> {
    if (this.#closed) throw new CriuConnectionError("The connection is closed");
    const message = create(criu_reqSchema, req);
    const type = message.type;
    // images_dir_fd is a required field (default -1): an options message must always carry it.
    if (message.opts !== undefined && !isFieldSet(message.opts, criu_optsSchema.field.imagesDirFd)) {
      message.opts.imagesDirFd = -1;
    }
    if (notify !== undefined && message.opts !== undefined) message.opts.notifyScripts = true;
    this.#channel.send(criu_reqSchema, message);
    let callbackError: unknown;
    let callbackFailed = false;
    for (;;) {
      const got = await this.#channel.receiveAsync(criu_respSchema);
      if (got === null) {
        const cause = callbackFailed ? { cause: callbackError } : undefined;
        throw new CriuConnectionError(
          `criu closed the connection before answering ${criu_req_type[type] ?? type}`,
          cause,
        );
      }
      const resp = got.message;
      if (resp.type !== criu_req_type.NOTIFY) {
        got.fds.forEach(closeFd);
        if (callbackFailed) throw new CriuRpcError(type, resp, { cause: callbackError });
        return resp;
      }
      let ok = !callbackFailed;
      if (ok) {
        try {
          await dispatch(notify, resp.notify ?? create(criu_notifySchema), got.fds);
        } catch (e) {
          callbackError = e;
          callbackFailed = true;
          ok = false;
        }
      } else {
        got.fds.forEach(closeFd);
      }
      try {
        this.#channel.send(
          criu_reqSchema,
          create(criu_reqSchema, { type: criu_req_type.NOTIFY, notifySuccess: ok }),
        );
      } catch {
        // criu gave up meanwhile; its closing is reported by the next receive
      }
    }
  }

  /**
   * Closes the connection; for a swrk we started, waits for it to end (killing it after
   * `timeoutMs`) and resolves with its exit code (null if killed by a signal or not ours).
   */
  async close(timeoutMs = 10_000): Promise<number | null> {
    if (this.#closed) return null;
    this.#closed = true;
    this.#channel.close();
    const child = this.#child;
    if (child === undefined) return null;
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const done = waitRaw(child, true);
      if (done !== null) return (done.status & 0x7f) === 0 ? (done.status >> 8) & 0xff : null;
      if (performance.now() > deadline) signalProcess(child, SIG.KILL);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Calls the callback for notification `n`; fds that came with it go to orphanPtsMaster or are closed. */
async function dispatch(notify: CriuNotify | undefined, n: criu_notify, fds: number[]): Promise<void> {
  const handsFd = n.script === "orphan-pts-master" && notify?.orphanPtsMaster !== undefined;
  const fd = handsFd ? fds.shift() : undefined;
  fds.forEach(closeFd);
  if (notify === undefined) return;
  switch (n.script) {
    case "pre-dump":
      if (notify.preDump) return await notify.preDump();
      break;
    case "post-dump":
      if (notify.postDump) return await notify.postDump();
      break;
    case "pre-restore":
      if (notify.preRestore) return await notify.preRestore();
      break;
    case "post-restore":
      if (notify.postRestore) return await notify.postRestore(n.pid);
      break;
    case "network-lock":
      if (notify.networkLock) return await notify.networkLock();
      break;
    case "network-unlock":
      if (notify.networkUnlock) return await notify.networkUnlock();
      break;
    case "setup-namespaces":
      if (notify.setupNamespaces) return await notify.setupNamespaces(n.pid);
      break;
    case "post-setup-namespaces":
      if (notify.postSetupNamespaces) return await notify.postSetupNamespaces();
      break;
    case "pre-resume":
      if (notify.preResume) return await notify.preResume();
      break;
    case "post-resume":
      if (notify.postResume) return await notify.postResume();
      break;
    case "orphan-pts-master":
      if (notify.orphanPtsMaster) return await notify.orphanPtsMaster(fd);
      break;
  }
  await notify.other?.(n.script, n);
}

/** An executable named without a slash is looked up in PATH, as execvp would. */
function resolveExecutable(name: string): string {
  if (name.includes("/")) return name;
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    const candidate = `${dir || "."}/${name}`;
    try {
      const st = Deno.statSync(candidate);
      if (st.isFile && ((st.mode ?? 0) & 0o111) !== 0) return candidate;
    } catch {
      // not here
    }
  }
  throw new CriuConnectionError(`Cannot find ${name} in PATH`);
}

/** criu-ts's own launcher when these sources are on disk, else `criu` from PATH. */
export function defaultCriuPath(): string {
  const launcher = new URL("../../scripts/criu", import.meta.url);
  if (launcher.protocol === "file:") {
    const path = decodeURIComponent(launcher.pathname);
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not a source checkout
    }
  }
  return "criu";
}
