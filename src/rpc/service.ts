/**
 * `criu service [--address PATH] [-d|--daemon] [--pidfile FILE]`: listen on a unix SOCK_SEQPACKET
 * socket and serve every connection in a worker of its own, a `criu swrk 3` child started with
 * posix_spawn that gets the accepted connection as fd 3. A request that crashes its worker ends
 * that connection only; the service goes on. Workers are reaped between connections.
 *
 * The socket is PATH, or `criu_service.socket` in the work dir (-W, else -D, else the current
 * directory), as CRIU's service puts it.
 *
 * Who may use the service. A client of the service can dump and restore any process as root, so
 * unlike CRIU (which makes its socket world-writable) criu-ts lets only root in by default:
 *
 *   - the socket file is owned by root with mode 0600, so nobody else can connect();
 *   - every connection's peer is checked with SO_PEERCRED; a peer that is not allowed gets a
 *     failed reply (cr_errno EACCES) saying why, and no worker is started for it.
 *
 * Allowed peers: uid 0, the uid the service runs as, and what these environment variables of the
 * service add (give every uid you list root's power over the machine):
 *
 *   CRIU_TS_SERVICE_MODE=0660         mode of the socket file, octal (default 0600)
 *   CRIU_TS_SERVICE_GROUP=criu        group of the socket file (a name or a gid); processes with this
 *                                     group (effective or supplementary) are allowed peers
 *   CRIU_TS_SERVICE_ALLOW_UIDS=1000,1001   more allowed peer uids; "all" allows every peer
 *
 * The socket's mode decides who can connect at all; the peer check decides who is served.
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import { criu_req_type, criu_reqSchema, criu_respSchema } from "../images/gen/rpc_pb.ts";
import type { CommandContext } from "../command.ts";
import type { Options } from "../options/options.ts";
import type { Log } from "../log.ts";
import { type PeerCredentials, SeqpacketListener, type SeqpacketSocket } from "../../ffi/socket.ts";
import { spawn } from "../../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../../ffi/fd.ts";
import { describeStatus, waitRaw } from "../../ffi/wait.ts";
import { RpcChannel } from "./channel.ts";
import { selfCommand } from "./launch.ts";
import { CR_ERRNO, messageOf } from "./errors.ts";

/** Environment variables that configure who may use the service. */
export const SERVICE_ENV = {
  mode: "CRIU_TS_SERVICE_MODE",
  group: "CRIU_TS_SERVICE_GROUP",
  allowUids: "CRIU_TS_SERVICE_ALLOW_UIDS",
} as const;

/** Set by the service for its workers: `criu swrk` then serves as a service worker. */
export const WORKER_ENV = "CRIU_TS_SERVICE_WORKER";
/** Set by `service --daemon` for the daemon it starts: the listening socket it inherits. */
const LISTEN_FD_ENV = "CRIU_TS_SERVICE_LISTEN_FD";

/** CRIU's default service socket, in the work dir. */
export const DEFAULT_SERVICE_SOCKET = "criu_service.socket";

/** How long a refused client may take to send its request, so that the refusal answers it. */
const REFUSAL_WAIT_MS = 200;
/** How often the accept loop wakes up to reap finished workers. */
const REAP_INTERVAL_MS = 1000;

export interface AccessPolicy {
  /** Mode of the socket file. */
  mode: number;
  /** Group of the socket file, whose members are allowed peers. */
  gid: number | undefined;
  /** Peer uids allowed besides root and our own uid; "all" for every uid. */
  uids: ReadonlySet<number> | "all";
}

/** A bad value in the access configuration. */
export class ServiceConfigError extends Error {
  override name = "ServiceConfigError";
}

function groupId(value: string, groupFile: () => string): number {
  if (/^\d+$/.test(value)) return Number(value);
  for (const line of groupFile().split("\n")) {
    const [name, , gid] = line.split(":");
    if (name === value && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new ServiceConfigError(`${SERVICE_ENV.group}=${value}: no such group in /etc/group`);
}

/** The access policy from the environment (see the module comment). */
export function accessPolicy(
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  groupFile: () => string = () => Deno.readTextFileSync("/etc/group"),
): AccessPolicy {
  const modeText = env(SERVICE_ENV.mode);
  let mode = 0o600;
  if (modeText !== undefined) {
    if (!/^[0-7]{1,4}$/.test(modeText)) {
      throw new ServiceConfigError(`${SERVICE_ENV.mode}=${modeText}: expected an octal mode such as 0660`);
    }
    mode = parseInt(modeText, 8);
  }
  const groupText = env(SERVICE_ENV.group);
  const gid = groupText === undefined || groupText === "" ? undefined : groupId(groupText, groupFile);
  const uidsText = env(SERVICE_ENV.allowUids)?.trim() ?? "";
  let uids: Set<number> | "all" = new Set();
  if (uidsText === "all" || uidsText === "*") {
    uids = "all";
  } else if (uidsText !== "") {
    for (const word of uidsText.split(",").map((w) => w.trim()).filter((w) => w !== "")) {
      if (!/^\d+$/.test(word)) {
        throw new ServiceConfigError(
          `${SERVICE_ENV.allowUids}=${uidsText}: expected uids separated by commas, or all`,
        );
      }
      uids.add(Number(word));
    }
  }
  return { mode, gid, uids };
}

/** The groups of a process: effective gid and supplementary groups, from /proc/PID/status. */
export function processGroups(pid: number): number[] {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const groups = /^Groups:\s*(.*)$/m.exec(status)?.[1]?.trim() ?? "";
    const gids = /^Gid:\s*\d+\s+(\d+)/m.exec(status)?.[1];
    return [...(gids ? [Number(gids)] : []), ...groups.split(/\s+/).filter((g) => g !== "").map(Number)];
  } catch {
    return [];
  }
}

/** Whether `peer` may use the service; `groupsOf` is asked only when a group is configured. */
export function peerAllowed(
  policy: AccessPolicy,
  peer: PeerCredentials,
  ownUid: number,
  groupsOf: (pid: number) => number[] = processGroups,
): boolean {
  if (peer.uid === 0 || peer.uid === ownUid) return true;
  if (policy.uids === "all" || policy.uids.has(peer.uid)) return true;
  if (policy.gid !== undefined) return peer.gid === policy.gid || groupsOf(peer.pid).includes(policy.gid);
  return false;
}

function inWorkDir(o: Options, path: string): string {
  if (path.startsWith("/")) return path;
  const dir = o.workDir ?? o.imagesDir ?? ".";
  return dir === "." ? path : `${dir.replace(/\/$/, "")}/${path}`;
}

/** The service socket's path: --address, or CRIU's default file in the work dir. */
export function serviceSocketPath(o: Options): string {
  return inWorkDir(o, o.address ?? DEFAULT_SERVICE_SOCKET);
}

/** Runs the service; returns only on a setup failure (exit status 1) or after daemonizing (0). */
export function runService(ctx: CommandContext): number {
  const o = ctx.options;
  const { log } = ctx;
  let policy: AccessPolicy;
  try {
    policy = accessPolicy();
  } catch (e) {
    log.error(messageOf(e));
    return 1;
  }
  const path = serviceSocketPath(o);
  const inherited = Deno.env.get(LISTEN_FD_ENV);
  let listener: SeqpacketListener;
  if (inherited !== undefined) {
    Deno.env.delete(LISTEN_FD_ENV);
    listener = SeqpacketListener.adopt(Number(inherited), path);
  } else {
    listener = SeqpacketListener.listen(path, { mode: policy.mode, gid: policy.gid });
    const group = policy.gid === undefined ? "" : `, group ${policy.gid}`;
    log.info(`The service socket is bound to ${path} (mode 0${policy.mode.toString(8)}${group})`);
    if (o.restoreDetached) return daemonize(ctx, listener);
    if (o.pidfile) Deno.writeTextFileSync(inWorkDir(o, o.pidfile), `${Deno.pid}`);
  }
  try {
    ctx.hooks.run("status-ready");
    acceptLoop(ctx, listener, policy);
  } finally {
    listener.close();
  }
}

/**
 * `--daemon`: CRIU forks and calls daemon(3). We start ourselves again in a new session with the
 * listening socket as fd 3 and stdio on /dev/null, write the daemon's pid to --pidfile, and exit.
 */
function daemonize(ctx: CommandContext, listener: SeqpacketListener): number {
  const devNull = openFd("/dev/null", OPEN.RDWR | OPEN.CLOEXEC);
  let pid: number;
  try {
    const cmd = selfCommand();
    pid = spawn(cmd[0]!, [...cmd, ...Deno.args], {
      fds: { 0: devNull, 1: devNull, 2: devNull, 3: listener.fd },
      env: { ...Deno.env.toObject(), [LISTEN_FD_ENV]: "3" },
      setsid: true,
    });
  } finally {
    closeFd(devNull);
    listener.close();
  }
  if (ctx.options.pidfile) Deno.writeTextFileSync(inWorkDir(ctx.options, ctx.options.pidfile), `${pid}`);
  ctx.log.info(`The service runs in the background as pid ${pid}`);
  return 0;
}

function acceptLoop(ctx: CommandContext, listener: SeqpacketListener, policy: AccessPolicy): never {
  const workers = new Map<number, number>(); // worker pid → client pid
  const ownUid = Deno.uid() ?? 0;
  const worker = workerCommand(ctx.options);
  ctx.log.info("Waiting for connections");
  for (;;) {
    const sk = listener.accept(REAP_INTERVAL_MS);
    reapWorkers(workers, ctx.log);
    if (sk === null) continue;
    try {
      const peer = sk.peerCredentials();
      if (!peerAllowed(policy, peer, ownUid)) {
        refuse(sk, peer, policy, ctx.log);
        continue;
      }
      const pid = spawn(worker[0]!, worker, {
        fds: { 1: 1, 2: 2, 3: sk.fd },
        env: { ...Deno.env.toObject(), [WORKER_ENV]: "1" },
      });
      workers.set(pid, peer.pid);
      ctx.log.info(`Connected: client pid ${peer.pid} (uid ${peer.uid}), served by worker ${pid}`);
    } catch (e) {
      ctx.log.error(`Cannot serve a connection: ${messageOf(e)}`);
    } finally {
      sk.close();
    }
  }
}

/** `criu swrk 3`, reading the same config files as the service. */
function workerCommand(o: Options): string[] {
  const config = o.config !== undefined
    ? ["--config", o.config]
    : o.noDefaultConfig
    ? ["--no-default-config"]
    : [];
  return [...selfCommand(), ...config, "swrk", "3"];
}

function reapWorkers(workers: Map<number, number>, log: Log): void {
  for (const [pid, client] of workers) {
    const done = waitRaw(pid, true);
    if (done === null) continue;
    workers.delete(pid);
    log.info(`Worker ${pid} (client pid ${client}) ${describeStatus(done.status)}`);
  }
}

/** Answers a peer that may not use the service, after reading its request if it sends one soon. */
function refuse(sk: SeqpacketSocket, peer: PeerCredentials, policy: AccessPolicy, log: Log): void {
  const why = `criu service refuses uid ${peer.uid} (pid ${peer.pid}): it serves root` +
    (policy.gid !== undefined ? `, group ${policy.gid}` : "") +
    (policy.uids === "all" ? "" : policy.uids.size ? ` and uids ${[...policy.uids].join(",")}` : "") +
    ` only (see ${SERVICE_ENV.allowUids} and ${SERVICE_ENV.group})`;
  log.warn(why);
  let type = criu_req_type.EMPTY;
  try {
    if (sk.readable(REFUSAL_WAIT_MS)) {
      const got = sk.receive();
      if (got !== null) {
        got.fds.forEach(closeFd);
        try {
          type = fromBinary(criu_reqSchema, got.data).type;
        } catch {
          // not a request: answer with EMPTY
        }
      }
    }
    const reply = create(criu_respSchema, { type, success: false, crErrno: CR_ERRNO.EACCES, crErrmsg: why });
    new RpcChannel(sk).send(criu_respSchema, reply);
  } catch (e) {
    log.debug(`Could not tell the refused client why: ${messageOf(e)}`);
  }
}
