/**
 * The options of a criu-ts run: what the command line, the config files and RPC requests can
 * set, as one typed object, with CRIU's defaults. The command line (src/cli) and RPC (src/rpc)
 * both fill an Options; the dump and restore cores get it frozen (RunOptions) and hand it down,
 * unchanged, to every task and object kind. There is no global copy.
 */
/** What becomes of the dumped tasks: killed (the default), left stopped (-s), or left running (-R). */
export type FinalState = "dead" | "stopped" | "running";
export type CgroupMode = "none" | "props" | "soft" | "full" | "strict" | "ignore";
export type NetworkLock = "iptables" | "nftables" | "skip";
/**
 * Each method as inventory_entry.network_lock_method stores it: CRIU writes its own enum there
 * (iptables 0), not the RPC's criu_network_lock_method (iptables 1), and an unset field is iptables.
 */
export const NETWORK_LOCK_METHOD: Record<NetworkLock, number> = { iptables: 0, nftables: 1, skip: 2 };
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

/** Read-only all the way down: what the cores and object kinds see. */
export type DeepReadonly<T> = T extends (infer U)[] ? readonly DeepReadonly<U>[]
  : T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
  : T;

/** The options a dump or restore runs with: a frozen copy, the same object at every layer. */
export type RunOptions = DeepReadonly<Options>;

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/** A frozen copy of `options`; later changes to `options` do not reach it. */
export function freezeOptions(options: Options): RunOptions {
  return deepFreeze(structuredClone(options));
}
