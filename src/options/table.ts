/**
 * CRIU's option table: every option of CRIU's `criu` command, with CRIU's spelling, short letter
 * and argument kind (criu/config.c's getopt_long table), the commands it means something for,
 * how far criu-ts supports it, and how its argument is checked and stored into Options. The
 * command line, config files and RPC requests all go through this one table.
 *
 * Adding an option is one row here plus its use. As features land, change a row's support from
 * "accepted-and-logged" or "refused" to "implemented"; nothing else needs to change.
 */
import { InvalidValue } from "./errors.ts";
import type { CgroupRoot, CpuCaps, InheritFd, JoinNs, Options, VethPair } from "./options.ts";

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

/** none: a flag; required: `--opt VALUE`, `--opt=VALUE`, `-xVALUE`, `-x VALUE`; optional: attached only. */
export type ArgKind = "none" | "required" | "optional";

/**
 * implemented: criu-ts acts on it.
 * accepted-and-logged: a runtime may pass it; we do not act on it yet, and the caller logs that.
 * refused: ignoring it would silently change the result, so the command stops with an error.
 */
export type Support = "implemented" | "accepted-and-logged" | "refused";

/** A support level and, for a refusal, what is not there yet. */
export interface SupportLevel {
  readonly support: Support;
  readonly reason?: string;
}

/** Called by a store function to leave a message for the log (a value read in an odd way). */
export type Note = (message: string) => void;

interface SpecBase {
  /** Long name without the dashes. */
  readonly long: string;
  /** Short letter, or "" when there is none. */
  readonly short: string;
  /** The commands the option means something for; others accept it and ignore it, as CRIU does. */
  readonly applies: "all" | readonly Command[];
  readonly support: Support;
  /** Why a refused option is refused, when there is more to say than "not supported yet". */
  readonly reason?: string;
  /** A support level of its own on some commands (-s is done for dump, not yet for restore). */
  readonly supportOn?: Partial<Record<Command, SupportLevel>>;
}

/** One row of the table. `store` checks the argument (throwing InvalidValue) and records it. */
export type OptionSpec =
  | SpecBase & {
    readonly arg: "none";
    /** CRIU also accepts `--no-NAME`, which stores false. */
    readonly negatable: boolean;
    readonly store: (o: Options, on: boolean, note: Note) => void;
  }
  | SpecBase & { readonly arg: "required"; readonly store: (o: Options, value: string, note: Note) => void }
  | SpecBase & {
    readonly arg: "optional";
    readonly store: (o: Options, value: string | undefined, note: Note) => void;
  };

type StoreFor<A extends ArgKind> = A extends "none" ? (o: Options, on: boolean, note: Note) => void
  : A extends "required" ? (o: Options, value: string, note: Note) => void
  : (o: Options, value: string | undefined, note: Note) => void;

type Applies = SpecBase["applies"];

/** A row of OPTION_TABLE; the type of `store`'s value follows `arg`. */
function opt<A extends ArgKind>(
  long: string,
  short: string,
  arg: A,
  applies: Applies,
  support: Support,
  store: StoreFor<A>,
  reason?: string,
): OptionSpec {
  const row = { long, short, arg, applies, support, store, negatable: false };
  return (reason === undefined ? row : { ...row, reason }) as OptionSpec;
}

/** A row for a flag that also has a `--no-` form (CRIU's BOOL_OPT). */
function bool(
  long: string,
  short: string,
  applies: Applies,
  support: Support,
  store: StoreFor<"none">,
  reason?: string,
): OptionSpec {
  const row = opt(long, short, "none", applies, support, store, reason);
  return { ...row, negatable: true } as OptionSpec;
}

/** A row whose support differs on some commands. */
function withSupportOn(row: OptionSpec, supportOn: Partial<Record<Command, SupportLevel>>): OptionSpec {
  return { ...row, supportOn };
}

/** Whether `spec` means something for `command`. The RPC servers take every option: it is the base of their requests. */
export function appliesTo(spec: OptionSpec, command: Command): boolean {
  if (spec.applies === "all" || command === "swrk" || command === "service") return true;
  return spec.applies.includes(command);
}

/** How far criu-ts supports `spec` for `command`. */
export function supportFor(spec: OptionSpec, command: Command): SupportLevel {
  const own = spec.supportOn?.[command];
  if (own !== undefined) return own;
  return spec.reason === undefined
    ? { support: spec.support }
    : { support: spec.support, reason: spec.reason };
}

const IMPLEMENTED = "implemented";
const ACCEPTED = "accepted-and-logged";
const REFUSED = "refused";

const ALL = "all";
const DUMP: readonly Command[] = ["dump", "pre-dump"];
const DUMP_RESTORE: readonly Command[] = ["dump", "pre-dump", "restore"];
const RESTORE: readonly Command[] = ["restore"];
const CHECK: readonly Command[] = ["check"];
/** Commands that run as daemons and can write a pidfile or detach (-d). */
const DAEMONS: readonly Command[] = ["restore", "service", "page-server", "lazy-pages"];
/** Commands that send or receive pages over the network. */
const NETWORK: readonly Command[] = ["dump", "pre-dump", "restore", "page-server", "lazy-pages", "service"];
const CPUINFO: readonly Command[] = ["dump", "restore", "cpuinfo dump", "cpuinfo check"];

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

/** `mnt[]` takes CRIU's auto options only: none, `:m` (external masters) or `:s` (external sharing). */
function external(o: Options, value: string): void {
  if (value.startsWith("mnt[]") && !/^mnt\[\](:[ms]?)?$/.test(value)) {
    throw new InvalidValue("mnt[], mnt[]:m or mnt[]:s");
  }
  o.external.push(value);
}

function extMountMap(o: Options, value: string): void {
  if (value === "auto") {
    o.autoDetectExtMounts = true;
    return;
  }
  // The value may be empty, as CRIU takes it: LXC passes `console:` for a container without one.
  const at = value.indexOf(":");
  if (at <= 0) throw new InvalidValue("KEY:VALUE or auto");
  o.extMountMaps.push({ key: value.slice(0, at), value: value.slice(at + 1) });
}

function vethPair(value: string): VethPair {
  const [inside, outside] = pair(value, "=", "INSIDE=OUTSIDE");
  return { inside, outside };
}

/**
 * -v: no argument adds one; `-vvv` reaches us as -v with "vv", and CRIU adds one more than the
 * argument's length whenever it starts with v; `-v4` sets 4. `-verbosity=N` is -v with the
 * argument "erbosity=N" (getopt_long has no single-dash long options), from which CRIU's atoi
 * reads 0: so do we, and say so. Other words (`-vx`) are refused rather than read as 0.
 */
function verbosity(o: Options, value: string | undefined, note: Note): void {
  if (value === undefined) o.verbosity++;
  else if (value.startsWith("v")) o.verbosity += value.length + 1;
  else if (/^erbosity(=|$)/.test(value)) {
    o.verbosity = 0;
    note(
      `Option -v${value} is -v with the argument '${value}', which CRIU reads as verbosity 0; ` +
        `write --verbosity=N or -vN for another level`,
    );
  } else o.verbosity = integer(value, 0);
}

/**
 * Every option, grouped as in CRIU's manual. Columns: long name, short letter, argument, the
 * commands it applies to, support, how the value is stored, and (refused only) why.
 */
export const OPTION_TABLE: readonly OptionSpec[] = [
  // Help, version and config files (the config options are read before everything else).
  opt("help", "h", "none", ALL, IMPLEMENTED, (o) => o.help = true),
  opt("version", "V", "none", ALL, IMPLEMENTED, (o) => o.version = true),
  opt("config", "", "required", ALL, IMPLEMENTED, () => {}),
  opt("no-default-config", "", "none", ALL, IMPLEMENTED, () => {}),

  // Logging, directories, plugins and scripts.
  opt("verbosity", "v", "optional", ALL, IMPLEMENTED, verbosity),
  opt("log-file", "o", "required", ALL, IMPLEMENTED, (o, v) => o.logFile = v),
  bool("log-pid", "", ALL, IMPLEMENTED, (o, on) => o.logPid = on),
  bool("display-stats", "", DUMP_RESTORE, IMPLEMENTED, (o, on) => o.displayStats = on),
  opt("images-dir", "D", "required", ALL, IMPLEMENTED, (o, v) => o.imagesDir = v),
  opt("work-dir", "W", "required", ALL, IMPLEMENTED, (o, v) => o.workDir = v),
  opt(
    "prev-images-dir",
    "",
    "required",
    DUMP,
    REFUSED,
    (o, v) => o.prevImagesDir = v,
    "iterative migration",
  ),
  opt("pidfile", "", "required", DAEMONS, IMPLEMENTED, (o, v) => o.pidfile = v),
  opt("libdir", "L", "required", ALL, IMPLEMENTED, (o, v) => o.libdir = v),
  opt("action-script", "", "required", ALL, IMPLEMENTED, (o, v) => o.actionScripts.push(v)),
  opt("close", "", "required", ALL, ACCEPTED, (o, v) => o.closeFds.push(integer(v, 0))),
  bool("stream", "", DUMP_RESTORE, REFUSED, (o, on) => o.stream = on, "images through criu-image-streamer"),
  bool("unprivileged", "", ALL, ACCEPTED, (o, on) => o.unprivileged = on),
  bool("deprecated", "", ALL, ACCEPTED, (o, on) => o.deprecated = on),

  // Dump and pre-dump.
  opt("tree", "t", "required", DUMP, IMPLEMENTED, (o, v) => o.tree = integer(v, 1)),
  opt("leave-running", "R", "none", ["dump"], IMPLEMENTED, (o) => o.finalState = "running"),
  withSupportOn(
    opt("leave-stopped", "s", "none", ["dump", "restore"], IMPLEMENTED, (o) => o.finalState = "stopped"),
    {
      restore: { support: REFUSED, reason: "leaving the restored tasks stopped" },
    },
  ),
  bool("track-mem", "", DUMP, REFUSED, (o, on) => o.trackMem = on, "iterative migration"),
  opt("pre-dump-mode", "", "required", ["pre-dump"], ACCEPTED, (o, v) => {
    o.preDumpMode = oneOf(v, ["splice", "read"]);
  }),
  opt("timeout", "", "required", DUMP, ACCEPTED, (o, v) => o.timeout = integer(v, 0)),
  opt("freeze-cgroup", "", "required", DUMP, IMPLEMENTED, (o, v) => o.freezeCgroup = v),
  opt("external", "", "required", DUMP_RESTORE, IMPLEMENTED, external),
  opt("ext-unix-sk", "x", "optional", DUMP_RESTORE, IMPLEMENTED, extUnixSk),
  bool("tcp-established", "", DUMP_RESTORE, IMPLEMENTED, (o, on) => o.tcpEstablished = on),
  bool("tcp-close", "", DUMP_RESTORE, IMPLEMENTED, (o, on) => o.tcpClose = on),
  bool("skip-in-flight", "", DUMP, IMPLEMENTED, (o, on) => o.skipInFlight = on),
  bool("evasive-devices", "", DUMP, IMPLEMENTED, (o, on) => o.evasiveDevices = on),
  bool("link-remap", "", DUMP, IMPLEMENTED, (o, on) => o.linkRemap = on),
  opt("ghost-limit", "", "required", DUMP, IMPLEMENTED, (o, v) => o.ghostLimit = size(v)),
  bool("ghost-fiemap", "", DUMP, ACCEPTED, (o, on) => o.ghostFiemap = on),
  bool("file-locks", "l", DUMP_RESTORE, IMPLEMENTED, (o, on) => o.fileLocks = on),
  bool("shell-job", "j", DUMP_RESTORE, IMPLEMENTED, (o, on) => o.shellJob = on),
  bool("force-irmap", "", DUMP, ACCEPTED, (o, on) => o.forceIrmap = on),
  opt("irmap-scan-path", "", "required", DUMP, ACCEPTED, (o, v) => o.irmapScanPaths.push(v)),
  bool("auto-dedup", "", DUMP_RESTORE, ACCEPTED, (o, on) => o.autoDedup = on),
  opt("cpu-cap", "", "optional", CPUINFO, ACCEPTED, (o, v) => o.cpuCaps = cpuCaps(o.cpuCaps, v)),
  opt("file-validation", "", "required", DUMP_RESTORE, ACCEPTED, (o, v) => {
    o.fileValidation = oneOf(v, ["filesize", "buildid"]);
  }),
  // On restore CRIU takes the method the dump used, and only warns about this option.
  opt("network-lock", "", "required", DUMP, IMPLEMENTED, (o, v) => {
    const method = oneOf(v, ["iptables", "nftables", "skip", "none"]);
    o.networkLock = method === "none" ? "skip" : method;
  }),
  bool("allow-uprobes", "", DUMP_RESTORE, ACCEPTED, (o, on) => o.allowUprobes = on),
  opt("skip-mnt", "", "required", DUMP, ACCEPTED, (o, v) => o.skipMounts.push(v)),
  opt("enable-fs", "", "required", DUMP, IMPLEMENTED, (o, v) => o.enableFs.push(...v.split(","))),
  opt("enable-external-sharing", "", "none", DUMP, IMPLEMENTED, (o) => o.enableExternalSharing = true),
  opt("enable-external-masters", "", "none", DUMP, IMPLEMENTED, (o) => o.enableExternalMasters = true),

  // Cgroups.
  opt("manage-cgroups", "", "optional", DUMP_RESTORE, IMPLEMENTED, (o, v) => {
    o.manageCgroups = v === undefined
      ? "soft"
      : oneOf(v, ["none", "props", "soft", "full", "strict", "ignore"]);
  }),
  opt("cgroup-root", "", "required", RESTORE, IMPLEMENTED, (o, v) => o.cgroupRoots.push(cgroupRoot(v))),
  opt("cgroup-props", "", "required", DUMP, IMPLEMENTED, (o, v) => o.cgroupProps = v),
  opt("cgroup-props-file", "", "required", DUMP, IMPLEMENTED, (o, v) => o.cgroupPropsFile = v),
  opt("cgroup-dump-controller", "", "required", DUMP, IMPLEMENTED, (o, v) => o.cgroupDumpControllers.push(v)),
  opt("cgroup-yard", "", "required", DUMP_RESTORE, IMPLEMENTED, (o, v) => o.cgroupYard = v),

  // Restore.
  bool("restore-detached", "d", DAEMONS, IMPLEMENTED, (o, on) => o.restoreDetached = on),
  bool("daemon", "", DAEMONS, IMPLEMENTED, (o, on) => o.restoreDetached = on),
  bool("restore-sibling", "S", RESTORE, IMPLEMENTED, (o, on) => o.restoreSibling = on),
  opt("root", "r", "required", RESTORE, IMPLEMENTED, (o, v) => o.root = v),
  opt(
    "join-ns",
    "J",
    "required",
    RESTORE,
    REFUSED,
    (o, v) => o.joinNs.push(joinNs(v)),
    "joining namespaces",
  ),
  opt("inherit-fd", "", "required", RESTORE, IMPLEMENTED, (o, v) => o.inheritFds.push(inheritFd(v))),
  opt("ext-mount-map", "M", "required", DUMP_RESTORE, IMPLEMENTED, extMountMap),
  opt("veth-pair", "", "required", RESTORE, IMPLEMENTED, (o, v) => o.vethPairs.push(vethPair(v))),
  opt("empty-ns", "", "required", DUMP_RESTORE, IMPLEMENTED, (o, v) => {
    o.emptyNetNs = oneOf(v, ["net"]) === "net";
  }),
  // Checked against the host's security module before a dump or restore starts (src/lsm.ts).
  opt("lsm-profile", "", "required", DUMP_RESTORE, IMPLEMENTED, (o, v) => o.lsmProfile = v),
  opt("lsm-mount-context", "", "required", RESTORE, ACCEPTED, (o, v) => o.lsmMountContext = v),
  bool("weak-sysctls", "", RESTORE, ACCEPTED, (o, on) => o.weakSysctls = on),
  bool("skip-file-rwx-check", "", RESTORE, ACCEPTED, (o, on) => o.skipFileRwxCheck = on),
  bool("mntns-compat-mode", "", RESTORE, ACCEPTED, (o, on) => o.mntnsCompatMode = on),
  opt("exec-cmd", "", "none", RESTORE, REFUSED, (o) => o.execCmd = true),

  // Check.
  bool("extra", "", CHECK, IMPLEMENTED, (o, on) => o.checkExtra = on),
  bool("experimental", "", CHECK, IMPLEMENTED, (o, on) => o.checkExperimental = on),
  opt("all", "", "none", CHECK, IMPLEMENTED, (o) => o.checkExtra = o.checkExperimental = true),
  opt("feature", "", "required", CHECK, IMPLEMENTED, (o, v) => o.features.push(v)),
  opt("ms", "", "none", ALL, REFUSED, () => {}, "it is deprecated; see the check options in --help"),

  // Page server, lazy pages, service.
  bool("page-server", "", DUMP, REFUSED, (o, on) => o.pageServer = on, "sending pages to a page server"),
  opt(
    "lazy-pages",
    "",
    "none",
    [...DUMP_RESTORE, "page-server"],
    REFUSED,
    (o) => o.lazyPages = true,
    "restoring pages on demand",
  ),
  opt("address", "", "required", NETWORK, IMPLEMENTED, (o, v) => o.address = v),
  opt("port", "", "required", NETWORK, ACCEPTED, (o, v) => o.port = integer(v, 1, 65535)),
  opt("ps-socket", "", "required", NETWORK, ACCEPTED, (o, v) => o.psSocket = integer(v, 0)),
  opt("status-fd", "", "required", NETWORK, ACCEPTED, (o, v) => o.statusFd = integer(v, 0)),
  bool("tls", "", NETWORK, REFUSED, (o, on) => o.tls = on, "TLS for page-server connections"),
  opt("tls-cacert", "", "required", NETWORK, ACCEPTED, (o, v) => o.tlsCacert = v),
  opt("tls-cacrl", "", "required", NETWORK, ACCEPTED, (o, v) => o.tlsCacrl = v),
  opt("tls-cert", "", "required", NETWORK, ACCEPTED, (o, v) => o.tlsCert = v),
  opt("tls-key", "", "required", NETWORK, ACCEPTED, (o, v) => o.tlsKey = v),
  opt("tls-no-cn-verify", "", "none", NETWORK, ACCEPTED, (o) => o.tlsNoCnVerify = true),
];
