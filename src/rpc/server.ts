/**
 * Serving one RPC connection: read a `criu_req`, carry it out, answer with one `criu_resp` (after
 * any NOTIFY exchanges), and go on until the client closes the connection. CRIU ends a connection
 * after one request unless `keep_open` is set, and accepts keep_open only for a few request types;
 * we keep serving whatever the flag says, which every CRIU client also works with.
 *
 * Request types:
 *   DUMP, RESTORE      the core's dump() and restore(); a restore always returns once the tree
 *                      runs (detached), with the root's pid. The restored root is our child, so a
 *                      WAIT_PID on the same connection can collect it.
 *   CHECK              the probes of `criu check` (core features): success, or what is missing
 *   VERSION            the CRIU version criu-ts follows (help.ts CRIU_VERSION)
 *   FEATURE_CHECK      mem_track, lazy_pages, pidfd_store: all false, as none exists yet
 *   WAIT_PID           waitpid() on a child of ours; the raw status in `status`
 *   PRE_DUMP, SINGLE_PRE_DUMP, PAGE_SERVER, PAGE_SERVER_CHLD, CPUINFO_DUMP, CPUINFO_CHECK
 *                      answered "not supported yet" (cr_errno EOPNOTSUPP), of the request's type
 *   NOTIFY             only valid as an answer to our notification; alone, an error
 *   anything else      an error reply of type EMPTY, as CRIU sends
 */
import { create } from "@bufbuild/protobuf";
import {
  criu_dump_respSchema,
  criu_featuresSchema,
  type criu_req,
  criu_req_type,
  criu_reqSchema,
  type criu_resp,
  criu_respSchema,
  criu_restore_respSchema,
  criu_versionSchema,
} from "../images/gen/rpc_pb.ts";
import { dump } from "../dump/dump.ts";
import { restore } from "../restore/restore.ts";
import { Log } from "../log.ts";
import type { Options } from "../options/options.ts";
import { dumpArguments, imagesDirOf, restoreArguments } from "../options/core.ts";
import { withPlugins } from "../plugins/plugins.ts";
import { STAGE } from "../plugins/api.ts";
import { CRIU_VERSION } from "../version.ts";
import { summarize } from "../check/summary.ts";
import { featuresFor, runProbes } from "../check/probes.ts";
import type { Hooks } from "../actions/hooks.ts";
import { ScriptHooks } from "../actions/scripts.ts";
import type { PeerCredentials } from "../../ffi/socket.ts";
import { closeFd } from "../../ffi/fd.ts";
import { processExists } from "../../ffi/process.ts";
import { describeStatus, waitRaw } from "../../ffi/wait.ts";
import { isSyscallError, osReason } from "../../ffi/errors.ts";
import type { RpcChannel } from "./channel.ts";
import { NotifyHooks } from "./notify.ts";
import { type RequestKind, type RequestSetup, type ServeMode, setupRequest } from "./options.ts";
import { CR_ERRNO, crErrnoOf, messageOf, RpcProtocolError, RpcRequestError } from "./errors.ts";

/** What serving a connection needs. */
export interface ServerContext {
  channel: RpcChannel;
  /** The options of this criu process (command line and config files): the base of every request. */
  base: Options;
  /** This process's own log, for what happens outside a request. */
  log: Log;
  mode: ServeMode;
  peer: PeerCredentials;
}

/** A handler's answer; null when no answer must be sent (the client dumped itself and is gone). */
type Reply = criu_resp | null;

/** Serves requests until the client closes the connection. Returns false if the last request failed. */
export async function serveConnection(ctx: ServerContext): Promise<boolean> {
  const { log } = ctx;
  log.info(`Serving RPC requests from pid ${ctx.peer.pid} (uid ${ctx.peer.uid}) as ${ctx.mode}`);
  let lastOk = true;
  for (;;) {
    let req: criu_req;
    try {
      const got = ctx.channel.receive(criu_reqSchema);
      if (got === null) {
        log.info("The RPC client closed the connection");
        return lastOk;
      }
      got.fds.forEach(closeFd); // no request carries fds
      req = got.message;
    } catch (e) {
      if (!(e instanceof RpcProtocolError)) throw e;
      log.error(e.message);
      if (!send(ctx, failure(criu_req_type.EMPTY, new RpcRequestError(e.message, CR_ERRNO.EBADMSG)))) {
        return false;
      }
      lastOk = false;
      continue;
    }
    const reply = await handle(ctx, req);
    if (reply === null) return true;
    lastOk = reply.success;
    if (!send(ctx, reply)) return false;
  }
}

function send(ctx: ServerContext, reply: criu_resp): boolean {
  try {
    ctx.channel.send(criu_respSchema, reply);
    return true;
  } catch (e) {
    ctx.log.error(`Cannot send the ${criu_req_type[reply.type]} reply: ${messageOf(e)}`);
    return false;
  }
}

function handle(ctx: ServerContext, req: criu_req): Reply | Promise<Reply> {
  const T = criu_req_type;
  ctx.log.debug(`RPC request ${T[req.type] ?? req.type}`);
  switch (req.type) {
    case T.DUMP:
      return handleDump(ctx, req);
    case T.RESTORE:
      return handleRestore(ctx, req);
    case T.CHECK:
      return handleCheck(ctx, req);
    case T.VERSION:
      return handleVersion();
    case T.FEATURE_CHECK:
      return handleFeatureCheck();
    case T.WAIT_PID:
      return handleWaitPid(ctx, req);
    case T.PRE_DUMP:
    case T.SINGLE_PRE_DUMP:
      return notSupported(req.type, "Pre-dump (iterative migration) is not supported by criu-ts yet");
    case T.PAGE_SERVER:
    case T.PAGE_SERVER_CHLD:
      return notSupported(req.type, "The page server is not supported by criu-ts yet");
    case T.CPUINFO_DUMP:
    case T.CPUINFO_CHECK:
      return notSupported(req.type, "cpuinfo dump and cpuinfo check are not supported by criu-ts yet");
    case T.NOTIFY:
      return failure(
        T.EMPTY,
        new RpcRequestError("A NOTIFY request came while no notification was waiting for an answer"),
      );
    default:
      return failure(T.EMPTY, new RpcRequestError(`Unknown RPC request type ${rawType(req)}`));
  }
}

/**
 * The request type as sent. A number our enum lacks is kept among the unknown fields (proto2 enums
 * are closed), leaving `type` at EMPTY.
 */
function rawType(req: criu_req): number {
  const unknown = req.$unknown?.find((u) => u.no === 1 && u.wireType === 0);
  if (unknown === undefined) return req.type;
  let value = 0;
  for (const [i, byte] of unknown.data.entries()) {
    value += (byte & 0x7f) * 2 ** (7 * i);
    if ((byte & 0x80) === 0) break;
  }
  return value;
}

/** A failed reply of `type` saying what `e` says. */
function failure(type: criu_req_type, e: unknown, extra: Partial<criu_resp> = {}): criu_resp {
  const resp = create(criu_respSchema, { type, success: false, crErrmsg: messageOf(e) });
  const errno = crErrnoOf(e);
  if (errno !== 0) resp.crErrno = errno;
  return Object.assign(resp, extra);
}

function notSupported(type: criu_req_type, message: string): criu_resp {
  return failure(type, new RpcRequestError(message, CR_ERRNO.EOPNOTSUPP));
}

/** A request's log, opened where the request says; errors go to the client, not to our stderr. */
function openRequestLog(setup: RequestSetup, base: Options): Log {
  const log = new Log(setup.logLevel, base.logPid, setup.logPath === undefined);
  if (setup.logPath !== undefined) {
    try {
      log.openFile(setup.logPath);
    } catch (e) {
      throw new RpcRequestError(`Cannot open the log file ${setup.logPath}: ${osReason(e)}`);
    }
  }
  for (const note of setup.notes) log.info(note);
  return log;
}

function hooksFor(ctx: ServerContext, setup: RequestSetup, log: Log): Hooks {
  const scripts = new ScriptHooks(setup.options.actionScripts, setup.imagesDir ?? ".", log);
  return setup.notifyScripts ? new NotifyHooks(ctx.channel, scripts, log) : scripts;
}

/** Sets up a request (options, log) and runs `body`; any error becomes a failed reply of `type`. */
async function withRequest(
  ctx: ServerContext,
  kind: RequestKind,
  req: criu_req,
  type: criu_req_type,
  extra: Partial<criu_resp>,
  body: (setup: RequestSetup, log: Log) => Reply | Promise<Reply>,
): Promise<Reply> {
  let setup: RequestSetup;
  let log: Log;
  try {
    setup = setupRequest(kind, req.opts, { base: ctx.base, peer: ctx.peer, mode: ctx.mode });
    log = openRequestLog(setup, ctx.base);
  } catch (e) {
    ctx.log.info(`RPC ${criu_req_type[type]} refused: ${messageOf(e)}`);
    if (e instanceof RpcRequestError && e.requestLog !== undefined) logRefusal(e.requestLog, e, ctx.base);
    return failure(type, e, extra);
  }
  try {
    return await body(setup, log);
  } catch (e) {
    log.error(messageOf(e));
    if (!(e instanceof RpcRequestError) && !isKnownError(e)) log.debug(`${(e as Error)?.stack ?? e}`);
    return failure(type, e, extra);
  } finally {
    log.close();
  }
}

/** Writes why a request was refused into the log it named, where its client will look. */
function logRefusal(path: string, e: RpcRequestError, base: Options): void {
  const log = new Log(0, base.logPid, false);
  try {
    log.openFile(path);
    log.error(e.message);
  } catch {
    // The reply carries the message anyway.
  } finally {
    log.close();
  }
}

function isKnownError(e: unknown): boolean {
  return e instanceof Error && e.name !== "Error" && e.name !== "TypeError" && e.name !== "RangeError";
}

function handleDump(ctx: ServerContext, req: criu_req): Promise<Reply> {
  const type = criu_req_type.DUMP;
  const dumpResp = () => ({ dump: create(criu_dump_respSchema, { restored: false }) });
  return withRequest(ctx, "dump", req, type, dumpResp(), async (setup, log) => {
    const o = setup.options;
    if (!processExists(setup.pid)) {
      throw new RpcRequestError(`Process ${setup.pid} does not exist`, CR_ERRNO.ESRCH);
    }
    log.info(
      `Dumping process ${setup.pid}${
        setup.selfDump ? " (the RPC client itself)" : ""
      } into ${setup.imagesDir}`,
    );
    const hooks = hooksFor(ctx, setup, log);
    const stats = await withPlugins(
      o.libdir,
      STAGE.DUMP,
      imagesDirOf(o),
      log,
      (plugins) => dump(dumpArguments(o, { log, hooks, plugins })),
    );
    log.info("Dumping finished successfully");
    if (o.displayStats) {
      log.info(
        `Dump stats: freezing ${stats.freezingUs} us, frozen ${stats.frozenUs} us, memory dump ${stats.memdumpUs} us, ` +
          `memory write ${stats.memwriteUs} us, pages scanned ${stats.pagesScanned}, written ${stats.pagesWritten}`,
      );
    }
    // A client that dumped itself without leave_running is dead now; nobody is left to answer.
    if (setup.selfDump && o.finalState !== "running") return null;
    return create(criu_respSchema, { type, success: true, ...dumpResp() });
  });
}

function handleRestore(ctx: ServerContext, req: criu_req): Promise<Reply> {
  const type = criu_req_type.RESTORE;
  const extra = { restore: create(criu_restore_respSchema, { pid: -1 }) };
  return withRequest(ctx, "restore", req, type, extra, async (setup, log) => {
    const o = setup.options;
    log.info(`Restoring from ${setup.imagesDir}`);
    // The tree is left running detached (setupRequest sets that): the reply ends the request.
    // With rst_sibling (runc, libcriu) the root becomes a child of the client that started swrk.
    const hooks = hooksFor(ctx, setup, log);
    const result = await withPlugins(
      o.libdir,
      STAGE.RESTORE,
      imagesDirOf(o),
      log,
      (plugins) => restore(restoreArguments(o, { log, hooks, plugins })),
    );
    log.info(`Restore finished successfully; root pid ${result.pid}`);
    if (o.displayStats) {
      log.info(`Restore stats: forking ${result.forkingUs} us, restore ${result.restoreUs} us`);
    }
    return create(criu_respSchema, {
      type,
      success: true,
      restore: create(criu_restore_respSchema, { pid: result.pid }),
    });
  });
}

function handleCheck(ctx: ServerContext, req: criu_req): Promise<Reply> {
  const type = criu_req_type.CHECK;
  return withRequest(ctx, "check", req, type, {}, (_setup, log) => {
    // The same probes as `criu check` without --extra: the features every dump and restore needs.
    const checked = runProbes(featuresFor({ extra: false, experimental: false }));
    for (const { feature, result } of checked) {
      log.info(`${feature.name}: ${result.supported ? "supported" : "NOT supported"}: ${result.detail}`);
    }
    const { lines, code } = summarize(checked);
    if (code !== 0) throw new RpcRequestError(lines.join("; "), CR_ERRNO.EOPNOTSUPP);
    log.info(lines.join("\n"));
    return create(criu_respSchema, { type, success: true });
  });
}

/** "4.2" → major 4, minor 2; a third number is the sublevel. */
function handleVersion(): criu_resp {
  const [major = 0, minor = 0, sublevel] = CRIU_VERSION.split(".").map(Number);
  const version = create(criu_versionSchema, { majorNumber: major, minorNumber: minor, name: "criu-ts" });
  if (sublevel !== undefined) version.sublevel = sublevel;
  return create(criu_respSchema, { type: criu_req_type.VERSION, success: true, version });
}

function handleFeatureCheck(): criu_resp {
  // Every feature the client can ask about is answered, and none of them exists in criu-ts yet:
  // no memory tracking (pre-dump), no lazy pages, no pidfd store.
  const features = create(criu_featuresSchema, { memTrack: false, lazyPages: false, pidfdStore: false });
  return create(criu_respSchema, { type: criu_req_type.FEATURE_CHECK, success: true, features });
}

function handleWaitPid(ctx: ServerContext, req: criu_req): criu_resp {
  const type = criu_req_type.WAIT_PID;
  try {
    if (req.pid <= 0) {
      throw new RpcRequestError(`WAIT_PID needs the pid of a child (criu_req.pid), found ${req.pid}`);
    }
    const got = waitRaw(req.pid)!;
    ctx.log.info(`Process ${req.pid} ${describeStatus(got.status)}`);
    return create(criu_respSchema, { type, success: true, status: got.status });
  } catch (e) {
    const why = isSyscallError(e, "ECHILD")
      ? new RpcRequestError(
        `Cannot wait for process ${req.pid}: it is not a child of this criu (only a tree restored on this connection is)`,
        CR_ERRNO.ECHILD,
      )
      : e;
    ctx.log.info(`WAIT_PID: ${messageOf(why)}`);
    return failure(type, why);
  }
}
