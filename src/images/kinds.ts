/**
 * The image kinds: for each file of an image directory, its name pattern, its magics, the protobuf
 * message of its entries and what raw data follows them. This is the one place that knows these
 * facts; readers, writers and the crit tool all look them up here.
 *
 * File layout (CRIU "images v1.1"):
 *   [head magic u32] [kind magic u32] { [size u32] [protobuf, size bytes] [payload] }
 * All integers are little-endian. The head magic is IMG_COMMON_MAGIC for ordinary images and
 * IMG_SERVICE_MAGIC for the service files (stats, irmap cache); inventory.img has only its own
 * magic, and raw images (pages, iptables dumps, tarballs) have no magic and no entries at all.
 */

import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { apparmor_entrySchema } from "./gen/apparmor_pb.ts";
import { autofs_entrySchema } from "./gen/autofs_pb.ts";
import { binfmt_misc_entrySchema } from "./gen/binfmt-misc_pb.ts";
import { bpfmap_data_entrySchema } from "./gen/bpfmap-data_pb.ts";
import { bpfmap_file_entrySchema } from "./gen/bpfmap-file_pb.ts";
import { cgroup_entrySchema } from "./gen/cgroup_pb.ts";
import { core_entrySchema, task_kobj_ids_entrySchema } from "./gen/core_pb.ts";
import { cpuinfo_entrySchema } from "./gen/cpuinfo_pb.ts";
import { creds_entrySchema } from "./gen/creds_pb.ts";
import { eventfd_file_entrySchema } from "./gen/eventfd_pb.ts";
import { eventpoll_file_entrySchema, eventpoll_tfd_entrySchema } from "./gen/eventpoll_pb.ts";
import { ext_file_entrySchema } from "./gen/ext-file_pb.ts";
import { fdinfo_entrySchema, file_entrySchema } from "./gen/fdinfo_pb.ts";
import { fifo_entrySchema } from "./gen/fifo_pb.ts";
import { file_lock_entrySchema } from "./gen/file-lock_pb.ts";
import { irmap_cache_entrySchema } from "./gen/fh_pb.ts";
import { fs_entrySchema } from "./gen/fs_pb.ts";
import {
  fanotify_file_entrySchema,
  fanotify_mark_entrySchema,
  inotify_file_entrySchema,
  inotify_wd_entrySchema,
} from "./gen/fsnotify_pb.ts";
import { ghost_chunk_entrySchema, ghost_file_entrySchema } from "./gen/ghost-file_pb.ts";
import { inventory_entrySchema } from "./gen/inventory_pb.ts";
import { ipc_msg_entrySchema, ipc_msgSchema } from "./gen/ipc-msg_pb.ts";
import { ipc_sem_entrySchema } from "./gen/ipc-sem_pb.ts";
import { ipc_shm_entrySchema } from "./gen/ipc-shm_pb.ts";
import { ipc_var_entrySchema } from "./gen/ipc-var_pb.ts";
import { memfd_inode_entrySchema } from "./gen/memfd_pb.ts";
import { mm_entrySchema } from "./gen/mm_pb.ts";
import { mnt_entrySchema } from "./gen/mnt_pb.ts";
import { net_device_entrySchema, netns_entrySchema } from "./gen/netdev_pb.ts";
import { ns_file_entrySchema } from "./gen/ns_pb.ts";
import { packet_sock_entrySchema } from "./gen/packet-sock_pb.ts";
import { pagemap_entrySchema, pagemap_headSchema } from "./gen/pagemap_pb.ts";
import { pidfd_entrySchema } from "./gen/pidfd_pb.ts";
import { pidns_entrySchema } from "./gen/pidns_pb.ts";
import { pipe_data_entrySchema } from "./gen/pipe-data_pb.ts";
import { pipe_entrySchema } from "./gen/pipe_pb.ts";
import { posix_mq_entrySchema, posix_mq_msgSchema } from "./gen/posix-mq_pb.ts";
import { pstree_entrySchema } from "./gen/pstree_pb.ts";
import { reg_file_entrySchema } from "./gen/regfile_pb.ts";
import { remap_file_path_entrySchema } from "./gen/remap-file-path_pb.ts";
import { rlimit_entrySchema } from "./gen/rlimit_pb.ts";
import { sa_entrySchema } from "./gen/sa_pb.ts";
import { seccomp_entrySchema } from "./gen/seccomp_pb.ts";
import { siginfo_entrySchema } from "./gen/siginfo_pb.ts";
import { signalfd_entrySchema } from "./gen/signalfd_pb.ts";
import { inet_sk_entrySchema } from "./gen/sk-inet_pb.ts";
import { netlink_sk_entrySchema } from "./gen/sk-netlink_pb.ts";
import { sk_packet_entrySchema } from "./gen/sk-packet_pb.ts";
import { unix_sk_entrySchema } from "./gen/sk-unix_pb.ts";
import { stats_entrySchema } from "./gen/stats_pb.ts";
import { tcp_stream_entrySchema } from "./gen/tcp-stream_pb.ts";
import { itimer_entrySchema, posix_timer_entrySchema } from "./gen/timer_pb.ts";
import { timens_entrySchema } from "./gen/timens_pb.ts";
import { timerfd_entrySchema } from "./gen/timerfd_pb.ts";
import { tty_data_entrySchema, tty_file_entrySchema, tty_info_entrySchema } from "./gen/tty_pb.ts";
import { tunfile_entrySchema } from "./gen/tun_pb.ts";
import { userns_entrySchema } from "./gen/userns_pb.ts";
import { utsns_entrySchema } from "./gen/utsns_pb.ts";
import { vma_entrySchema } from "./gen/vma_pb.ts";

/** First u32 of every image except inventory.img and raw images. */
export const IMG_COMMON_MAGIC = 0x54564319;
/** First u32 of the service files (stats-dump, stats-restore, irmap-cache). */
export const IMG_SERVICE_MAGIC = 0x55105940;
/** inventory.img's only magic. */
export const INVENTORY_MAGIC = 0x58313116;
/** inventory.img version written since images v1.1 (the only version we write). */
export const CRTOOLS_IMAGES_V1_1 = 2;

/** Which magic, if any, precedes the kind's own magic. */
export type HeadMagic = "common" | "service" | "none";

/**
 * Raw data that follows entries of some kinds; its length comes from fields of the entry just read
 * (see payload.ts for each rule).
 */
export type PayloadKind =
  | "pipe-data" // pipe_data_entry.bytes bytes
  | "sk-queue" // sk_packet_entry.length bytes
  | "tcp-stream" // inq_len bytes, then outq_len bytes
  | "bpfmap-data" // keys_bytes + values_bytes bytes
  | "ipc-shm" // size bytes padded to 4, unless in_pagemaps
  | "ipc-sem" // nsems u16 values padded to 8
  | "ipc-msg" // qnum x (ipc_msg record, msize bytes padded to 8)
  | "posix-mq" // curmsgs x (posix_mq_msg record, size bytes)
  | "ghost"; // raw file contents to the end, or a data chunk after each ghost_chunk_entry

export interface ImageKind<E extends DescMessage = DescMessage, F extends DescMessage = E> {
  /** CRIU's name for the kind (CR_FD_<name>), e.g. "CORE", "SHMEM_PAGEMAP". */
  readonly name: string;
  /** File name pattern as in CRIU: `%u`, `%lu`, `%d` decimal, `%x` hex, `%s` a string. */
  readonly file: string;
  /** The kind's own magic; undefined for raw images. */
  readonly magic: number | undefined;
  readonly head: HeadMagic;
  /** Name crit prints as "magic"; kinds sharing a magic share it (SHMEM_PAGEMAP is "PAGEMAP"). */
  readonly magicName: string;
  /** Message of the entries; undefined for raw images. */
  readonly entry: E | undefined;
  /** Message of the first entry when it differs (pagemap head, ghost file header). */
  readonly first: F | undefined;
  /** Message of records nested inside the payload (ipc_msg in message queues). */
  readonly inner: DescMessage | undefined;
  readonly payload: PayloadKind | undefined;
  /** Still read (older images and crit use it) but no longer written by current CRIU. */
  readonly legacy: boolean;
}

interface KindOptions<F extends DescMessage> {
  first?: F;
  inner?: DescMessage;
  payload?: PayloadKind;
  head?: HeadMagic;
  magicName?: string;
  legacy?: boolean;
}

function kind<E extends DescMessage, F extends DescMessage = E>(
  name: string,
  file: string,
  magic: number,
  entry: E,
  o: KindOptions<F> = {},
): ImageKind<E, F> {
  return {
    name,
    file,
    magic,
    head: o.head ?? "common",
    magicName: o.magicName ?? name,
    entry,
    first: o.first,
    inner: o.inner,
    payload: o.payload,
    legacy: o.legacy ?? false,
  };
}

function raw(name: string, file: string): ImageKind<never> {
  return {
    name,
    file,
    magic: undefined,
    head: "none",
    magicName: "RAW",
    entry: undefined,
    first: undefined,
    inner: undefined,
    payload: undefined,
    legacy: false,
  };
}

const PAGEMAP_MAGIC = 0x56084025;
const SIGNAL_MAGIC = 0x59255647;
const BINFMT_MISC_MAGIC = 0x67343323;
const legacy = { legacy: true } as const;
/** criu-ts's own kind's magic (IPCNS_POSIX_MQ); not one of CRIU's. */
export const POSIX_MQ_MAGIC = 0x47513241;

/**
 * Every image kind, keyed by CRIU's name. Magic numbers and file names are CRIU's (magic.h,
 * image-desc.c). The per-task files marked legacy were folded into core-*.img and files.img by
 * later CRIU versions; their kinds stay so old images can be read and decoded.
 */
export const KINDS = {
  INVENTORY: kind("INVENTORY", "inventory.img", INVENTORY_MAGIC, inventory_entrySchema, { head: "none" }),
  PSTREE: kind("PSTREE", "pstree.img", 0x50273030, pstree_entrySchema),
  CORE: kind("CORE", "core-%u.img", 0x55053847, core_entrySchema),
  IDS: kind("IDS", "ids-%u.img", 0x54432030, task_kobj_ids_entrySchema),
  MM: kind("MM", "mm-%u.img", 0x57492820, mm_entrySchema),
  VMAS: kind("VMAS", "vmas-%u.img", 0x54123737, vma_entrySchema, legacy),
  PAGEMAP: kind("PAGEMAP", "pagemap-%lu.img", PAGEMAP_MAGIC, pagemap_entrySchema, {
    first: pagemap_headSchema,
  }),
  SHMEM_PAGEMAP: kind("SHMEM_PAGEMAP", "pagemap-shmem-%lu.img", PAGEMAP_MAGIC, pagemap_entrySchema, {
    first: pagemap_headSchema,
    magicName: "PAGEMAP",
  }),
  PAGES: raw("PAGES", "pages-%u.img"),
  FS: kind("FS", "fs-%u.img", 0x51403912, fs_entrySchema),
  FDINFO: kind("FDINFO", "fdinfo-%u.img", 0x56213732, fdinfo_entrySchema),
  FILES: kind("FILES", "files.img", 0x56303138, file_entrySchema),
  CREDS: kind("CREDS", "creds-%u.img", 0x54023547, creds_entrySchema, legacy),
  SIGACT: kind("SIGACT", "sigacts-%u.img", 0x55344201, sa_entrySchema, legacy),
  ITIMERS: kind("ITIMERS", "itimers-%u.img", 0x57464056, itimer_entrySchema, legacy),
  POSIX_TIMERS: kind("POSIX_TIMERS", "posix-timers-%u.img", 0x52603957, posix_timer_entrySchema, legacy),
  RLIMIT: kind("RLIMIT", "rlimit-%u.img", 0x57113925, rlimit_entrySchema, legacy),
  SIGNAL: kind("SIGNAL", "signal-s-%u.img", SIGNAL_MAGIC, siginfo_entrySchema, legacy),
  PSIGNAL: kind("PSIGNAL", "signal-p-%u.img", SIGNAL_MAGIC, siginfo_entrySchema, {
    magicName: "SIGNAL",
    legacy: true,
  }),

  REG_FILES: kind("REG_FILES", "reg-files.img", 0x50363636, reg_file_entrySchema),
  EXT_FILES: kind("EXT_FILES", "ext-files.img", 0x59255641, ext_file_entrySchema),
  NS_FILES: kind("NS_FILES", "ns-files.img", 0x61394011, ns_file_entrySchema),
  EVENTFD_FILE: kind("EVENTFD_FILE", "eventfd.img", 0x44523722, eventfd_file_entrySchema),
  EVENTPOLL_FILE: kind("EVENTPOLL_FILE", "eventpoll.img", 0x45023858, eventpoll_file_entrySchema),
  EVENTPOLL_TFD: kind("EVENTPOLL_TFD", "eventpoll-tfd.img", 0x44433746, eventpoll_tfd_entrySchema),
  SIGNALFD: kind("SIGNALFD", "signalfd.img", 0x57323820, signalfd_entrySchema),
  TIMERFD: kind("TIMERFD", "timerfd.img", 0x50493712, timerfd_entrySchema),
  INOTIFY_FILE: kind("INOTIFY_FILE", "inotify.img", 0x48424431, inotify_file_entrySchema),
  INOTIFY_WD: kind("INOTIFY_WD", "inotify-wd.img", 0x54562009, inotify_wd_entrySchema),
  FANOTIFY_FILE: kind("FANOTIFY_FILE", "fanotify.img", 0x55096122, fanotify_file_entrySchema),
  FANOTIFY_MARK: kind("FANOTIFY_MARK", "fanotify-mark.img", 0x56506035, fanotify_mark_entrySchema),
  MEMFD_INODE: kind("MEMFD_INODE", "memfd.img", 0x48453499, memfd_inode_entrySchema),
  PIDFD: kind("PIDFD", "pidfd.img", 0x54435556, pidfd_entrySchema),
  BPFMAP_FILE: kind("BPFMAP_FILE", "bpfmap-file.img", 0x57506142, bpfmap_file_entrySchema),
  BPFMAP_DATA: kind("BPFMAP_DATA", "bpfmap-data.img", 0x64324033, bpfmap_data_entrySchema, {
    payload: "bpfmap-data",
  }),
  REMAP_FPATH: kind("REMAP_FPATH", "remap-fpath.img", 0x59133954, remap_file_path_entrySchema),
  GHOST_FILE: kind("GHOST_FILE", "ghost-file-%x.img", 0x52583605, ghost_chunk_entrySchema, {
    first: ghost_file_entrySchema,
    payload: "ghost",
  }),
  FILE_LOCKS: kind("FILE_LOCKS", "filelocks.img", 0x54323616, file_lock_entrySchema),

  PIPES: kind("PIPES", "pipes.img", 0x56513555, pipe_entrySchema),
  PIPES_DATA: kind("PIPES_DATA", "pipes-data.img", 0x56453709, pipe_data_entrySchema, {
    payload: "pipe-data",
  }),
  FIFO: kind("FIFO", "fifo.img", 0x58364939, fifo_entrySchema),
  FIFO_DATA: kind("FIFO_DATA", "fifo-data.img", 0x59333054, pipe_data_entrySchema, { payload: "pipe-data" }),
  TTY_FILES: kind("TTY_FILES", "tty.img", 0x59433025, tty_file_entrySchema),
  TTY_INFO: kind("TTY_INFO", "tty-info.img", 0x59453036, tty_info_entrySchema),
  TTY_DATA: kind("TTY_DATA", "tty-data.img", 0x59413026, tty_data_entrySchema),
  TUNFILE: kind("TUNFILE", "tunfile.img", 0x57143751, tunfile_entrySchema),

  UNIXSK: kind("UNIXSK", "unixsk.img", 0x54373943, unix_sk_entrySchema),
  INETSK: kind("INETSK", "inetsk.img", 0x56443851, inet_sk_entrySchema),
  PACKETSK: kind("PACKETSK", "packetsk.img", 0x60454618, packet_sock_entrySchema),
  NETLINK_SK: kind("NETLINK_SK", "netlinksk.img", 0x58005614, netlink_sk_entrySchema),
  SK_QUEUES: kind("SK_QUEUES", "sk-queues.img", 0x56264026, sk_packet_entrySchema, { payload: "sk-queue" }),
  TCP_STREAM: kind("TCP_STREAM", "tcp-stream-%x.img", 0x51465506, tcp_stream_entrySchema, {
    payload: "tcp-stream",
  }),

  UTSNS: kind("UTSNS", "utsns-%u.img", 0x54473203, utsns_entrySchema),
  IPC_VAR: kind("IPC_VAR", "ipcns-var-%u.img", 0x53115007, ipc_var_entrySchema),
  IPCNS_SHM: kind("IPCNS_SHM", "ipcns-shm-%u.img", 0x46283044, ipc_shm_entrySchema, { payload: "ipc-shm" }),
  IPCNS_MSG: kind("IPCNS_MSG", "ipcns-msg-%u.img", 0x55453737, ipc_msg_entrySchema, {
    inner: ipc_msgSchema,
    payload: "ipc-msg",
  }),
  IPCNS_SEM: kind("IPCNS_SEM", "ipcns-sem-%u.img", 0x59573019, ipc_sem_entrySchema, { payload: "ipc-sem" }),
  // criu-ts's own (CRIU saves no POSIX message queues): a magic none of CRIU's magic.h has, so
  // Debian's crit refuses this one file by its magic and reads every other image of the dump.
  IPCNS_POSIX_MQ: kind("IPCNS_POSIX_MQ", "ipcns-posix-mq-%u.img", POSIX_MQ_MAGIC, posix_mq_entrySchema, {
    inner: posix_mq_msgSchema,
    payload: "posix-mq",
  }),
  MNTS: kind("MNTS", "mountpoints-%u.img", 0x55563928, mnt_entrySchema),
  NETDEV: kind("NETDEV", "netdev-%u.img", 0x57373951, net_device_entrySchema),
  NETNS: kind("NETNS", "netns-%u.img", 0x55933752, netns_entrySchema),
  USERNS: kind("USERNS", "userns-%u.img", 0x55474906, userns_entrySchema),
  TIMENS: kind("TIMENS", "timens-%u.img", 0x43114433, timens_entrySchema),
  PIDNS: kind("PIDNS", "pidns-%u.img", 0x61157326, pidns_entrySchema),
  CGROUP: kind("CGROUP", "cgroup.img", 0x59383330, cgroup_entrySchema),
  AUTOFS: kind("AUTOFS", "autofs-%u.img", 0x49353943, autofs_entrySchema),
  BINFMT_MISC: kind("BINFMT_MISC", "binfmt-misc.img", BINFMT_MISC_MAGIC, binfmt_misc_entrySchema),
  BINFMT_MISC_OLD: kind("BINFMT_MISC_OLD", "binfmt-misc-%u.img", BINFMT_MISC_MAGIC, binfmt_misc_entrySchema, {
    magicName: "BINFMT_MISC",
    legacy: true,
  }),
  IFADDR: raw("IFADDR", "ifaddr-%u.img"),
  ROUTE: raw("ROUTE", "route-%u.img"),
  ROUTE6: raw("ROUTE6", "route6-%u.img"),
  RULE: raw("RULE", "rule-%u.img"),
  IPTABLES: raw("IPTABLES", "iptables-%u.img"),
  IP6TABLES: raw("IP6TABLES", "ip6tables-%u.img"),
  NFTABLES: raw("NFTABLES", "nftables-%u.img"),
  NETNF_CT: raw("NETNF_CT", "netns-ct-%u.img"),
  NETNF_EXP: raw("NETNF_EXP", "netns-exp-%u.img"),
  TMPFS_IMG: raw("TMPFS_IMG", "tmpfs-%u.tar.gz.img"),
  TMPFS_DEV: raw("TMPFS_DEV", "tmpfs-dev-%u.tar.gz.img"),

  SECCOMP: kind("SECCOMP", "seccomp.img", 0x64413049, seccomp_entrySchema),
  CPUINFO: kind("CPUINFO", "cpuinfo.img", 0x61404013, cpuinfo_entrySchema),
  APPARMOR: kind("APPARMOR", "apparmor.img", 0x59423047, apparmor_entrySchema),

  STATS: kind("STATS", "stats-%s", 0x57093306, stats_entrySchema, { head: "service" }),
  IRMAP_CACHE: kind("IRMAP_CACHE", "irmap-cache", 0x57004059, irmap_cache_entrySchema, { head: "service" }),
} as const;

export type KindName = keyof typeof KINDS;

/** The message type of the entries (or first entry) of a kind. */
export type EntryOf<K> = K extends ImageKind<infer E, infer F> ? MessageShape<E> | MessageShape<F> : never;

const byName = new Map<string, ImageKind>(Object.values(KINDS).map((k) => [k.name, k]));

/** Kinds by magic; where kinds share one, the kind named like the magic wins (what crit shows). */
const byMagic = new Map<number, ImageKind>();
for (const k of Object.values(KINDS)) {
  if (k.magic !== undefined && k.name === k.magicName) byMagic.set(k.magic, k);
}

export function kindByName(name: string): ImageKind | undefined {
  return byName.get(name);
}

/** The kind crit names `magicName` ("CORE", "PAGEMAP", ...), for encoding JSON. */
export function kindByMagicName(magicName: string): ImageKind | undefined {
  const k = byName.get(magicName);
  return k !== undefined && k.magicName === magicName && k.magic !== undefined ? k : undefined;
}

export function kindByMagic(magic: number): ImageKind | undefined {
  return byMagic.get(magic);
}

export function allKinds(): readonly ImageKind[] {
  return [...byName.values()];
}

/** The head magic value a kind's files start with, or undefined when they have none. */
export function headMagicValue(k: ImageKind): number | undefined {
  if (k.magic === undefined) return undefined;
  return k.head === "common" ? IMG_COMMON_MAGIC : k.head === "service" ? IMG_SERVICE_MAGIC : undefined;
}

/**
 * The file name of an image of kind `k`. `id` fills the pattern's placeholder (a pid, a files id, a
 * socket inode, "dump" for stats-%s) and must be given exactly when the pattern has one.
 */
export function imageFileName(k: ImageKind, id?: number | bigint | string): string {
  const m = /%(l?u|l?d|x|s)/.exec(k.file);
  if (m === null) {
    if (id !== undefined) throw new TypeError(`Image ${k.file} takes no id, got ${id}`);
    return k.file;
  }
  if (id === undefined) throw new TypeError(`Image ${k.file} needs an id`);
  let text: string;
  if (m[1] === "s") {
    text = String(id);
  } else {
    if (typeof id === "string" || (typeof id === "number" && !Number.isInteger(id))) {
      throw new TypeError(`Image ${k.file} needs an integer id, got ${id}`);
    }
    text = m[1] === "x" ? id.toString(16) : id.toString(10);
  }
  return k.file.slice(0, m.index) + text + k.file.slice(m.index + m[0].length);
}
