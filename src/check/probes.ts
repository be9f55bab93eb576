/**
 * The kernel features criu-ts relies on, as one table: name → probe → supported or not, and why.
 *
 * Names are CRIU's where CRIU has one (`criu check --feature NAME` takes exactly those), so that
 * runtimes asking CRIU's questions get CRIU's answers. The checks CRIU runs without naming them (its
 * "category 1") and the checks only criu-ts needs carry names of ours; `--feature` takes those too.
 *
 * Categories, as CRIU uses them:
 *   core          every `criu check` runs these; one missing means criu-ts cannot work here
 *   extra         `--extra`/`--all`: needed only by some process trees (AIO, tun, userns, ...)
 *   experimental  `--experimental`/`--all`
 *   optional      run with `--extra`, reported, never counted against the result
 *   on-request    only through `--feature NAME`
 *
 * Every probe is a real attempt (a syscall, an ioctl, a ptrace request on a throwaway child), not a
 * version comparison, and leaves nothing behind: fds are closed, children killed and reaped.
 */
import * as own from "./own.ts";
import * as net from "./sockets.ts";
import * as child from "./in_child.ts";
import { no, ProbeEnv, type ProbeResult, yes } from "./result.ts";

export { ProbeEnv, type ProbeResult } from "./result.ts";

export type Category = "core" | "extra" | "experimental" | "optional" | "on-request";

export interface Feature {
  readonly name: string;
  /** "criu": a name CRIU's `--feature` knows; "criu-ts": one of ours. */
  readonly origin: "criu" | "criu-ts";
  readonly category: Category;
  /** What is tried, in a few words (for `--feature` reports and the documentation). */
  readonly how: string;
  readonly probe: (env: ProbeEnv) => ProbeResult;
  /** For a category run: skip the feature when this says it does not apply here. */
  readonly appliesHere?: () => boolean;
}

function criu(
  name: string,
  category: Category,
  how: string,
  probe: (env: ProbeEnv) => ProbeResult,
  appliesHere?: () => boolean,
): Feature {
  return appliesHere
    ? { name, origin: "criu", category, how, probe, appliesHere }
    : { name, origin: "criu", category, how, probe };
}

function ours(name: string, category: Category, how: string, probe: (env: ProbeEnv) => ProbeResult): Feature {
  return { name, origin: "criu-ts", category, how, probe };
}

/**
 * The table. CRIU's named features come first, in CRIU's order (this is the order `--feature list`
 * prints), then ours: CRIU's unnamed always-run checks, then what only criu-ts needs.
 */
export const FEATURES: readonly Feature[] = [
  criu("mnt_id", "extra", "fdinfo of an open directory has mnt_id", own.mntId),
  criu(
    "mem_dirty_track",
    "extra",
    "clear_refs 4 on a child, write a page, look for the soft-dirty bit",
    child.memDirtyTrack,
  ),
  criu("aio_remap", "extra", "io_setup in a child, mremap the ring, io_getevents on it", child.aioRemap),
  criu("timerfd", "extra", "timerfd_create + ioctl(TFD_IOC_SET_TICKS)", own.timerfd),
  criu("tun", "extra", "open /dev/net/tun + ioctl(TUNSETIFINDEX)", own.tun),
  criu("tun_ns", "on-request", "ioctl(SIOCGSKNS) on a /dev/net/tun fd", own.tunNetns),
  criu("userns", "extra", "/proc/self/ns/user + prctl(PR_SET_MM_MAP_SIZE)", own.userns),
  criu("fdinfo_lock", "extra", "flock a file, look for lock: in its fdinfo", own.fdinfoLock),
  criu(
    "seccomp_suspend",
    "extra",
    "PTRACE_SETOPTIONS(PTRACE_O_SUSPEND_SECCOMP) on a child",
    child.seccompSuspend,
  ),
  criu(
    "seccomp_filters",
    "extra",
    "install a filter in a child, read it with PTRACE_SECCOMP_GET_FILTER",
    child.seccompFilters,
  ),
  criu("loginuid", "extra", "a child unsets its /proc/self/loginuid and sets it back", child.loginuid),
  criu(
    "cgroupns",
    "extra",
    "/proc/self/ns/cgroup exists",
    own.nsFile("cgroup", "cgroup namespaces are not supported"),
  ),
  criu(
    "autofs",
    "experimental",
    "mount autofs in a child's own mount namespace, look for pipe_ino",
    child.autofs,
  ),
  criu(
    "tcp_half_closed",
    "extra",
    "TCP_REPAIR on a loopback connection after shutdown(SHUT_WR)",
    net.tcpHalfClosed,
  ),
  criu(
    "compat_cr",
    "experimental",
    "criu-ts capability",
    own.notInCriuTs("criu-ts checkpoints 64-bit tasks only (no ia32/compat support)"),
  ),
  criu("uffd", "extra", "userfaultfd + UFFDIO_API", own.uffd),
  criu("uffd-noncoop", "extra", "UFFDIO_API reports fork, remap, remove and unmap events", own.uffdNoncoop),
  criu("can_map_vdso", "extra", "arch_prctl(ARCH_MAP_VDSO_64) in a child answers EEXIST", child.canMapVdso),
  criu("sk_ns", "extra", "ioctl(SIOCGSKNS) on a unix socket", net.skNetns),
  criu("sk_unix_file", "on-request", "ioctl(SIOCUNIXFILE) on a unix socket", net.skUnixFile),
  criu("net_diag_raw", "extra", "sock_diag dump of raw and raw6 sockets", net.netDiagRaw),
  criu("nsid", "on-request", "RTM_GETNSID for our own pid", net.nsid),
  criu(
    "link_nsid",
    "on-request",
    "veth pair across two netns made in a child reports IFLA_LINK_NETNSID",
    child.linkNsid,
  ),
  criu("kcmp_epoll", "extra", "kcmp(KCMP_EPOLL_TFD) on an epoll watching a pipe", own.kcmpEpoll),
  criu("timens", "extra", "/proc/self/timens_offsets exists", own.timens),
  criu(
    "external_net_ns",
    "on-request",
    "criu-ts capability",
    () => yes("--external net[INODE]:KEY and --inherit-fd fd[N]:KEY (src/objects/netns_external.ts)"),
  ),
  criu("clone3_set_tid", "core", "clone3 with set_tid in a child creates the chosen pid", child.clone3SetTid),
  criu("newifindex", "extra", "RTM_SETLINK with a negative IFLA_NEW_IFINDEX answers ERANGE", net.newIfindex),
  criu(
    "nftables",
    "on-request",
    "criu-ts capability",
    own.notInCriuTs("criu-ts does not save or restore nftables rules (it has no libnftables)"),
  ),
  criu(
    "has_ipt_legacy",
    "on-request",
    "iptables-save or iptables-legacy-save with the legacy backend",
    own.hasIptLegacy,
  ),
  criu("pidfd_store", "extra", "pidfd_open + pidfd_getfd on a socket pair", own.pidfdStore),
  criu("ns_pid", "extra", "/proc/self/status has NSpid", own.nsPid),
  criu(
    "apparmor_stacking",
    "extra",
    "AppArmor domain stacking on, version 1.2 or later",
    own.apparmorStacking,
    own.apparmorActive,
  ),
  criu(
    "network_lock_nftables",
    "extra",
    "criu-ts capability",
    own.notInCriuTs("criu-ts has no nftables-based network lock"),
  ),
  criu("sockopt_buf_lock", "extra", "getsockopt(SO_BUF_LOCK)", net.sockoptBufLock),
  criu("memfd_hugetlb", "extra", "memfd_create(MFD_HUGETLB)", own.memfdHugetlb),
  criu(
    "move_mount_set_group",
    "extra",
    "move_mount(MOVE_MOUNT_SET_GROUP) in a child's own mount namespace",
    child.moveMountSetGroup,
  ),
  criu("openat2", "extra", "openat2 answers something else than ENOSYS", own.openat2),
  criu("get_rseq_conf", "core", "PTRACE_GET_RSEQ_CONFIGURATION on a child", child.getRseqConf),
  criu("ipv6_freebind", "extra", "setsockopt(IPV6_FREEBIND)", net.ipv6Freebind),
  criu("pagemap_scan", "extra", "ioctl(PAGEMAP_SCAN) on /proc/self/pagemap", own.pagemapScanFeature),
  criu("timer_cr_ids", "extra", "prctl(PR_TIMER_CREATE_RESTORE_IDS, GET)", own.timerCrIds),
  criu(
    "overlayfs_maps",
    "extra",
    "map a file of an overlayfs mounted in a child; compare maps with stat",
    child.overlayfsMaps,
  ),
  criu("breakpoints", "optional", "a hardware breakpoint (DR0/DR7) stops a child", child.breakpoints),
  criu("pagemap_scan_guard_pages", "extra", "PAGEMAP_SCAN with PAGE_IS_GUARD", own.pagemapScanGuardPages),

  // CRIU's always-run checks, which CRIU does not name.
  ours("capabilities", "core", "CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE in CapEff", own.capabilities),
  ours("map_files", "core", "/proc/self/map_files is readable", own.mapFilesSelf),
  ours("sock_diag", "core", "sock_diag dumps of unix, tcp, udp, packet and netlink sockets", net.sockDiag),
  ours("ns_last_pid", "core", "/proc/sys/kernel/ns_last_pid is writable", own.nsLastPid),
  ours("sock_peek_off", "core", "getsockopt(SO_PEEK_OFF) on a unix socket", net.sockPeekOff),
  ours("kcmp", "core", "kcmp(KCMP_FILE) of an fd with itself", own.kcmp),
  ours("prctl", "core", "prctl(PR_GET_TID_ADDRESS) and prctl(PR_SET_MM_MAP_SIZE)", own.prctlBasics),
  ours("fcntl", "core", "fcntl(F_GETOWNER_UIDS)", own.fcntlOwnerUids),
  ours("proc_stat", "core", "/proc/self/stat has the memory layout fields", own.procStat),
  ours("tcp", "core", "TCP_REPAIR on + getsockopt(TCP_TIMESTAMP)", net.tcp),
  ours("fdinfo_ext", "core", "fdinfo of eventfd, epoll, signalfd and inotify fds", own.fdinfoExt),
  ours("unaligned_vmsplice", "core", "vmsplice of an unaligned byte into a pipe", own.unalignedVmsplice),
  ours("tty", "core", "a locked pty refuses to open", own.tty),
  ours("so_gets", "core", "getsockopt(SO_GET_FILTER) and getsockopt(SO_BINDTODEVICE)", net.soGets),
  ours("ipc", "core", "/proc/sys/kernel/sem_next_id is readable and writable", own.ipcNextId),
  ours("sigqueueinfo", "core", "rt_sigqueueinfo with a positive si_code in a child", child.sigqueueinfo),
  ours(
    "ptrace_peeksiginfo",
    "core",
    "PTRACE_PEEKSIGINFO and PTRACE_GETSIGMASK on a child",
    child.ptracePeeksiginfo,
  ),
  ours(
    "special_mapping_mremap",
    "core",
    "mremap vvar and vdso in a child, then a syscall from the moved vdso",
    child.specialMappingMremap,
  ),
  ours("posix_timers", "extra", "/proc/self/timers is readable", own.posixTimers),
  ours(
    "clone_parent_newpid",
    "extra",
    "clone3(CLONE_PARENT | CLONE_NEWPID) in a child",
    child.cloneParentNewpid,
  ),
  ours("tcp_repair_window", "extra", "getsockopt(TCP_REPAIR_WINDOW) in repair mode", net.tcpRepairWindow),

  // What criu-ts's own way of working needs.
  ours(
    "ptrace_seize",
    "core",
    "PTRACE_SEIZE + PTRACE_INTERRUPT a child, read NT_PRSTATUS and NT_X86_XSTATE",
    child.ptraceSeize,
  ),
  ours("remote_syscall", "core", "single-step a syscall from a child's [vdso]", child.remoteSyscall),
  ours("process_vm_readv", "core", "process_vm_readv/writev on a child", child.processVmRw),
  ours("proc_pid_mem", "core", "pwrite /proc/PID/mem into a child's read-only page", child.procPidMem),
  ours("pagemap", "core", "/proc/PID/pagemap of a child shows a written page present", child.pagemap),
  ours("prctl_mm_map", "core", "prctl(PR_SET_MM, PR_SET_MM_MAP) run in a child", child.prctlMmMapInChild),
  ours("close_range", "core", "close_range exists", own.closeRange),
  ours("memfd", "extra", "memfd_create", own.memfd),
  ours(
    "pagemap_scan_dirty_track",
    "extra",
    "userfaultfd async write-protect in a child + PAGEMAP_SCAN finds exactly the page written",
    child.pagemapScanDirtyTrack,
  ),
];

const BY_NAME = new Map(FEATURES.map((f) => [f.name, f]));

export function findFeature(name: string): Feature | undefined {
  return BY_NAME.get(name);
}

/** Every name `--feature` takes, CRIU's first, in table order. */
export function featureNames(): string[] {
  return FEATURES.map((f) => f.name);
}

/** The features a `criu check` run covers: core always, extra and optional with --extra, ... */
export function featuresFor(opts: { extra: boolean; experimental: boolean }): Feature[] {
  return FEATURES.filter((f) => {
    if (f.appliesHere && !f.appliesHere()) return false;
    if (f.category === "core") return true;
    if (f.category === "extra" || f.category === "optional") return opts.extra;
    if (f.category === "experimental") return opts.experimental;
    return false;
  });
}

/** One answered feature. */
export interface Checked {
  feature: Feature;
  result: ProbeResult;
  /** How long the probe took, in milliseconds. */
  ms: number;
}

/** Runs one probe; a probe that throws answers "not supported" with the error as the reason. */
export function probeOne(feature: Feature, env: ProbeEnv): ProbeResult {
  try {
    return feature.probe(env);
  } catch (e) {
    return no(`probe failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * Runs the probes of `features` in order, sharing one environment, and disposes of it (every child
 * killed and reaped) before returning, whatever happens.
 */
export function runProbes(features: readonly Feature[]): Checked[] {
  const env = new ProbeEnv();
  try {
    return features.map((feature) => {
      const t0 = performance.now();
      const result = probeOne(feature, env);
      return { feature, result, ms: performance.now() - t0 };
    });
  } finally {
    env.close();
  }
}

/** Probes one feature by name (for the RPC's feature check and for tests); undefined if unknown. */
export function probeFeature(name: string): ProbeResult | undefined {
  const f = findFeature(name);
  return f ? runProbes([f])[0]!.result : undefined;
}
