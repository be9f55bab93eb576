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

const noLockLeft = () => assert.deepEqual(lockRules(), [], "a network lock was left behind");

registerCross([
  // Unix sockets: pairs with data queued both ways, a listener with its backlog, datagrams.
  { name: "unix_sockets", args: ["pair-stream", "pair-dgram", "pair-seqpacket", "unbound"] },
  { name: "unix_sockets", args: ["path", "abstract"] },
  { name: "unix_sk", args: ["backlog", "dgram-server"] },
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
  { name: "gone_files", args: ["link"], criuArgs: ["--link-remap"] },
  {
    name: "gone_files",
    args: ["locks"],
    criuArgs: ["--file-locks"],
    upstreamDumpLoses: "a child's own POSIX lock on a file it shares with its parent is not in filelocks.img",
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
  {
    name: "pty",
    upstreamRestoreFails: "a slave's exclusive mode is saved but never set again, nor A's termios",
  },
  // Namespaces of the tree's own.
  { name: "utsns" },
  { name: "ipcns", upstreamRestoreFails: "a message queue's msg_qbytes is saved but never set again" },
  {
    name: "ipcns",
    args: ["attached"],
    upstreamRestoreFails:
      "a removed segment still attached comes back not removed; msg_qbytes is never set again",
  },
  { name: "timens" },
  { name: "netns" },
]);
