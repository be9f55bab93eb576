/**
 * The options criu-ts accepts: every option of CRIU's `criu` command, with CRIU's spelling, short
 * letters and argument kinds, so that runtimes (runc, crun, Podman, LXC) and scripts can call us as
 * `criu`. One table, OPTION_TABLE, says for each option how its argument is checked and stored into
 * the typed Options object, and how far criu-ts supports it.
 *
 * As features land, change an option's support from "accepted-and-logged" or "refused" to
 * "implemented"; nothing else needs to change.
 */
import { InvalidValue } from "./errors.ts";

/** The commands `criu` knows. `cpuinfo` takes its action as a second word. */
export const COMMANDS = [
  "dump",
  "pre-dump",
  "restore",
  "lazy-pages",
  "check",
  "page-server",
  "service",
  "swrk",
  "dedup",
  "cpuinfo dump",
  "cpuinfo check",
] as const;
export type Command = typeof COMMANDS[number];

/** What becomes of the dumped tasks: killed (the default), left stopped (-s), or left running (-R). */
export type FinalState = "dead" | "stopped" | "running";
export type CgroupMode = "none" | "props" | "soft" | "full" | "strict" | "ignore";
export type NetworkLock = "iptables" | "nftables" | "skip";
export type PreDumpMode = "splice" | "read";
export type FileValidation = "filesize" | "buildid";

/** Which CPU properties a dump records and a restore checks (--cpu-cap). */
export interface CpuCaps {
  fpu: boolean;
  cpu: boolean;
  ins: boolean;
  /** Write cpuinfo.img on dump and check it on restore; on whenever any other capability is. */
  image: boolean;
}

/** --cgroup-root [CONTROLLER:]PATH; no controller means every controller not named otherwise. */
export interface CgroupRoot {
  controller?: string;
  path: string;
}

/** --ext-mount-map KEY:VALUE (dump: mountpoint:name; restore: name:path). */
export interface ExtMountMap {
  key: string;
  value: string;
}

/** --veth-pair INSIDE=OUTSIDE. */
export interface VethPair {
  inside: string;
  outside: string;
}

/** --join-ns NS:PID-or-FILE[,EXTRA]. */
export interface JoinNs {
  ns: string;
  target: string;
  extra?: string;
}

/** --inherit-fd fd[N]:RESOURCE, or debug[N]:MESSAGE (write MESSAGE to fd N). */
export interface InheritFd {
  fd: number;
  resource: string;
  debug: boolean;
}

/**
 * Everything the command line and config files can set. Fields without a default are absent until
 * an option sets them. The commands read this object; there is no global copy.
 */
export interface Options {
  // Help, version, config files.
  help: boolean;
  version: boolean;
  /** The --config file given on the command line (it also turns the default config files off). */
  config?: string;
  noDefaultConfig: boolean;

  // Logging and directories.
  /** 0 nothing, 1 errors, 2 warnings (default), 3 information, 4 debug; -v adds one. */
  verbosity: number;
  logFile?: string;
  logPid: boolean;
  displayStats: boolean;
  imagesDir?: string;
  workDir?: string;
  prevImagesDir?: string;
  pidfile?: string;
  libdir?: string;
  actionScripts: string[];
  closeFds: number[];
  stream: boolean;
  unprivileged: boolean;
  deprecated: boolean;

  // Dump.
  tree?: number;
  finalState: FinalState;
  trackMem: boolean;
  preDumpMode: PreDumpMode;
  timeout: number;
  freezeCgroup?: string;
  external: string[];
  extUnixSk: boolean;
  /** Inodes given as -xINO,INO or --ext-unix-sk=INO,INO. */
  extUnixSkInodes: number[];
  tcpEstablished: boolean;
  tcpClose: boolean;
  skipInFlight: boolean;
  evasiveDevices: boolean;
  linkRemap: boolean;
  /** Largest deleted file, in bytes, whose contents go into the images. */
  ghostLimit: number;
  ghostFiemap: boolean;
  fileLocks: boolean;
  shellJob: boolean;
  forceIrmap: boolean;
  irmapScanPaths: string[];
  autoDedup: boolean;
  cpuCaps: CpuCaps;
  fileValidation: FileValidation;
  networkLock: NetworkLock;
  allowUprobes: boolean;
  skipMounts: string[];
  /** Filesystem names from --enable-fs; "all" stands for every filesystem. */
  enableFs: string[];
  enableExternalSharing: boolean;
  enableExternalMasters: boolean;

  // Cgroups.
  manageCgroups: CgroupMode;
  cgroupRoots: CgroupRoot[];
  cgroupProps?: string;
  cgroupPropsFile?: string;
  cgroupDumpControllers: string[];
  cgroupYard?: string;

  // Restore.
  restoreDetached: boolean;
  restoreSibling: boolean;
  root?: string;
  joinNs: JoinNs[];
  inheritFds: InheritFd[];
  extMountMaps: ExtMountMap[];
  /** --ext-mount-map auto. */
  autoDetectExtMounts: boolean;
  vethPairs: VethPair[];
  emptyNetNs: boolean;
  /** RPC only (criu_opts.orphan_pts_master), as in CRIU: no command-line option sets it. */
  orphanPtsMaster: boolean;
  lsmProfile?: string;
  lsmMountContext?: string;
  weakSysctls: boolean;
  skipFileRwxCheck: boolean;
  mntnsCompatMode: boolean;
  /** --exec-cmd: after restore, exec the words that follow the command. */
  execCmd: boolean;

  // Check.
  checkExtra: boolean;
  checkExperimental: boolean;
  features: string[];

  // Page server, lazy pages, service.
  pageServer: boolean;
  lazyPages: boolean;
  address?: string;
  port?: number;
  psSocket?: number;
  statusFd?: number;
  tls: boolean;
  tlsCacert?: string;
  tlsCacrl?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsNoCnVerify: boolean;
}

/** CRIU's defaults. */
export function defaultOptions(): Options {
  return {
    help: false,
    version: false,
    noDefaultConfig: false,
    verbosity: 2,
    logPid: false,
    displayStats: false,
    actionScripts: [],
    closeFds: [],
    stream: false,
    unprivileged: false,
    deprecated: false,
    finalState: "dead",
    trackMem: false,
    preDumpMode: "splice",
    timeout: 10,
    external: [],
    extUnixSk: false,
    extUnixSkInodes: [],
    tcpEstablished: false,
    tcpClose: false,
    skipInFlight: false,
    evasiveDevices: false,
    linkRemap: false,
    ghostLimit: 1 << 20,
    ghostFiemap: true,
    fileLocks: false,
    shellJob: false,
    forceIrmap: false,
    irmapScanPaths: [],
    autoDedup: false,
    cpuCaps: { fpu: true, cpu: false, ins: true, image: false },
    fileValidation: "buildid",
    networkLock: "iptables",
    allowUprobes: false,
    skipMounts: [],
    enableFs: [],
    enableExternalSharing: false,
    enableExternalMasters: false,
    manageCgroups: "soft",
    cgroupRoots: [],
    cgroupDumpControllers: [],
    restoreDetached: false,
    restoreSibling: false,
    joinNs: [],
    inheritFds: [],
    extMountMaps: [],
    autoDetectExtMounts: false,
    vethPairs: [],
    emptyNetNs: false,
    orphanPtsMaster: false,
    weakSysctls: false,
    skipFileRwxCheck: false,
    mntnsCompatMode: false,
    execCmd: false,
    checkExtra: false,
    checkExperimental: false,
    features: [],
    pageServer: false,
    lazyPages: false,
    tls: false,
    tlsNoCnVerify: false,
  };
}

/** none: a flag; required: `--opt VALUE`, `--opt=VALUE`, `-xVALUE`, `-x VALUE`; optional: attached only. */
export type ArgKind = "none" | "required" | "optional";

/**
 * implemented: criu-ts acts on it.
 * accepted-and-logged: a runtime may pass it; we do not act on it yet, and the caller logs that.
 * refused: ignoring it would silently change the result, so the command stops with an error.
 */
export type Support = "implemented" | "accepted-and-logged" | "refused";

interface SpecBase {
  /** Long name without the dashes. */
  readonly long: string;
  /** Short letter, or "" when there is none. */
  readonly short: string;
  readonly support: Support;
  /** Why a refused option is refused, when there is more to say than "not supported yet". */
  readonly reason?: string;
}

/** One row of the table. `store` checks the argument (throwing InvalidValue) and records it. */
export type OptionSpec =
  | SpecBase & {
    readonly arg: "none";
    /** CRIU also accepts `--no-NAME`, which stores false. */
    readonly negatable: boolean;
    readonly store: (o: Options, on: boolean) => void;
  }
  | SpecBase & { readonly arg: "required"; readonly store: (o: Options, value: string) => void }
  | SpecBase & { readonly arg: "optional"; readonly store: (o: Options, value: string | undefined) => void };

type StoreFor<A extends ArgKind> = A extends "none" ? (o: Options, on: boolean) => void
  : A extends "required" ? (o: Options, value: string) => void
  : (o: Options, value: string | undefined) => void;

/** A row of OPTION_TABLE; the type of `store`'s value follows `arg`. */
function opt<A extends ArgKind>(
  long: string,
  short: string,
  arg: A,
  support: Support,
  store: StoreFor<A>,
  reason?: string,
): OptionSpec {
  const row = { long, short, arg, support, store, negatable: false };
  return (reason === undefined ? row : { ...row, reason }) as OptionSpec;
}

/** A row for a flag that also has a `--no-` form (CRIU's boolean options). */
function bool(long: string, short: string, support: Support, store: StoreFor<"none">, reason?: string) {
  const row = opt(long, short, "none", support, store, reason);
  return { ...row, negatable: true } as OptionSpec;
}

const IMPLEMENTED = "implemented";
const ACCEPTED = "accepted-and-logged";
const REFUSED = "refused";

const INT_MAX = 2 ** 31 - 1;

/** A decimal integer in [min, max]; CRIU's atoi would take garbage as 0, we refuse it. */
function integer(value: string, min: number, max = INT_MAX): number {
  const n = /^[+-]?\d+$/.test(value) ? Number(value) : NaN;
  if (n >= min && n <= max) return n;
  if (max === INT_MAX) throw new InvalidValue(min === 1 ? "a positive integer" : `an integer >= ${min}`);
  throw new InvalidValue(`an integer from ${min} to ${max}`);
}

function oneOf<T extends string>(value: string, allowed: readonly T[]): T {
  const found = allowed.find((a) => a === value);
  if (found === undefined) throw new InvalidValue(`one of ${allowed.join(", ")}`);
  return found;
}

/** A byte count with an optional K, M or G suffix (powers of 1024), as --ghost-limit takes. */
function size(value: string): number {
  const m = /^(\d+)([KMG]?)$/.exec(value);
  if (!m) throw new InvalidValue("a size such as 4096, 64K, 16M or 1G");
  const shift = { "": 0, K: 10, M: 20, G: 30 }[m[2] as "" | "K" | "M" | "G"];
  return Number(m[1]) * 2 ** shift;
}

/** Split at the first `sep`; both sides must be non-empty. */
function pair(value: string, sep: string, expected: string): [string, string] {
  const at = value.indexOf(sep);
  if (at <= 0 || at === value.length - 1) throw new InvalidValue(expected);
  return [value.slice(0, at), value.slice(at + 1)];
}

function verbosity(o: Options, value: string | undefined): void {
  if (value === undefined) o.verbosity++;
  // `-vvv` reaches us as -v with the argument "vv": each v counts.
  else if (/^v+$/.test(value)) o.verbosity += value.length + 1;
  else o.verbosity = integer(value, 0);
}

/**
 * --cpu-cap: a list of fpu, cpu, ins, all, none; `^` negates the words after it up to the next
 * comma. Words add to (or remove from) the current set, as CRIU does. No argument means all.
 */
function cpuCaps(current: CpuCaps, value: string | undefined): CpuCaps {
  if (value === undefined) return { fpu: true, cpu: true, ins: true, image: true };
  const caps = { ...current };
  let negate = false;
  let rest = value;
  while (rest !== "") {
    if (rest[0] === "^" || rest[0] === ",") {
      negate = rest[0] === "^" ? !negate : false;
      rest = rest.slice(1);
      continue;
    }
    const word = (["fpu", "cpu", "ins", "all", "none"] as const).find((w) => rest.startsWith(w));
    if (word === undefined) {
      throw new InvalidValue("a comma-separated list of fpu, cpu, ins, all, none, ^WORD");
    }
    rest = rest.slice(word.length);
    if (word === "none") {
      // "none" clears every capability; "^none" sets them all.
      Object.assign(caps, { fpu: negate, cpu: negate, ins: negate, image: false });
    } else {
      for (const cap of word === "all" ? (["fpu", "cpu", "ins"] as const) : [word]) caps[cap] = !negate;
    }
  }
  caps.image ||= caps.fpu || caps.cpu || caps.ins;
  return caps;
}

function extUnixSk(o: Options, value: string | undefined): void {
  o.extUnixSk = true;
  if (value === undefined) return;
  for (const ino of value.split(",").filter((s) => s !== "")) {
    o.extUnixSkInodes.push(integer(ino, 1, 2 ** 32 - 1));
  }
}

function cgroupRoot(value: string): CgroupRoot {
  const at = value.indexOf(":");
  return at < 0 ? { path: value } : { controller: value.slice(0, at), path: value.slice(at + 1) };
}

function joinNs(value: string): JoinNs {
  const [ns, rest] = pair(value, ":", "NS:PID-or-FILE[,OPTIONS]");
  // CRIU cannot join a pid namespace either: the restored tasks' pids decide it.
  oneOf(ns, ["net", "uts", "time", "ipc", "user", "mnt"] as const);
  const comma = rest.indexOf(",");
  return comma < 0
    ? { ns, target: rest }
    : { ns, target: rest.slice(0, comma), extra: rest.slice(comma + 1) };
}

function inheritFd(value: string): InheritFd {
  const m = /^(fd|debug)\[(\d+)\]:(.+)$/s.exec(value);
  if (!m) throw new InvalidValue("fd[N]:RESOURCE");
  return { fd: integer(m[2] ?? "", 0), resource: m[3] ?? "", debug: m[1] === "debug" };
}

function extMountMap(o: Options, value: string): void {
  if (value === "auto") {
    o.autoDetectExtMounts = true;
    return;
  }
  const [key, mapped] = pair(value, ":", "KEY:VALUE or auto");
  o.extMountMaps.push({ key, value: mapped });
}

function vethPair(value: string): VethPair {
  const [inside, outside] = pair(value, "=", "INSIDE=OUTSIDE");
  return { inside, outside };
}

/**
 * Every option, grouped as in CRIU's manual. Columns: long name, short letter, argument, support,
 * how the value is stored, and (refused only) why.
 */
export const OPTION_TABLE: readonly OptionSpec[] = [
  // Help, version and config files (the config options are read before everything else).
  opt("help", "h", "none", IMPLEMENTED, (o) => o.help = true),
  opt("version", "V", "none", IMPLEMENTED, (o) => o.version = true),
  opt("config", "", "required", IMPLEMENTED, () => {}),
  opt("no-default-config", "", "none", IMPLEMENTED, () => {}),

  // Logging, directories, plugins and scripts.
  opt("verbosity", "v", "optional", IMPLEMENTED, verbosity),
  opt("log-file", "o", "required", IMPLEMENTED, (o, v) => o.logFile = v),
  bool("log-pid", "", IMPLEMENTED, (o, on) => o.logPid = on),
  bool("display-stats", "", IMPLEMENTED, (o, on) => o.displayStats = on),
  opt("images-dir", "D", "required", IMPLEMENTED, (o, v) => o.imagesDir = v),
  opt("work-dir", "W", "required", IMPLEMENTED, (o, v) => o.workDir = v),
  opt("prev-images-dir", "", "required", ACCEPTED, (o, v) => o.prevImagesDir = v),
  opt("pidfile", "", "required", IMPLEMENTED, (o, v) => o.pidfile = v),
  opt("libdir", "L", "required", ACCEPTED, (o, v) => o.libdir = v),
  opt("action-script", "", "required", IMPLEMENTED, (o, v) => o.actionScripts.push(v)),
  opt("close", "", "required", ACCEPTED, (o, v) => o.closeFds.push(integer(v, 0))),
  bool("stream", "", REFUSED, (o, on) => o.stream = on, "images through criu-image-streamer"),
  bool("unprivileged", "", ACCEPTED, (o, on) => o.unprivileged = on),
  bool("deprecated", "", ACCEPTED, (o, on) => o.deprecated = on),

  // Dump and pre-dump.
  opt("tree", "t", "required", IMPLEMENTED, (o, v) => o.tree = integer(v, 1)),
  opt("leave-running", "R", "none", IMPLEMENTED, (o) => o.finalState = "running"),
  opt("leave-stopped", "s", "none", IMPLEMENTED, (o) => o.finalState = "stopped"),
  bool("track-mem", "", ACCEPTED, (o, on) => o.trackMem = on),
  opt("pre-dump-mode", "", "required", ACCEPTED, (o, v) => o.preDumpMode = oneOf(v, ["splice", "read"])),
  opt("timeout", "", "required", ACCEPTED, (o, v) => o.timeout = integer(v, 0)),
  opt("freeze-cgroup", "", "required", ACCEPTED, (o, v) => o.freezeCgroup = v),
  opt("external", "", "required", ACCEPTED, (o, v) => o.external.push(v)),
  opt("ext-unix-sk", "x", "optional", ACCEPTED, extUnixSk),
  bool("tcp-established", "", IMPLEMENTED, (o, on) => o.tcpEstablished = on),
  bool("tcp-close", "", IMPLEMENTED, (o, on) => o.tcpClose = on),
  bool("skip-in-flight", "", IMPLEMENTED, (o, on) => o.skipInFlight = on),
  bool("evasive-devices", "", ACCEPTED, (o, on) => o.evasiveDevices = on),
  bool("link-remap", "", ACCEPTED, (o, on) => o.linkRemap = on),
  opt("ghost-limit", "", "required", ACCEPTED, (o, v) => o.ghostLimit = size(v)),
  bool("ghost-fiemap", "", ACCEPTED, (o, on) => o.ghostFiemap = on),
  bool("file-locks", "l", ACCEPTED, (o, on) => o.fileLocks = on),
  bool("shell-job", "j", IMPLEMENTED, (o, on) => o.shellJob = on),
  bool("force-irmap", "", ACCEPTED, (o, on) => o.forceIrmap = on),
  opt("irmap-scan-path", "", "required", ACCEPTED, (o, v) => o.irmapScanPaths.push(v)),
  bool("auto-dedup", "", ACCEPTED, (o, on) => o.autoDedup = on),
  opt("cpu-cap", "", "optional", ACCEPTED, (o, v) => o.cpuCaps = cpuCaps(o.cpuCaps, v)),
  opt("file-validation", "", "required", ACCEPTED, (o, v) => {
    o.fileValidation = oneOf(v, ["filesize", "buildid"]);
  }),
  opt("network-lock", "", "required", IMPLEMENTED, (o, v) => {
    const method = oneOf(v, ["iptables", "nftables", "skip", "none"]);
    o.networkLock = method === "none" ? "skip" : method;
  }),
  bool("allow-uprobes", "", ACCEPTED, (o, on) => o.allowUprobes = on),
  opt("skip-mnt", "", "required", ACCEPTED, (o, v) => o.skipMounts.push(v)),
  opt("enable-fs", "", "required", ACCEPTED, (o, v) => o.enableFs.push(...v.split(","))),
  opt("enable-external-sharing", "", "none", ACCEPTED, (o) => o.enableExternalSharing = true),
  opt("enable-external-masters", "", "none", ACCEPTED, (o) => o.enableExternalMasters = true),

  // Cgroups.
  opt("manage-cgroups", "", "optional", ACCEPTED, (o, v) => {
    o.manageCgroups = v === undefined
      ? "soft"
      : oneOf(v, ["none", "props", "soft", "full", "strict", "ignore"]);
  }),
  opt("cgroup-root", "", "required", ACCEPTED, (o, v) => o.cgroupRoots.push(cgroupRoot(v))),
  opt("cgroup-props", "", "required", ACCEPTED, (o, v) => o.cgroupProps = v),
  opt("cgroup-props-file", "", "required", ACCEPTED, (o, v) => o.cgroupPropsFile = v),
  opt("cgroup-dump-controller", "", "required", ACCEPTED, (o, v) => o.cgroupDumpControllers.push(v)),
  opt("cgroup-yard", "", "required", ACCEPTED, (o, v) => o.cgroupYard = v),

  // Restore.
  bool("restore-detached", "d", IMPLEMENTED, (o, on) => o.restoreDetached = on),
  bool("daemon", "", IMPLEMENTED, (o, on) => o.restoreDetached = on),
  bool("restore-sibling", "S", IMPLEMENTED, (o, on) => o.restoreSibling = on),
  opt("root", "r", "required", REFUSED, (o, v) => o.root = v, "restoring into another root"),
  opt("join-ns", "J", "required", REFUSED, (o, v) => o.joinNs.push(joinNs(v)), "joining namespaces"),
  opt("inherit-fd", "", "required", REFUSED, (o, v) => o.inheritFds.push(inheritFd(v))),
  opt("ext-mount-map", "M", "required", ACCEPTED, extMountMap),
  opt("veth-pair", "", "required", ACCEPTED, (o, v) => o.vethPairs.push(vethPair(v))),
  opt("empty-ns", "", "required", IMPLEMENTED, (o, v) => o.emptyNetNs = oneOf(v, ["net"]) === "net"),
  opt(
    "lsm-profile",
    "",
    "required",
    REFUSED,
    (o, v) => o.lsmProfile = v,
    "restoring under another LSM label",
  ),
  opt("lsm-mount-context", "", "required", ACCEPTED, (o, v) => o.lsmMountContext = v),
  bool("weak-sysctls", "", ACCEPTED, (o, on) => o.weakSysctls = on),
  bool("skip-file-rwx-check", "", ACCEPTED, (o, on) => o.skipFileRwxCheck = on),
  bool("mntns-compat-mode", "", ACCEPTED, (o, on) => o.mntnsCompatMode = on),
  opt("exec-cmd", "", "none", REFUSED, (o) => o.execCmd = true),

  // Check.
  bool("extra", "", IMPLEMENTED, (o, on) => o.checkExtra = on),
  bool("experimental", "", IMPLEMENTED, (o, on) => o.checkExperimental = on),
  opt("all", "", "none", IMPLEMENTED, (o) => o.checkExtra = o.checkExperimental = true),
  opt("feature", "", "required", IMPLEMENTED, (o, v) => o.features.push(v)),
  opt("ms", "", "none", REFUSED, () => {}, "it is deprecated; see the check options in --help"),

  // Page server, lazy pages, service.
  bool("page-server", "", REFUSED, (o, on) => o.pageServer = on, "sending pages to a page server"),
  opt("lazy-pages", "", "none", REFUSED, (o) => o.lazyPages = true, "restoring pages on demand"),
  opt("address", "", "required", IMPLEMENTED, (o, v) => o.address = v),
  opt("port", "", "required", ACCEPTED, (o, v) => o.port = integer(v, 1, 65535)),
  opt("ps-socket", "", "required", ACCEPTED, (o, v) => o.psSocket = integer(v, 0)),
  opt("status-fd", "", "required", ACCEPTED, (o, v) => o.statusFd = integer(v, 0)),
  bool("tls", "", REFUSED, (o, on) => o.tls = on, "TLS for page-server connections"),
  opt("tls-cacert", "", "required", ACCEPTED, (o, v) => o.tlsCacert = v),
  opt("tls-cacrl", "", "required", ACCEPTED, (o, v) => o.tlsCacrl = v),
  opt("tls-cert", "", "required", ACCEPTED, (o, v) => o.tlsCert = v),
  opt("tls-key", "", "required", ACCEPTED, (o, v) => o.tlsKey = v),
  opt("tls-no-cn-verify", "", "none", ACCEPTED, (o) => o.tlsNoCnVerify = true),
];
