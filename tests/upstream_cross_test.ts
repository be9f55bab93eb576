/**
 * Sockets, files and namespaces across the two tools, with CRIU_UPSTREAM pointing at a CRIU 4.x
 * binary: each workload dumped by criu-ts and restored by CRIU, and dumped by CRIU and restored by
 * criu-ts, with the same options; the restored workload checks its own state and passes. The
 * memory, task and tree cases are in criu_images_test.ts.
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
  { name: "gone_files", args: ["locks"], criuArgs: ["--file-locks"] },
  { name: "fifo" },
  { name: "memfd" },
  { name: "signalfd" },
  { name: "timerfd", settleMs: 300 },
  { name: "inotify" },
  { name: "fanotify" },
  { name: "pty" },
  // Namespaces of the tree's own.
  { name: "utsns" },
  { name: "ipcns" },
  { name: "timens" },
  { name: "netns" },
]);
