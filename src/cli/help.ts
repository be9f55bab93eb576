/**
 * The texts of `criu --help` and `criu --version`. The version line is parsed by LXC and go-criu,
 * so its shape is fixed: "Version: X.Y", then "GitID: ..." only when there is one.
 */
import { OPTION_TABLE } from "../options/table.ts";
import { CRIU_VERSION } from "../version.ts";

export { CRIU_VERSION } from "../version.ts";

export function versionText(gitId?: string): string {
  return `Version: ${CRIU_VERSION}\n` + (gitId ? `GitID: ${gitId}\n` : "");
}

const USAGE = `Usage:
  criu dump|pre-dump -t PID [OPTIONS]
  criu restore [OPTIONS]
  criu check [--feature NAME]
  criu page-server [OPTIONS]
  criu service [OPTIONS]
  criu swrk FD
  criu lazy-pages -D DIR [OPTIONS]
  criu dedup
  criu cpuinfo dump|check
`;

const COMMAND_HELP: readonly [string, string][] = [
  ["dump", "save a process tree to images, PID given by -t"],
  ["pre-dump", "save memory ahead of a dump, leaving the tasks running"],
  ["restore", "start the process tree again from images"],
  ["check", "tell whether this kernel has what dump and restore need"],
  ["page-server", "receive pages over the network and write them to images"],
  ["service", "serve RPC requests on a unix socket (--address)"],
  ["swrk", "serve RPC requests on an inherited socket fd (for libraries)"],
  ["lazy-pages", "feed pages to a restore started with --lazy-pages"],
  ["dedup", "drop pages of parent images that newer images replace"],
  ["cpuinfo dump", "write this CPU's description to an image"],
  ["cpuinfo check", "compare this CPU with the one in the image"],
];

/** Each group: [spelling, what it does]. Every option of OPTION_TABLE appears once. */
const OPTION_HELP: readonly { title: string; rows: readonly [string, string][] }[] = [
  {
    title: "Common",
    rows: [
      ["-D, --images-dir DIR", "where the images are (default: the current directory)"],
      ["-W, --work-dir DIR", "where logs, the pidfile and stats go (default: the images dir)"],
      ["-o, --log-file FILE", "log to FILE, relative to the work dir"],
      ["-v, --verbosity", "one more level of logging; -vv, -vvv... one more per v"],
      ["-vN, --verbosity=N", "log level: 0 none, 1 errors, 2 warnings (default), 3 info, 4 debug"],
      ["--log-pid", "one log file per process, FILE.PID"],
      ["--display-stats", "print the statistics of a dump or restore at the end"],
      ["--pidfile FILE", "write the pid of the restored root task, service or page server"],
      ["--prev-images-dir DIR", "images of the previous (pre-)dump, relative to -D"],
      ["-L, --libdir DIR", "load plugins from DIR"],
      ["--action-script FILE", "run FILE at each stage; $CRTOOLS_SCRIPT_ACTION names the stage"],
      ["--close FD", "close FD before doing anything"],
      ["--stream", "pass images through criu-image-streamer"],
      ["--unprivileged", "run without full root, accepting what that cannot do"],
      ["--deprecated", "allow deprecated features"],
    ],
  },
  {
    title: "Dump",
    rows: [
      ["-t, --tree PID", "the root of the process tree to save"],
      ["-R, --leave-running", "let the tasks run on after the dump"],
      ["-s, --leave-stopped", "leave the tasks stopped after the dump"],
      ["--track-mem", "track memory changes for the next dump"],
      ["--pre-dump-mode MODE", "splice (default) or read"],
      ["--timeout SECONDS", "how long to wait for the tasks to stop (default 10)"],
      ["--freeze-cgroup PATH", "freeze the tasks with this freezer cgroup"],
      ["--external RES", "treat RES as outside the tree, e.g. mnt[PATH]:NAME, dev[MAJ/MIN]:NAME,"],
      ["", "file[MNT:INODE], tty[RDEV:DEV], unix[INODE], net[INODE]:NAME"],
      ["-x, --ext-unix-sk[=INODE,...]", "allow unix sockets connected outside the tree"],
      ["--tcp-established", "save and restore established TCP connections"],
      ["--tcp-close", "restore TCP connections closed"],
      ["--skip-in-flight", "leave out TCP connections not yet accepted"],
      ["--evasive-devices", "reopen a device by any path when its own is gone"],
      ["--link-remap", "keep unlinked files alive by linking them back"],
      ["--ghost-limit SIZE", "largest deleted file saved in the images (default 1M)"],
      ["--ghost-fiemap", "save deleted files sparse, with fiemap"],
      ["-l, --file-locks", "save and restore file locks"],
      ["-j, --shell-job", "allow a job of an interactive shell (outside session or tty)"],
      ["--force-irmap", "resolve paths of inotify and fanotify watches"],
      ["--irmap-scan-path PATH", "where to look when resolving those paths"],
      ["--auto-dedup", "drop pages from parent images as they are replaced or restored"],
      ["--cpu-cap[=CAPS]", "CPU properties to record or check: fpu, cpu, ins, all, none, ^CAP"],
      ["--file-validation MODE", "how to recognise files on restore: filesize or buildid (default)"],
      ["--network-lock MODE", "how to lock the network: iptables (default), nftables, skip"],
      ["--allow-uprobes", "accept mappings that hold uprobes"],
      ["--skip-mnt PATH", "leave this mount out of the mount namespace"],
      ["--enable-fs NAMES", "dump mounts of these filesystems (comma-separated, or all)"],
      ["--enable-external-sharing", "allow mounts shared with the outside"],
      ["--enable-external-masters", "allow mounts slaved to the outside"],
    ],
  },
  {
    title: "Cgroups",
    rows: [
      ["--manage-cgroups[=MODE]", "none, props, soft (default), full, strict or ignore"],
      ["--cgroup-root [CTL:]PATH", "move a controller's root, on dump or restore"],
      ["--cgroup-props SPEC", "cgroup properties to save, in a small YAML form"],
      ["--cgroup-props-file FILE", "the same, read from FILE"],
      ["--cgroup-dump-controller NAME", "save only this controller (repeatable)"],
      ["--cgroup-yard PATH", "use cgroups already mounted under PATH"],
    ],
  },
  {
    title: "Restore",
    rows: [
      ["-d, --restore-detached", "do not wait for the restored tasks"],
      ["--daemon", "the same as --restore-detached; for services, run in the background"],
      ["-S, --restore-sibling", "make the restored root a sibling of criu"],
      ["-r, --root PATH", "restore with PATH as the root filesystem"],
      ["-J, --join-ns NS:PID|FILE[,OPTS]", "restore into an existing namespace"],
      ["--inherit-fd fd[N]:RES", "give the restored tasks our fd N in place of RES"],
      ["-M, --ext-mount-map KEY:VAL", "map an external mount, or auto"],
      ["--veth-pair IN=OUT", "pair an inner veth with an outer one"],
      ["--empty-ns net", "save nothing of the network namespace, restore it empty"],
      ["--lsm-profile TYPE:NAME", "restore under this apparmor or selinux profile"],
      ["--lsm-mount-context CTX", "mount context for restored mounts"],
      ["--weak-sysctls", "skip sysctls this kernel does not have"],
      ["--skip-file-rwx-check", "do not compare file permissions on restore"],
      ["--mntns-compat-mode", "restore mounts the older way"],
      ["--exec-cmd", "after restore, exec the command given after --"],
    ],
  },
  {
    title: "Check",
    rows: [
      ["--extra", "also check features that are good to have"],
      ["--experimental", "also check experimental features"],
      ["--all", "--extra and --experimental"],
      ["--feature NAME", "check one feature only"],
      ["--ms", "gone; use the options above"],
    ],
  },
  {
    title: "Page server, lazy pages, service",
    rows: [
      ["--page-server", "send the pages to a page server"],
      ["--lazy-pages", "restore pages only when touched"],
      ["--address ADDR", "address of the page server, or the service's socket path"],
      ["--port PORT", "port of the page server"],
      ["--ps-socket FD", "an already connected page-server socket"],
      ["--status-fd FD", "write a zero byte to FD, then close it, once ready"],
      ["--tls", "use TLS for page-server connections"],
      ["--tls-cacert FILE", "trust only this CA"],
      ["--tls-cacrl FILE", "CA revocation list"],
      ["--tls-cert FILE", "our certificate"],
      ["--tls-key FILE", "our private key"],
      ["--tls-no-cn-verify", "do not check the common name of the server's certificate"],
    ],
  },
  {
    title: "Config files and help",
    rows: [
      ["--config FILE", "read options from FILE (instead of the default config files)"],
      ["--no-default-config", "do not read /etc/criu/default.conf and ~/.criu/default.conf"],
      ["-h, --help", "show this text"],
      ["-V, --version", "show the version"],
    ],
  },
];

const refused = new Set(OPTION_TABLE.filter((s) => s.support === "refused").map((s) => s.long));

function table(rows: readonly [string, string][]): string {
  const width = 32;
  return rows.map(([left, right]) => {
    const long = /--([a-z-]+)/.exec(left)?.[1];
    const text = long !== undefined && refused.has(long) ? `${right} [not supported yet]` : right;
    return left.length < width
      ? `  ${left.padEnd(width)}${text}\n`
      : `  ${left}\n  ${"".padEnd(width)}${text}\n`;
  }).join("");
}

/** The short text shown after a usage error. */
export function usageText(): string {
  return `${USAGE}\nCommands:\n${table(COMMAND_HELP)}\nTry criu --help for the options.\n`;
}

/** The full text of `criu --help`. */
export function helpText(): string {
  const groups = OPTION_HELP.map((g) => `${g.title}:\n${table(g.rows)}`).join("\n");
  return `${USAGE}\nCommands:\n${table(COMMAND_HELP)}\n` +
    "Most flags also have a --no-NAME form that turns them off (e.g. --no-display-stats).\n\n" +
    `${groups}\nConfig files hold one long option per line, without the dashes; see criu(8).\n`;
}
