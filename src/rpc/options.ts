/**
 * From a request's `criu_opts` to the options a dump or restore runs with, as CRIU's service sets
 * them up:
 *
 * - the options of `criu swrk` itself (its command line and config files) are the base, so that
 *   action scripts and defaults from /etc/criu/default.conf apply to RPC requests too;
 * - each field of `criu_opts` overrides the base. A field stands for a command-line option, and
 *   is treated as the CLI treats that option (OPTION_TABLE): acted on, accepted and logged, or
 *   refused with a message naming it. A field that only means something for the other kind of
 *   request (`root` on a dump, `leave_running` on a restore) is ignored and logged;
 * - `config_file` names a config file read last, whose settings override the request's (runc
 *   passes one);
 * - the images dir is `images_dir_fd`, an fd of the client opened through /proc/PID/fd/N, or else
 *   the `images_dir` path; the work dir is `work_dir_fd`, or the swrk's -W, or the images dir; the
 *   log goes to `log_file` (a plain name) in the work dir, by default criu.log, or to stderr with
 *   `log_to_stderr`.
 *
 * Anything wrong here becomes a reply with cr_errno EBADRQC, as in CRIU.
 */
import { isFieldSet } from "@bufbuild/protobuf";
import {
  criu_cg_mode,
  criu_network_lock_method,
  type criu_opts,
  criu_optsSchema,
  criu_page_server_infoSchema,
  criu_pre_dump_mode,
} from "../images/gen/rpc_pb.ts";
import { type CgroupMode, defaultOptions, type NetworkLock, type Options } from "../options/options.ts";
import { appliesTo, OPTION_TABLE, type OptionSpec, type Support, supportFor } from "../options/table.ts";
import { checkSupport, readOptions } from "../options/read.ts";
import { systemConfigEnvironment } from "../options/config.ts";
import { isUsageError } from "../options/errors.ts";
import type { PeerCredentials } from "../../ffi/socket.ts";
import { CR_ERRNO, RpcRequestError } from "./errors.ts";
import { unusableDirectory } from "../dirs.ts";

export type RequestKind = "dump" | "restore" | "check";

/** How this criu was reached: `swrk` (a library spawned it) or a worker of `criu service`. */
export type ServeMode = "swrk" | "service";

/** CRIU's log file name when the request names none. */
export const DEFAULT_RPC_LOG = "criu.log";

const CLONE_NEWNET = 0x40000000;

export interface SetupContext {
  /** The options of this criu process: defaults, config files, its command line. */
  base: Options;
  peer: PeerCredentials;
  mode: ServeMode;
}

/** Everything a request handler needs, resolved and checked. */
export interface RequestSetup {
  options: Options;
  /** Real path of the images dir; undefined only for CHECK without one. */
  imagesDir: string | undefined;
  workDir: string | undefined;
  /** Where the log goes; undefined means stderr. */
  logPath: string | undefined;
  logLevel: number;
  notifyScripts: boolean;
  /** Dump: the root of the tree, and whether that is the client itself. */
  pid: number;
  selfDump: boolean;
  /** Messages for the request's log: fields accepted but not acted on, fields ignored. */
  notes: string[];
}

type FieldName = keyof typeof criu_optsSchema.field;

interface Rule {
  field: FieldName;
  /**
   * The command-line option this field stands for: its row in OPTION_TABLE says which request
   * kinds it means something for and how far it is supported.
   */
  option?: string;
  /** For fields without a command-line option: their support level... */
  support?: Support;
  /** ...and the request kind they mean something for; on another kind they are ignored. */
  only?: "dump" | "restore";
  /** Whether the field asks for something; by default, when it is set to a true or non-empty value. */
  asks?: (o: criu_opts) => boolean;
  /** Stores the value into the options, as the command-line option would. */
  apply?: (target: Options, o: criu_opts) => void;
}

function isSet(o: criu_opts, field: FieldName): boolean {
  return isFieldSet(o, criu_optsSchema.field[field]);
}

const set = (field: FieldName) => (o: criu_opts) => isSet(o, field);

const CG_MODES: Record<number, CgroupMode> = {
  [criu_cg_mode.IGNORE]: "ignore",
  [criu_cg_mode.CG_NONE]: "none",
  [criu_cg_mode.PROPS]: "props",
  [criu_cg_mode.SOFT]: "soft",
  [criu_cg_mode.FULL]: "full",
  [criu_cg_mode.STRICT]: "strict",
  [criu_cg_mode.DEFAULT]: "soft",
};

const NETWORK_LOCKS: Record<number, NetworkLock> = {
  [criu_network_lock_method.IPTABLES]: "iptables",
  [criu_network_lock_method.NFTABLES]: "nftables",
  [criu_network_lock_method.SKIP]: "skip",
};

function bad(message: string): RpcRequestError {
  return new RpcRequestError(message, CR_ERRNO.EBADRQC);
}

/**
 * Every field of criu_opts that stands for an option. The fields handled apart (images and work
 * dir, logging, notify_scripts, config_file, pid) are in setupRequest().
 */
const RULES: readonly Rule[] = [
  { field: "leaveRunning", option: "leave-running", apply: (t) => t.finalState = "running" },
  { field: "leaveStopped", option: "leave-stopped", apply: (t) => t.finalState = "stopped" },
  { field: "shellJob", option: "shell-job", apply: (t) => t.shellJob = true },
  { field: "extUnixSk", option: "ext-unix-sk", apply: (t) => t.extUnixSk = true },
  {
    // Exceptions by inode, read only alongside ext_unix_sk, as CRIU reads them.
    field: "unixSkIno",
    option: "ext-unix-sk",
    asks: (o) => o.unixSkIno.length > 0 && isFieldSet(o, criu_optsSchema.field.extUnixSk),
    apply: (t, o) => t.extUnixSkInodes.push(...o.unixSkIno.map((u) => u.inode)),
  },
  { field: "tcpEstablished", option: "tcp-established", apply: (t) => t.tcpEstablished = true },
  { field: "tcpSkipInFlight", option: "skip-in-flight", apply: (t) => t.skipInFlight = true },
  { field: "tcpClose", option: "tcp-close", apply: (t) => t.tcpClose = true },
  { field: "evasiveDevices", option: "evasive-devices", apply: (t) => t.evasiveDevices = true },
  { field: "fileLocks", option: "file-locks", apply: (t) => t.fileLocks = true },
  { field: "linkRemap", option: "link-remap", apply: (t) => t.linkRemap = true },
  { field: "autoDedup", option: "auto-dedup", apply: (t) => t.autoDedup = true },
  { field: "forceIrmap", option: "force-irmap", apply: (t) => t.forceIrmap = true },
  {
    field: "irmapScanPaths",
    option: "irmap-scan-path",
    apply: (t, o) => t.irmapScanPaths.push(...o.irmapScanPaths),
  },
  { field: "weakSysctls", option: "weak-sysctls", apply: (t) => t.weakSysctls = true },
  { field: "skipFileRwxCheck", option: "skip-file-rwx-check", apply: (t) => t.skipFileRwxCheck = true },
  { field: "unprivileged", option: "unprivileged", apply: (t) => t.unprivileged = true },
  { field: "displayStats", option: "display-stats", apply: (t) => t.displayStats = true },
  { field: "mntnsCompatMode", option: "mntns-compat-mode", apply: (t) => t.mntnsCompatMode = true },
  { field: "external", option: "external", apply: (t, o) => t.external.push(...o.external) },
  { field: "skipMnt", option: "skip-mnt", apply: (t, o) => t.skipMounts.push(...o.skipMnt) },
  { field: "enableFs", option: "enable-fs", apply: (t, o) => t.enableFs.push(...o.enableFs) },
  { field: "extSharing", option: "enable-external-sharing", apply: (t) => t.enableExternalSharing = true },
  { field: "extMasters", option: "enable-external-masters", apply: (t) => t.enableExternalMasters = true },
  { field: "autoExtMnt", option: "ext-mount-map", apply: (t) => t.autoDetectExtMounts = true },
  {
    field: "extMnt",
    option: "ext-mount-map",
    apply: (t, o) => t.extMountMaps.push(...o.extMnt.map((m) => ({ key: m.key, value: m.val }))),
  },
  {
    field: "veths",
    option: "veth-pair",
    apply: (t, o) => t.vethPairs.push(...o.veths.map((v) => ({ inside: v.ifIn, outside: v.ifOut }))),
  },
  {
    field: "cgRoot",
    option: "cgroup-root",
    apply: (t, o) =>
      t.cgroupRoots.push(
        ...o.cgRoot.map((c) => c.ctrl ? { controller: c.ctrl, path: c.path } : { path: c.path }),
      ),
  },
  // CRIU maps the old boolean to soft (true) or ignore (false); the mode field wins when both are set.
  {
    field: "manageCgroups",
    option: "manage-cgroups",
    asks: set("manageCgroups"),
    apply: (t, o) => t.manageCgroups = o.manageCgroups ? "soft" : "ignore",
  },
  {
    field: "manageCgroupsMode",
    option: "manage-cgroups",
    asks: set("manageCgroupsMode"),
    apply: (t, o) => {
      const mode = CG_MODES[o.manageCgroupsMode];
      if (mode === undefined) {
        throw bad(`criu_opts.manage_cgroups_mode ${o.manageCgroupsMode} is not a cgroup mode`);
      }
      t.manageCgroups = mode;
    },
  },
  { field: "cgroupProps", option: "cgroup-props", apply: (t, o) => t.cgroupProps = o.cgroupProps },
  {
    field: "cgroupPropsFile",
    option: "cgroup-props-file",
    apply: (t, o) => t.cgroupPropsFile = o.cgroupPropsFile,
  },
  {
    field: "cgroupDumpController",
    option: "cgroup-dump-controller",
    apply: (t, o) => t.cgroupDumpControllers.push(...o.cgroupDumpController),
  },
  { field: "cgroupYard", option: "cgroup-yard", apply: (t, o) => t.cgroupYard = o.cgroupYard },
  { field: "freezeCgroup", option: "freeze-cgroup", apply: (t, o) => t.freezeCgroup = o.freezeCgroup },
  {
    field: "cpuCap",
    option: "cpu-cap",
    asks: set("cpuCap"),
    apply: (t, o) => {
      // CRIU's bits: fpu 1, cpu 2, ins 4; the image is always written when the field is given.
      t.cpuCaps = {
        fpu: (o.cpuCap & 1) !== 0,
        cpu: (o.cpuCap & 2) !== 0,
        ins: (o.cpuCap & 4) !== 0,
        image: true,
      };
    },
  },
  {
    field: "ghostLimit",
    option: "ghost-limit",
    asks: set("ghostLimit"),
    apply: (t, o) => t.ghostLimit = o.ghostLimit,
  },
  { field: "timeout", option: "timeout", asks: set("timeout"), apply: (t, o) => t.timeout = o.timeout },
  {
    field: "emptyNs",
    option: "empty-ns",
    asks: (o) => o.emptyNs !== 0,
    apply: (t, o) => {
      if ((o.emptyNs & ~CLONE_NEWNET) !== 0) {
        throw bad(
          `criu_opts.empty_ns 0x${o.emptyNs.toString(16)} asks for namespaces other than net (0x40000000)`,
        );
      }
      t.emptyNetNs = true;
    },
  },
  {
    field: "networkLock",
    option: "network-lock",
    asks: set("networkLock"),
    apply: (t, o) => {
      const method = NETWORK_LOCKS[o.networkLock];
      if (method === undefined) {
        throw bad(`criu_opts.network_lock ${o.networkLock} is not a network lock method`);
      }
      t.networkLock = method;
    },
  },
  {
    field: "preDumpMode",
    option: "pre-dump-mode",
    asks: set("preDumpMode"),
    apply: (t, o) => {
      if (o.preDumpMode === criu_pre_dump_mode.SPLICE) t.preDumpMode = "splice";
      else if (o.preDumpMode === criu_pre_dump_mode.VM_READ) t.preDumpMode = "read";
      else throw bad(`criu_opts.pre_dump_mode ${o.preDumpMode} is not a pre-dump mode`);
    },
  },
  {
    field: "lsmMountContext",
    option: "lsm-mount-context",
    apply: (t, o) => t.lsmMountContext = o.lsmMountContext,
  },
  { field: "statusFd", option: "status-fd", asks: set("statusFd"), apply: (t, o) => t.statusFd = o.statusFd },
  { field: "tlsCacert", option: "tls-cacert", apply: (t, o) => t.tlsCacert = o.tlsCacert },
  { field: "tlsCacrl", option: "tls-cacrl", apply: (t, o) => t.tlsCacrl = o.tlsCacrl },
  { field: "tlsCert", option: "tls-cert", apply: (t, o) => t.tlsCert = o.tlsCert },
  { field: "tlsKey", option: "tls-key", apply: (t, o) => t.tlsKey = o.tlsKey },
  { field: "tlsNoCnVerify", option: "tls-no-cn-verify", apply: (t) => t.tlsNoCnVerify = true },
  { field: "tls", option: "tls", apply: (t) => t.tls = true },
  { field: "lazyPages", option: "lazy-pages", apply: (t) => t.lazyPages = true },
  // Pages sent to a page server instead of the images dir (dump and pre-dump).
  {
    field: "ps",
    option: "page-server",
    asks: (o) => o.ps !== undefined,
    apply: (t) => t.pageServer = true,
  },
  // Iterative migration: refused by the table, as on the command line.
  { field: "trackMem", option: "track-mem", apply: (t) => t.trackMem = true },
  { field: "parentImg", option: "prev-images-dir", apply: (t, o) => t.prevImagesDir = o.parentImg },
  // Restore only.
  { field: "root", option: "root", apply: (t, o) => t.root = o.root },
  { field: "rstSibling", option: "restore-sibling", apply: (t) => t.restoreSibling = true },
  {
    field: "inheritFd",
    option: "inherit-fd",
    apply: (t, o) =>
      t.inheritFds.push(...o.inheritFd.map((f) => ({ fd: f.fd, resource: f.key, debug: false }))),
  },
  { field: "execCmd", option: "exec-cmd", apply: (t) => t.execCmd = true },
  {
    field: "joinNs",
    option: "join-ns",
    apply: (t, o) =>
      t.joinNs.push(
        ...o.joinNs.map((j) =>
          j.extraOpt ? { ns: j.ns, target: j.nsFile, extra: j.extraOpt } : { ns: j.ns, target: j.nsFile }
        ),
      ),
  },
  {
    field: "lsmProfile",
    option: "lsm-profile",
    apply: (t, o) => t.lsmProfile = o.lsmProfile,
  },
  { field: "orphanPtsMaster", only: "restore", apply: (t) => t.orphanPtsMaster = true },
  // Lets CRIU keep pidfds of the tree between pre-dumps to spot pid reuse; we keep none.
  { field: "pidfdStoreSk", support: "accepted-and-logged", asks: set("pidfdStoreSk") },
];

const optionRows = new Map(OPTION_TABLE.map((s) => [s.long, s]));

function optionRow(long: string): OptionSpec {
  const spec = optionRows.get(long);
  if (spec === undefined) throw new Error(`RPC rule names --${long}, which is not in OPTION_TABLE`);
  return spec;
}

/** The proto name of a field, as clients know it: `leave_running`. */
function protoName(field: FieldName): string {
  return criu_optsSchema.field[field].name;
}

function applyRules(
  kind: RequestKind,
  o: criu_opts,
  target: Options,
  ctx: SetupContext,
  notes: string[],
): void {
  for (const rule of RULES) {
    const asks = rule.asks ? rule.asks(o) : truthy(o, rule.field);
    if (!asks) continue;
    const name = `criu_opts.${protoName(rule.field)}`;
    // As in CRIU, what only makes sense with the client as our parent is refused by a service.
    if (ctx.mode === "service" && (rule.field === "rstSibling" || rule.field === "inheritFd")) {
      throw bad(
        `${name} is not allowed in standalone service (only \`criu swrk\` has the client as its parent)`,
      );
    }
    if (
      ctx.mode === "service" && rule.field === "ps" && o.ps !== undefined &&
      isFieldSet(o.ps, criu_page_server_infoSchema.field.fd)
    ) {
      throw bad(`${name}.fd is not allowed in standalone service`);
    }
    const spec = rule.option === undefined ? undefined : optionRow(rule.option);
    const applies = spec === undefined
      ? rule.only === undefined || rule.only === kind
      : appliesTo(spec, kind);
    if (!applies) {
      notes.push(`${name} is ignored for a ${kind}`);
      continue;
    }
    const { support, reason } = spec === undefined
      ? { support: rule.support ?? "accepted-and-logged", reason: undefined }
      : supportFor(spec, kind);
    const spelled = rule.option ? ` (--${rule.option})` : "";
    if (support === "refused") {
      throw new RpcRequestError(
        `${name}${spelled} is not supported by criu-ts yet` + (reason ? ` (${reason})` : ""),
        CR_ERRNO.EBADRQC,
      );
    }
    rule.apply?.(target, o);
    if (support === "accepted-and-logged") notes.push(`${name}${spelled} is accepted but not acted on yet`);
  }
}

function truthy(o: criu_opts, field: FieldName): boolean {
  const v: unknown = o[field];
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === "string") return v !== "";
  if (typeof v === "boolean") return v;
  return isSet(o, field);
}

/** A directory the client named by fd or path, as a real path; refuses what is not a directory. */
function directory(what: string, path: string): string {
  const unusable = unusableDirectory(what, path);
  if (unusable !== undefined) throw new RpcRequestError(unusable, CR_ERRNO.EBADRQC);
  return Deno.realPathSync(path);
}

function clientFd(peer: PeerCredentials, fd: number): string {
  return `/proc/${peer.pid}/fd/${fd}`;
}

/**
 * What an RPC config file (criu_opts.config_file) sets, and which of the places it decides. It is
 * read with the same table and rules as the command line's, for this kind of request.
 */
function readRpcConfig(
  kind: RequestKind,
  path: string,
): { options: Options; changed: Set<keyof Options>; notes: string[] } {
  let read;
  try {
    const env = { ...systemConfigEnvironment(), home: undefined, configFileEnv: undefined };
    read = readOptions(["--config", path], env);
    checkSupport(read, kind);
  } catch (e) {
    if (isUsageError(e)) throw bad(`criu_opts.config_file: ${e.message}`);
    throw e;
  }
  const defaults = defaultOptions();
  const changed = new Set<keyof Options>();
  for (const key of Object.keys(read.options) as (keyof Options)[]) {
    if (key === "config" || key === "noDefaultConfig") continue;
    if (JSON.stringify(read.options[key]) !== JSON.stringify(defaults[key])) changed.add(key);
  }
  return { options: read.options, changed, notes: read.notes };
}

/** Resolves a request's options. Throws RpcRequestError (EBADRQC) for anything it cannot accept. */
export function setupRequest(
  kind: RequestKind,
  opts: criu_opts | undefined,
  ctx: SetupContext,
): RequestSetup {
  const notes: string[] = [];
  const options: Options = structuredClone(ctx.base);
  const o = opts;
  if (o === undefined && kind !== "check") {
    throw bad(`A ${kind} request needs options (criu_req.opts is missing)`);
  }

  // CHECK looks only at the logging fields, as in CRIU.
  if (o !== undefined && kind !== "check") applyRules(kind, o, options, ctx, notes);

  // The RPC config file is read last and overrides what the request said.
  let fromConfig = new Set<keyof Options>();
  if (o?.configFile) {
    const cfg = readRpcConfig(kind, o.configFile);
    fromConfig = cfg.changed;
    for (const key of cfg.changed) {
      (options as unknown as Record<string, unknown>)[key] = structuredClone(cfg.options[key]);
    }
    notes.push(`Read config file ${o.configFile}: it sets ${[...cfg.changed].join(", ") || "nothing"}`);
    notes.push(...cfg.notes);
  }

  // Images dir: the config file's, else the client's fd, else its path.
  let imagesPath: string | undefined;
  if (fromConfig.has("imagesDir")) imagesPath = options.imagesDir;
  else if (o !== undefined && o.imagesDirFd !== -1) imagesPath = clientFd(ctx.peer, o.imagesDirFd);
  else if (o?.imagesDir) imagesPath = o.imagesDir;
  if (imagesPath === undefined && kind !== "check") {
    throw bad("Neither criu_opts.images_dir_fd nor criu_opts.images_dir names the images directory");
  }

  // The log: CHECK writes one only when asked to by name.
  const logToStderr = o?.logToStderr === true && !fromConfig.has("logFile");
  const wantsLog = kind !== "check" || (o?.logFile !== undefined && o.logFile !== "" && !logToStderr);
  if (kind === "check" && !wantsLog) imagesPath = undefined;
  const imagesDir = imagesPath === undefined ? undefined : directory("images directory", imagesPath);

  let workDir: string | undefined;
  if (fromConfig.has("workDir")) workDir = directory("work directory", options.workDir!);
  else if (o !== undefined && isSet(o, "workDirFd")) {
    workDir = directory("work directory", clientFd(ctx.peer, o.workDirFd));
  } else if (options.workDir !== undefined) workDir = directory("work directory", options.workDir);
  else workDir = imagesDir;

  let logPath: string | undefined;
  if (wantsLog && !logToStderr) {
    let name: string;
    if (o?.logFile && !fromConfig.has("logFile")) {
      if (o.logFile.includes("/")) {
        throw bad(`criu_opts.log_file "${o.logFile}" must be a plain file name (no "/")`);
      }
      name = o.logFile;
    } else {
      name = options.logFile ?? DEFAULT_RPC_LOG;
    }
    if (name !== "-") {
      if (!name.startsWith("/") && workDir === undefined) {
        throw bad("A log file needs an images or work directory");
      }
      logPath = name.startsWith("/") ? name : `${workDir}/${name}`;
    }
  }
  const logLevel = fromConfig.has("verbosity") ? options.verbosity : (o?.logLevel ?? 2);
  options.verbosity = logLevel;

  // The tree to dump: the client itself when no pid is given (a self-dump).
  let pid = 0;
  let selfDump = false;
  if (kind === "dump") {
    pid = o !== undefined && isSet(o, "pid") ? o.pid : 0;
    if (pid === 0) {
      pid = ctx.peer.pid;
      selfDump = true;
    }
    if (pid < 0) throw bad(`criu_opts.pid ${pid} is not a process id`);
    options.tree = pid;
  }
  if (imagesDir !== undefined) options.imagesDir = imagesDir;
  if (kind === "restore") {
    // The reply ends the request: the tree is left running on its own. The pidfile of this
    // criu's command line is its own (a service's), never the restored tree's.
    options.restoreDetached = true;
    delete options.pidfile;
  }
  if (workDir !== undefined) options.workDir = workDir;

  return {
    options,
    imagesDir,
    workDir,
    logPath,
    logLevel,
    notifyScripts: o?.notifyScripts === true,
    pid,
    selfDump,
    notes,
  };
}
