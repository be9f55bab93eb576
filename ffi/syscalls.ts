/** x86_64 syscall numbers and the flag values that go with them. */
export const NR = {
  read: 0,
  write: 1,
  open: 2,
  close: 3,
  fstat: 5,
  lseek: 8,
  mmap: 9,
  mprotect: 10,
  munmap: 11,
  brk: 12,
  rt_sigaction: 13,
  rt_sigprocmask: 14,
  rt_sigtimedwait: 128,
  ioctl: 16,
  pread64: 17,
  pwrite64: 18,
  writev: 20,
  preadv: 295,
  mremap: 25,
  madvise: 28,
  dup: 32,
  dup2: 33,
  nanosleep: 35,
  getitimer: 36,
  setitimer: 38,
  getpid: 39,
  socket: 41,
  connect: 42,
  sendto: 44,
  recvfrom: 45,
  recvmsg: 47,
  shutdown: 48,
  bind: 49,
  listen: 50,
  getsockname: 51,
  getpeername: 52,
  socketpair: 53,
  setsockopt: 54,
  getsockopt: 55,
  clone: 56,
  fork: 57,
  exit: 60,
  wait4: 61,
  kill: 62,
  fcntl: 72,
  chdir: 80,
  fchdir: 81,
  umask: 95,
  getrlimit: 97,
  ptrace: 101,
  setuid: 105,
  setgid: 106,
  setpgid: 109,
  getppid: 110,
  setsid: 112,
  setgroups: 116,
  setresuid: 117,
  setresgid: 119,
  getpgid: 121,
  setfsuid: 122,
  setfsgid: 123,
  getsid: 124,
  capget: 125,
  capset: 126,
  rt_sigqueueinfo: 129,
  sigaltstack: 131,
  personality: 135,
  getpriority: 140,
  setpriority: 141,
  sched_getparam: 143,
  sched_setscheduler: 144,
  sched_getscheduler: 145,
  prctl: 157,
  arch_prctl: 158,
  chroot: 161,
  getxattr: 191,
  gettid: 186,
  tkill: 200,
  futex: 202,
  set_tid_address: 218,
  restart_syscall: 219,
  timer_create: 222,
  timer_settime: 223,
  timer_gettime: 224,
  timer_getoverrun: 225,
  timer_delete: 226,
  clock_gettime: 228,
  clock_nanosleep: 230,
  exit_group: 231,
  tgkill: 234,
  openat: 257,
  set_robust_list: 273,
  get_robust_list: 274,
  tee: 276,
  dup3: 292,
  rt_tgsigqueueinfo: 297,
  prlimit64: 302,
  setns: 308,
  sethostname: 170,
  statfs: 137,
  setdomainname: 171,
  mount: 165,
  umount2: 166,
  pivot_root: 155,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  mq_open: 240,
  mq_unlink: 241,
  mq_timedsend: 242,
  mq_timedreceive: 243,
  mq_getsetattr: 245,
  mount_setattr: 442,
  unshare: 272,
  shmget: 29,
  shmat: 30,
  shmctl: 31,
  semget: 64,
  semop: 65,
  semctl: 66,
  shmdt: 67,
  msgget: 68,
  msgsnd: 69,
  msgrcv: 70,
  msgctl: 71,
  kcmp: 312,
  seccomp: 317,
  rseq: 334,
  membarrier: 324,
  clone3: 435,
  close_range: 436,
  pidfd_open: 434,
  pidfd_getfd: 438,
  pipe2: 293,
  eventfd2: 290,
  epoll_create1: 291,
  epoll_ctl: 233,
  signalfd4: 289,
  timerfd_create: 283,
  timerfd_settime: 286,
  timerfd_gettime: 287,
  memfd_create: 319,
  ftruncate: 77,
  fchmod: 91,
  fchown: 93,
  inotify_init1: 294,
  inotify_add_watch: 254,
  inotify_rm_watch: 255,
  fanotify_init: 300,
  fanotify_mark: 301,
  access: 21,
  sendfile: 40,
  flock: 73,
  mkdir: 83,
  readlink: 89,
  io_setup: 206,
  io_destroy: 207,
  io_getevents: 208,
  io_submit: 209,
  mknodat: 259,
  fchownat: 260,
  linkat: 265,
  readlinkat: 267,
  fchmodat: 268,
  vmsplice: 278,
  open_by_handle_at: 304,
  userfaultfd: 323,
  copy_file_range: 326,
  openat2: 437,
} as const;

export const PROT = { NONE: 0, READ: 1, WRITE: 2, EXEC: 4 } as const;
export const MAP = {
  SHARED: 0x01,
  PRIVATE: 0x02,
  /** A mapping type of its own (not with MAP_PRIVATE): pages the kernel may drop (Linux 6.11). */
  DROPPABLE: 0x08,
  FIXED: 0x10,
  ANONYMOUS: 0x20,
  GROWSDOWN: 0x100,
  NORESERVE: 0x4000,
  HUGETLB: 0x40000,
  FIXED_NOREPLACE: 0x100000,
} as const;
/**
 * madvise advice criu-ts gives itself. MADV_GUARD_INSTALL came with Linux 6.13, after the C
 * headers of Debian 12, so no header test can pin it: the number is <linux/mman.h>'s of 6.13.
 */
export const MADV = { GUARD_INSTALL: 102 } as const;
export const MREMAP = { MAYMOVE: 1, FIXED: 2, DONTUNMAP: 4 } as const;

/** fcntl commands. */
export const F = {
  SETFD: 2,
  SETFL: 4,
  DUPFD_CLOEXEC: 1030,
} as const;

export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  ACCMODE: 3,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  CLOEXEC: 0o2000000,
  LARGEFILE: 0o100000,
  PATH: 0o10000000,
} as const;

export const CLONE = {
  VM: 0x100,
  FS: 0x200,
  FILES: 0x400,
  SIGHAND: 0x800,
  PIDFD: 0x1000,
  PTRACE: 0x2000,
  VFORK: 0x4000,
  PARENT: 0x8000,
  THREAD: 0x10000,
  NEWNS: 0x20000,
  NEWTIME: 0x80,
  NEWCGROUP: 0x2000000,
  NEWUTS: 0x4000000,
  NEWIPC: 0x8000000,
  NEWUSER: 0x10000000,
  SYSVSEM: 0x40000,
  SETTLS: 0x80000,
  PARENT_SETTID: 0x100000,
  CHILD_CLEARTID: 0x200000,
  CHILD_SETTID: 0x1000000,
  NEWPID: 0x20000000,
  NEWNET: 0x40000000,
} as const;

export const PR = {
  SET_PDEATHSIG: 1,
  GET_PDEATHSIG: 2,
  GET_DUMPABLE: 3,
  SET_DUMPABLE: 4,
  GET_KEEPCAPS: 7,
  SET_KEEPCAPS: 8,
  SET_NAME: 15,
  GET_NAME: 16,
  GET_SECCOMP: 21,
  GET_SECUREBITS: 27,
  SET_SECUREBITS: 28,
  GET_TIMERSLACK: 30,
  SET_TIMERSLACK: 29,
  SET_MM: 35,
  SET_CHILD_SUBREAPER: 36,
  GET_CHILD_SUBREAPER: 37,
  SET_NO_NEW_PRIVS: 38,
  GET_NO_NEW_PRIVS: 39,
  GET_TID_ADDRESS: 40,
  SET_THP_DISABLE: 41,
  GET_THP_DISABLE: 42,
  CAPBSET_DROP: 24,
  CAP_AMBIENT: 47,
  /** PR_CAP_AMBIENT's first argument: raise one capability in the ambient set. */
  CAP_AMBIENT_RAISE: 2,
  SET_MM_MAP: 14,
  SET_MM_MAP_SIZE: 15,
  TIMER_CREATE_RESTORE_IDS: 77,
  /** PR_TIMER_CREATE_RESTORE_IDS's arguments (Linux 6.17): leave, enter, or ask about the mode. */
  TIMER_CREATE_RESTORE_IDS_OFF: 0,
  TIMER_CREATE_RESTORE_IDS_ON: 1,
  TIMER_CREATE_RESTORE_IDS_GET: 2,
} as const;

export const RSEQ_FLAG_UNREGISTER = 1;
export const SIG = {
  HUP: 1,
  INT: 2,
  KILL: 9,
  USR1: 10,
  SEGV: 11,
  TERM: 15,
  CHLD: 17,
  CONT: 18,
  STOP: 19,
  TSTP: 20,
  TTIN: 21,
  TTOU: 22,
  TRAP: 5,
  ABRT: 6,
  URG: 23,
  WINCH: 28,
} as const;

/** membarrier(2) commands (a bitmask: each command is one bit). */
export const MEMBARRIER = {
  /** The registered commands of the calling process (Linux 6.3). */
  GET_REGISTRATIONS: 1 << 9,
} as const;

/** sigaltstack(2) flags (stack_t.ss_flags). */
export const SS = {
  /** The thread runs on its alternate stack now: a state the kernel reports, not one to set. */
  ONSTACK: 1,
  DISABLE: 2,
  /** Cleared while a handler runs on the stack (bit 31). */
  AUTODISARM: 0x80000000,
} as const;

/** Scheduling policies (sched_setscheduler), and the flag that resets them in children. */
export const SCHED = {
  OTHER: 0,
  FIFO: 1,
  RR: 2,
  BATCH: 3,
  IDLE: 5,
  DEADLINE: 6,
  RESET_ON_FORK: 0x40000000,
} as const;

/** setpriority(2)'s `which`: one process (or thread). */
export const PRIO_PROCESS = 0;

/** The one fd flag (F_GETFD/F_SETFD; fdinfo's flags in the images). */
export const FD_CLOEXEC = 1;

/** getrlimit/prlimit resources criu-ts names. */
export const RLIMIT = { NOFILE: 7 } as const;
/** How many rlimits the kernel has (RLIM_NLIMITS): a task's core image carries this many. */
export const RLIM_NLIMITS = 16;
/** The most supplementary groups a task may have (setgroups). */
export const NGROUPS_MAX = 65536;
/** The most iovecs one readv/writev/preadv/process_vm_readv call takes (UIO_MAXIOV). */
export const IOV_MAX = 1024;

/** st_mode's file type field (S_IFMT) and its values. */
export const S = {
  IFMT: 0o170000,
  IFSOCK: 0o140000,
  IFLNK: 0o120000,
  IFREG: 0o100000,
  IFBLK: 0o060000,
  IFDIR: 0o040000,
  IFCHR: 0o020000,
  IFIFO: 0o010000,
} as const;

/** Capability numbers (linux/capability.h) criu-ts asks about. */
export const CAP = { SYS_ADMIN: 21, CHECKPOINT_RESTORE: 40 } as const;

/** timerfd's ioctl that sets the count of expirations not yet read: _IOW('T', 0, __u64). */
export const TFD_IOC_SET_TICKS = 0x40085400;

/** arch_prctl(2) codes. */
export const ARCH = {
  /** Maps the vDSO at an address (EEXIST while one is mapped). */
  MAP_VDSO_64: 0x2003,
} as const;

/** move_mount(2) flag: copy the sharing group of the source onto the target. */
export const MOVE_MOUNT_SET_GROUP = 0x100;

/** The dirfd of the *at calls that means the caller's working directory. */
export const AT_FDCWD = -100;
