/**
 * Sockets, files and namespaces across the two tools, with CRIU_UPSTREAM pointing at a CRIU 4.x
 * binary: each workload dumped by criu-ts and restored by CRIU, and dumped by CRIU and restored by
 * criu-ts, with the same options; the restored workload checks its own state and passes. The
 * memory, task and tree cases are in criu_images_test.ts. Where CRIU cannot restore even its own
 * dump of a case on this kernel, the test that needs it is ignored and its name says why: each
 * reason was seen with CRIU 4.2 dumping and restoring the workload itself.
 */
import assert from "node:assert/strict";
import { registerCross } from "./lib/upstream.ts";
import { lockRules } from "./lib/netfilter.ts";

/** What CRIU 4.2 gets wrong restoring SysV segments that were removed while still attached. */
const REMOVED_SEGMENT =
  "a removed segment still attached comes back not removed; msg_qbytes is never set again";

const noLockLeft = () => assert.deepEqual(lockRules(), [], "a network lock was left behind");

registerCross([
  // Unix sockets: pairs with data queued both ways, a listener with its backlog, datagrams.
  { name: "unix_sockets", args: ["pair-stream", "pair-dgram", "pair-seqpacket", "unbound"] },
  { name: "unix_sockets", args: ["path", "abstract"] },
  { name: "unix_sk", args: ["backlog", "dgram-server"] },
  { name: "unix_sockets", args: ["fork", "shared", "shutdown", "scm-rights", "deleted"] },
  { name: "unix_sk", args: ["options", "filter", "relative", "semi-closed", "scm-mix"] },
  // TCP established (locked by iptables, CRIU's default, between dump and restore), UDP, netlink.
  { name: "tcp_stream", args: ["pair"], criuArgs: ["--tcp-established"], settleMs: 300, after: noLockLeft },
  {
    name: "tcp_stream",
    args: ["pair"],
    criuArgs: ["--tcp-established", "--network-lock", "nftables"],
    settleMs: 300,
    after: noLockLeft,
  },
  { name: "inet_sk" },
  { name: "netlink_sk" },
  // Files.
  { name: "gone_files", args: ["ghost"] },
  { name: "gone_files", args: ["map", "cwd"] },
  { name: "gone_files", args: ["link"], criuArgs: ["--link-remap"] },
  // CRIU carries the removed node as a ghost device node (mode and rdev).
  { name: "gone_files", args: ["device"], criuArgs: ["--evasive-devices"] },
  {
    name: "gone_files",
    args: ["locks"],
    criuArgs: ["--file-locks"],
    upstreamDumpFails: "a child's own POSIX lock on a file it shares with its parent is not in filelocks.img",
  },
  { name: "fifo" },
  { name: "memfd" },
  { name: "signalfd" },
  {
    name: "timerfd",
    settleMs: 300,
    upstreamRestoreFails:
      "an absolute timer is re-armed with the seconds of now only (its FIXME), up to 1 s off",
  },
  {
    name: "inotify",
    upstreamRestoreFails: "a watch's flags beyond IN_ALL_EVENTS (IN_ONESHOT) are dropped",
  },
  { name: "fanotify" },
  { name: "pidfd" },
  { name: "opath", upstreamDumpFails: 'an O_PATH fd of a pipe stops it: "Can\'t obtain piped data size"' },
  {
    name: "pty",
    upstreamRestoreFails:
      "a slave's exclusive mode is saved but never set again (no TIOCEXCL), and A's slave comes back with other termios",
  },
  // Seccomp filters: one, on threads (TSYNC), several stacked with their flags, strict mode, and
  // filters installed with CAP_SYS_ADMIN, which the task then dropped.
  { name: "seccomp" },
  { name: "seccomp", args: ["threads"] },
  { name: "seccomp", args: ["mixed"] },
  { name: "seccomp", args: ["strict"] },
  { name: "seccomp", args: ["nocaps"] },
  // Ghost FIFOs and symlinks, memfd mappings, packet sockets, a pty's queued bytes.
  { name: "gone_special" },
  { name: "mem_memfd" },
  { name: "packet_sk" },
  { name: "packet_sk", args: ["spkt"] },
  {
    name: "pty",
    args: ["queued"],
    upstreamRestoreFails:
      'as for pty, and A\'s slave-to-master flow fails its check after CRIU puts the queued bytes back ("read 4 of 4 bytes")',
  },
  // Namespaces of the tree's own.
  { name: "utsns" },
  { name: "ipcns", upstreamRestoreFails: "a message queue's msg_qbytes is saved but never set again" },
  { name: "ipcns", args: ["attached"], upstreamRestoreFails: REMOVED_SEGMENT },
  { name: "ipcns", args: ["attached-child"], upstreamRestoreFails: REMOVED_SEGMENT },
  { name: "timens" },
  { name: "netns" },
]);
