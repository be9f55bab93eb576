import assert from "node:assert/strict";
import {
  DiagUnavailableError,
  INET_DIAG,
  INET_DIAG_MSG_SIZE,
  INET_DIAG_REQ_V2_SIZE,
  INET_DIAG_SOCKID_SIZE,
  inetDiagReq,
  inNetnsOf,
  IPPROTO,
  kernelDevToUser,
  NDIAG_SHOW,
  NETLINK_DIAG,
  NETLINK_DIAG_MSG_SIZE,
  NETLINK_DIAG_REQ_SIZE,
  NETLINK_SOCK_DIAG,
  NLATTR_HDR_SIZE,
  NLM_F_DUMP,
  NLMSGHDR_SIZE,
  nlRequest,
  PACKET_DIAG,
  PACKET_DIAG_INFO_SIZE,
  PACKET_DIAG_MCLIST_SIZE,
  PACKET_DIAG_MSG_SIZE,
  PACKET_DIAG_REQ_SIZE,
  PACKET_DIAG_RING_SIZE,
  PACKET_SHOW,
  parseAttributes,
  probeDiagSupport,
  SHUTDOWN,
  SK_MEMINFO_NAMES,
  SOCK_DIAG_BY_FAMILY,
  SockDiag,
  UDIAG_SHOW,
  UNIX_DIAG,
  UNIX_DIAG_MSG_SIZE,
  UNIX_DIAG_REQ_SIZE,
  unixDiagReq,
} from "./sock_diag.ts";
import { AF, formatIPv6, inetAddress, parseIP, unixAddress, unixNameText } from "./sockaddr.ts";
import {
  bindSocket,
  closeSocket,
  connectSocket,
  listenSocket,
  makeSocket,
  makeSocketPair,
  sendBytes,
  SHUT,
  shutdownSocket,
  SOCK,
  socketInode,
  socketName,
} from "./sockcall.ts";
import { IPV6, setBoolOption, SOL } from "./sockopt.ts";
import { cFacts } from "../tests/lib/cfacts.ts";
import { libc } from "./libc.ts";

const HEADERS = [
  "linux/netlink.h",
  "linux/sock_diag.h",
  "linux/unix_diag.h",
  "linux/inet_diag.h",
  "linux/netlink_diag.h",
  "linux/packet_diag.h",
];

function openFds(): string[] {
  return [...Deno.readDirSync("/proc/self/fd")].map((e) => e.name).sort();
}

/** Runs `body` with the sockets it makes closed afterwards, and checks no fd of ours was left open. */
function withSockets(body: (keep: (fd: number) => number) => void): void {
  const before = openFds();
  const made: number[] = [];
  try {
    body((fd) => {
      made.push(fd);
      return fd;
    });
  } finally {
    made.forEach(closeSocket);
  }
  assert.deepEqual(openFds(), before, "the test left fds open");
}

function dumpUnix() {
  const diag = SockDiag.open();
  try {
    return new Map(diag.unixSockets().map((s) => [s.ino, s]));
  } finally {
    diag.close();
  }
}

Deno.test("sock_diag struct sizes and offsets match the kernel headers", async () => {
  const f = await cFacts(HEADERS, {
    nlmsghdr: "sizeof(struct nlmsghdr)",
    nlattr: "sizeof(struct nlattr)",
    unixReq: "sizeof(struct unix_diag_req)",
    unixReqShow: "offsetof(struct unix_diag_req, udiag_show)",
    unixReqIno: "offsetof(struct unix_diag_req, udiag_ino)",
    unixReqStates: "offsetof(struct unix_diag_req, udiag_states)",
    unixMsg: "sizeof(struct unix_diag_msg)",
    unixMsgIno: "offsetof(struct unix_diag_msg, udiag_ino)",
    sockid: "sizeof(struct inet_diag_sockid)",
    inetReq: "sizeof(struct inet_diag_req_v2)",
    inetReqStates: "offsetof(struct inet_diag_req_v2, idiag_states)",
    inetReqExt: "offsetof(struct inet_diag_req_v2, idiag_ext)",
    inetReqCookie: "offsetof(struct inet_diag_req_v2, id.idiag_cookie)",
    inetMsg: "sizeof(struct inet_diag_msg)",
    inetMsgSrc: "offsetof(struct inet_diag_msg, id.idiag_src)",
    inetMsgDst: "offsetof(struct inet_diag_msg, id.idiag_dst)",
    inetMsgIf: "offsetof(struct inet_diag_msg, id.idiag_if)",
    inetMsgRqueue: "offsetof(struct inet_diag_msg, idiag_rqueue)",
    inetMsgUid: "offsetof(struct inet_diag_msg, idiag_uid)",
    inetMsgInode: "offsetof(struct inet_diag_msg, idiag_inode)",
    nlReq: "sizeof(struct netlink_diag_req)",
    nlMsg: "sizeof(struct netlink_diag_msg)",
    nlMsgIno: "offsetof(struct netlink_diag_msg, ndiag_ino)",
    nlMsgDstGroup: "offsetof(struct netlink_diag_msg, ndiag_dst_group)",
    pkReq: "sizeof(struct packet_diag_req)",
    pkReqShow: "offsetof(struct packet_diag_req, pdiag_show)",
    pkMsg: "sizeof(struct packet_diag_msg)",
    pkMsgIno: "offsetof(struct packet_diag_msg, pdiag_ino)",
    pkInfo: "sizeof(struct packet_diag_info)",
    pkMclist: "sizeof(struct packet_diag_mclist)",
    pkRing: "sizeof(struct packet_diag_ring)",
  });
  assert.equal(NLMSGHDR_SIZE, f.nlmsghdr);
  assert.equal(NLATTR_HDR_SIZE, f.nlattr);
  assert.equal(UNIX_DIAG_REQ_SIZE, f.unixReq);
  assert.equal(UNIX_DIAG_MSG_SIZE, f.unixMsg);
  assert.equal(f.unixMsgIno, 4);
  assert.equal(INET_DIAG_SOCKID_SIZE, f.sockid);
  assert.equal(INET_DIAG_REQ_V2_SIZE, f.inetReq);
  assert.equal(INET_DIAG_MSG_SIZE, f.inetMsg);
  assert.deepEqual(
    [f.inetMsgSrc, f.inetMsgDst, f.inetMsgIf, f.inetMsgRqueue, f.inetMsgUid, f.inetMsgInode],
    [8, 24, 40, 56, 64, 68],
  );
  assert.equal(NETLINK_DIAG_REQ_SIZE, f.nlReq);
  assert.equal(NETLINK_DIAG_MSG_SIZE, f.nlMsg);
  assert.deepEqual([f.nlMsgDstGroup, f.nlMsgIno], [12, 16]);
  assert.equal(PACKET_DIAG_REQ_SIZE, f.pkReq);
  assert.equal(PACKET_DIAG_MSG_SIZE, f.pkMsg);
  assert.equal(f.pkMsgIno, 4);
  assert.equal(PACKET_DIAG_INFO_SIZE, f.pkInfo);
  assert.equal(PACKET_DIAG_MCLIST_SIZE, f.pkMclist);
  assert.equal(PACKET_DIAG_RING_SIZE, f.pkRing);

  // The request builders put each field where the headers say.
  const u = new DataView(unixDiagReq(0x7f, 1234, 0x402).buffer);
  assert.equal(u.getUint8(0), AF.UNIX);
  assert.equal(u.getUint32(f.unixReqShow!, true), 0x7f);
  assert.equal(u.getUint32(f.unixReqIno!, true), 1234);
  assert.equal(u.getUint32(f.unixReqStates!, true), 0x402);
  const i = new DataView(inetDiagReq(AF.INET6, IPPROTO.TCP, 0x55, 0x400).buffer);
  assert.deepEqual([i.getUint8(0), i.getUint8(1), i.getUint8(f.inetReqExt!)], [AF.INET6, IPPROTO.TCP, 0x55]);
  assert.equal(i.getUint32(f.inetReqStates!, true), 0x400);
  assert.equal(i.getUint32(f.inetReqCookie!, true), 0xffffffff);
  const r = new DataView(nlRequest(new Uint8Array(24), NLM_F_DUMP | 1, 9).buffer);
  assert.deepEqual([r.getUint32(0, true), r.getUint16(4, true), r.getUint32(8, true)], [
    40,
    SOCK_DIAG_BY_FAMILY,
    9,
  ]);
});

Deno.test("sock_diag constants match the kernel headers", async () => {
  const f = await cFacts(HEADERS, {
    SOCK_DIAG_BY_FAMILY: "SOCK_DIAG_BY_FAMILY",
    NETLINK_SOCK_DIAG: "NETLINK_SOCK_DIAG",
    NLM_F_DUMP: "NLM_F_DUMP",
    UDIAG_SHOW_NAME: "UDIAG_SHOW_NAME",
    UDIAG_SHOW_ICONS: "UDIAG_SHOW_ICONS",
    UDIAG_SHOW_UID: "UDIAG_SHOW_UID",
    UNIX_DIAG_NAME: "UNIX_DIAG_NAME",
    UNIX_DIAG_ICONS: "UNIX_DIAG_ICONS",
    UNIX_DIAG_SHUTDOWN: "UNIX_DIAG_SHUTDOWN",
    UNIX_DIAG_UID: "UNIX_DIAG_UID",
    INET_DIAG_SHUTDOWN: "INET_DIAG_SHUTDOWN",
    INET_DIAG_SKV6ONLY: "INET_DIAG_SKV6ONLY",
    INET_DIAG_MARK: "INET_DIAG_MARK",
    INET_DIAG_CGROUP_ID: "INET_DIAG_CGROUP_ID",
    NDIAG_SHOW_FLAGS: "NDIAG_SHOW_FLAGS",
    NETLINK_DIAG_FLAGS: "NETLINK_DIAG_FLAGS",
    PACKET_SHOW_FILTER: "PACKET_SHOW_FILTER",
    PACKET_DIAG_FILTER: "PACKET_DIAG_FILTER",
    PACKET_DIAG_UID: "PACKET_DIAG_UID",
    SK_MEMINFO_VARS: "SK_MEMINFO_VARS",
  });
  assert.equal(SOCK_DIAG_BY_FAMILY, f.SOCK_DIAG_BY_FAMILY);
  assert.equal(NETLINK_SOCK_DIAG, f.NETLINK_SOCK_DIAG);
  assert.equal(NLM_F_DUMP, f.NLM_F_DUMP);
  assert.deepEqual([UDIAG_SHOW.NAME, UDIAG_SHOW.ICONS, UDIAG_SHOW.UID], [
    f.UDIAG_SHOW_NAME,
    f.UDIAG_SHOW_ICONS,
    f.UDIAG_SHOW_UID,
  ]);
  assert.deepEqual([UNIX_DIAG.NAME, UNIX_DIAG.ICONS, UNIX_DIAG.SHUTDOWN, UNIX_DIAG.UID], [
    f.UNIX_DIAG_NAME,
    f.UNIX_DIAG_ICONS,
    f.UNIX_DIAG_SHUTDOWN,
    f.UNIX_DIAG_UID,
  ]);
  assert.deepEqual([INET_DIAG.SHUTDOWN, INET_DIAG.SKV6ONLY, INET_DIAG.MARK, INET_DIAG.CGROUP_ID], [
    f.INET_DIAG_SHUTDOWN,
    f.INET_DIAG_SKV6ONLY,
    f.INET_DIAG_MARK,
    f.INET_DIAG_CGROUP_ID,
  ]);
  assert.deepEqual([NDIAG_SHOW.FLAGS, NETLINK_DIAG.FLAGS], [f.NDIAG_SHOW_FLAGS, f.NETLINK_DIAG_FLAGS]);
  assert.deepEqual([PACKET_SHOW.FILTER, PACKET_DIAG.FILTER, PACKET_DIAG.UID], [
    f.PACKET_SHOW_FILTER,
    f.PACKET_DIAG_FILTER,
    f.PACKET_DIAG_UID,
  ]);
  assert.equal(SK_MEMINFO_NAMES.length, f.SK_MEMINFO_VARS);
});

Deno.test("parseAttributes() reads padded attributes and stops at a malformed one", () => {
  const b = new Uint8Array(4 + 8 + 8 + 4);
  const v = new DataView(b.buffer);
  v.setUint16(4, 5, true); // len 5: one byte of data, padded to 8
  v.setUint16(6, 6, true);
  b[8] = 3;
  v.setUint16(12, 8, true);
  v.setUint16(14, 0x8000 | 7, true); // the nested flag is not part of the type
  v.setUint32(16, 99, true);
  v.setUint16(20, 40, true); // longer than what is left
  const attrs = parseAttributes(v, 4);
  assert.deepEqual([...attrs.keys()], [6, 7]);
  assert.deepEqual([...attrs.get(6)!], [3]);
  assert.equal(new DataView(attrs.get(7)!.buffer, attrs.get(7)!.byteOffset).getUint32(0, true), 99);
});

Deno.test("unixSockets() shows a socketpair's peers, queued bytes and shutdown", () => {
  withSockets((keep) => {
    const [a, b] = makeSocketPair(SOCK.STREAM).map(keep) as [number, number];
    const [da, db] = makeSocketPair(SOCK.DGRAM).map(keep) as [number, number];
    sendBytes(a, new Uint8Array(1000));
    sendBytes(da, new Uint8Array(300));
    sendBytes(da, new Uint8Array(200));
    shutdownSocket(b, SHUT.WR);
    const all = dumpUnix();
    const [ia, ib, ida, idb] = [a, b, da, db].map(socketInode) as [number, number, number, number];
    const sa = all.get(ia)!;
    const sb = all.get(ib)!;
    assert.ok(sa && sb, "both ends of the pair are listed");
    assert.deepEqual([sa.type, sa.state, sa.peer, sb.peer], [SOCK.STREAM, 1, ib, ia]);
    assert.equal(sa.name, undefined);
    assert.equal(sa.vfs, undefined);
    assert.equal(sb.rqlen.rq, 1000, "the reader's queue holds the bytes sent");
    assert.ok(sa.rqlen.wq > 0, "the writer's send memory counts what is queued at the peer");
    assert.equal(sb.shutdown, SHUTDOWN.SEND);
    assert.equal(sa.shutdown, SHUTDOWN.RCV, "a stream peer sees the other end's shutdown");
    assert.equal(sa.uid, 0);
    assert.ok(sa.meminfo && sa.meminfo.sndbuf > 0);
    // A datagram socket's rq is the size of the first datagram waiting.
    assert.deepEqual([all.get(idb)!.type, all.get(idb)!.rqlen.rq], [SOCK.DGRAM, 300]);
    assert.equal(all.get(ida)!.peer, idb);
  });
});

Deno.test("unixSockets() shows a listener's path, file and waiting connections", () => {
  const dir = Deno.makeTempDirSync({ prefix: "criu-ts-diag-" });
  try {
    withSockets((keep) => {
      const path = `${dir}/listener.sock`;
      const l = keep(makeSocket(AF.UNIX, SOCK.STREAM));
      bindSocket(l, unixAddress(path));
      listenSocket(l, 5);
      const clients = [0, 1].map(() => {
        const c = keep(makeSocket(AF.UNIX, SOCK.STREAM));
        connectSocket(c, unixAddress(path));
        return c;
      });
      const abstract = keep(makeSocket(AF.UNIX, SOCK.SEQPACKET));
      const abstractName = `@criu-ts-diag-${Deno.pid}`;
      bindSocket(abstract, unixAddress(abstractName));
      const all = dumpUnix();
      const sl = all.get(socketInode(l))!;
      assert.equal(sl.state, 10, "TCP_LISTEN");
      assert.equal(unixNameText(sl.name!), path);
      const st = Deno.statSync(path);
      assert.equal(sl.vfs?.ino, st.ino);
      assert.equal(kernelDevToUser(sl.vfs!.dev), st.dev);
      for (const c of clients) {
        assert.equal(all.get(socketInode(c))!.peer, 0, "not accepted: no peer inode yet");
      }
      assert.deepEqual(sl.icons.toSorted(), clients.map(socketInode).toSorted());
      assert.deepEqual(sl.rqlen, { rq: 2, wq: 5 }, "waiting connections and the backlog");
      for (const c of clients) assert.equal(all.get(socketInode(c))!.state, 1);
      const sa = all.get(socketInode(abstract))!;
      assert.equal(sa.name?.[0], 0, "an abstract name starts with a NUL");
      assert.equal(unixNameText(sa.name!), abstractName);
      assert.equal(sa.vfs, undefined);
      // The bound file can go; the socket keeps its name and the old file's inode.
      Deno.removeSync(path);
      const after = dumpUnix().get(socketInode(l))!;
      assert.equal(after.vfs?.ino, st.ino);
      assert.equal(unixNameText(after.name!), path);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("unixSockets() reads a dump that spans many netlink batches", () => {
  withSockets((keep) => {
    const inos: number[] = [];
    for (let i = 0; i < 600; i++) {
      for (const fd of makeSocketPair(SOCK.DGRAM)) inos.push(socketInode(keep(fd)));
    }
    const all = dumpUnix();
    const missing = inos.filter((ino) => !all.has(ino));
    assert.deepEqual(missing, [], "every one of 1200 sockets is listed");
  });
});

Deno.test("unixSocket() finds one socket by inode and answers null for an unknown one", () => {
  withSockets((keep) => {
    const [a, b] = makeSocketPair(SOCK.SEQPACKET).map(keep) as [number, number];
    const diag = SockDiag.open();
    try {
      const one = diag.unixSocket(socketInode(a));
      assert.equal(one?.peer, socketInode(b));
      assert.equal(one?.type, SOCK.SEQPACKET);
      assert.equal(diag.unixSocket(0x7ffffff0), null);
    } finally {
      diag.close();
    }
  });
});

Deno.test("inetSockets() shows TCP listeners and connections, UDP, and IPv6 only-ness", () => {
  withSockets((keep) => {
    const l = keep(makeSocket(AF.INET, SOCK.STREAM));
    bindSocket(l, inetAddress(AF.INET, "127.0.0.1", 0));
    listenSocket(l, 7);
    const port = (socketName(l) as { port: number }).port;
    const c = keep(makeSocket(AF.INET, SOCK.STREAM));
    connectSocket(c, inetAddress(AF.INET, "127.0.0.1", port));
    sendBytes(c, new Uint8Array(123));
    const u = keep(makeSocket(AF.INET, SOCK.DGRAM));
    connectSocket(u, inetAddress(AF.INET, "127.0.0.1", port));
    const lite = keep(makeSocket(AF.INET, SOCK.DGRAM, IPPROTO.UDPLITE));
    bindSocket(lite, inetAddress(AF.INET, "127.0.0.1", 0));
    const half = keep(makeSocket(AF.INET, SOCK.STREAM));
    connectSocket(half, inetAddress(AF.INET, "127.0.0.1", port));
    shutdownSocket(half, SHUT.WR);
    const l6 = keep(makeSocket(AF.INET6, SOCK.STREAM));
    setBoolOption(l6, SOL.IPV6, IPV6.V6ONLY, true);
    bindSocket(l6, inetAddress(AF.INET6, "::1", 0));
    listenSocket(l6, 3);

    const diag = SockDiag.open();
    try {
      const tcpList = diag.inetSockets(AF.INET, IPPROTO.TCP);
      const tcp = new Map(tcpList.map((s) => [s.ino, s]));
      const sl = tcp.get(socketInode(l))!;
      assert.deepEqual([sl.state, sl.src.address, sl.src.port, sl.wqueue], [10, "127.0.0.1", port, 7]);
      assert.deepEqual(sl.src.words, [0x0100007f], "address words as the kernel keeps them");
      const sc = tcp.get(socketInode(c))!;
      assert.deepEqual([sc.state, sc.dst.address, sc.dst.port, sc.shutdown], [1, "127.0.0.1", port, 0]);
      assert.ok(sc.congestion, "the congestion algorithm is reported");
      // The server side, not accepted yet, holds the bytes: find it by its ports.
      const server = tcpList.find((s) => s.src.port === port && s.dst.port === sc.src.port);
      assert.ok(server, "the server side of the connection is listed");
      assert.equal(server.rqueue, 123, "unread bytes of the server side");
      assert.equal(server.ino, 0, "a connection not accepted yet has no inode");
      assert.equal(tcp.get(socketInode(half))?.shutdown, SHUTDOWN.SEND, "shutdown(SHUT_WR) shows");
      const sl2 = diag.inetSockets(AF.INET, IPPROTO.UDPLITE).find((s) => s.ino === socketInode(lite));
      assert.deepEqual([sl2?.protocol, sl2?.state], [IPPROTO.UDPLITE, 7], "UDP-Lite has its own dump");
      const udp = diag.inetSockets(AF.INET, IPPROTO.UDP).find((s) => s.ino === socketInode(u));
      assert.deepEqual([udp?.state, udp?.dst.port, udp?.protocol], [1, port, IPPROTO.UDP]);
      const v6 = diag.inetSockets(AF.INET6, IPPROTO.TCP).find((s) => s.ino === socketInode(l6));
      assert.deepEqual([v6?.src.address, v6?.v6only, v6?.src.words.length], ["::1", true, 4]);
    } finally {
      diag.close();
    }
  });
});

Deno.test("raw sockets are DiagUnavailableError exactly where probeDiagSupport() says the kernel lacks them", () => {
  const support = probeDiagSupport();
  assert.ok(support.unix && support.tcp && support.udp, "unix, tcp and udp diag are basic");
  const diag = SockDiag.open();
  try {
    const ask = () => diag.inetSockets(AF.INET, IPPROTO.RAW, { rawProtocol: IPPROTO.RAW });
    if (support.raw) ask();
    else assert.throws(ask, (e) => e instanceof DiagUnavailableError && /inet raw/.test(e.message));
  } finally {
    diag.close();
  }
});

Deno.test("netlinkSockets() shows a bound route socket's port id and groups", () => {
  withSockets((keep) => {
    const NETLINK_ROUTE = 0;
    const RTMGRP_LINK = 1;
    const fd = keep(makeSocket(AF.NETLINK, SOCK.RAW, NETLINK_ROUTE));
    const addr = new Uint8Array(12); // sockaddr_nl: family u16, pad u16, pid u32, groups u32
    const v = new DataView(addr.buffer);
    v.setUint16(0, AF.NETLINK, true);
    v.setUint32(8, RTMGRP_LINK, true);
    bindRaw(fd, addr);
    const diag = SockDiag.open();
    try {
      const s = diag.netlinkSockets().find((n) => n.ino === socketInode(fd));
      assert.ok(s, "our netlink socket is listed");
      assert.equal(s.protocol, NETLINK_ROUTE);
      assert.ok(s.portid !== 0, "bound: the kernel gave it a port id");
      assert.equal((s.groups[0] ?? 0) & RTMGRP_LINK, RTMGRP_LINK);
    } finally {
      diag.close();
    }
  });
});

Deno.test("packetSockets() shows a packet socket, its protocol and the interface it is bound to", () => {
  withSockets((keep) => {
    const ETH_P_ALL = 3;
    const proto = ((ETH_P_ALL & 0xff) << 8) | (ETH_P_ALL >> 8); // htons
    const unbound = keep(makeSocket(AF.PACKET, SOCK.DGRAM, 0));
    const bound = keep(makeSocket(AF.PACKET, SOCK.RAW, proto));
    const lo = Number(Deno.readTextFileSync("/sys/class/net/lo/ifindex").trim());
    const sll = new Uint8Array(20); // sockaddr_ll: family u16, protocol be16, ifindex i32, ...
    const v = new DataView(sll.buffer);
    v.setUint16(0, AF.PACKET, true);
    v.setUint16(2, ETH_P_ALL, false);
    v.setInt32(4, lo, true);
    bindRaw(bound, sll);
    const diag = SockDiag.open();
    try {
      const all = new Map(diag.packetSockets().map((p) => [p.ino, p]));
      const b = all.get(socketInode(bound))!;
      assert.deepEqual([b.type, b.protocol, b.info?.ifindex], [SOCK.RAW, ETH_P_ALL, lo]);
      const u = all.get(socketInode(unbound))!;
      assert.deepEqual([u.type, u.protocol, u.info?.ifindex], [SOCK.DGRAM, 0, 0]);
    } finally {
      diag.close();
    }
  });
});

Deno.test("SockDiag.open(pid) answers about that process's network namespace and leaves ours alone", async () => {
  const ownNs = Deno.readLinkSync("/proc/thread-self/ns/net");
  const child = new Deno.Command("unshare", { args: ["-n", "sleep", "60"], stdin: "null" }).spawn();
  try {
    const deadline = Date.now() + 10000;
    while (Deno.readLinkSync(`/proc/${child.pid}/ns/net`) === ownNs) {
      if (Date.now() > deadline) throw new Error("unshare -n did not make a namespace");
      await new Promise((r) => setTimeout(r, 10));
    }
    withSockets((keep) => {
      // A socket belongs to the namespace it was made in: make one inside the child's.
      const there = keep(inNetnsOf(child.pid, () => makeSocket(AF.UNIX, SOCK.DGRAM)));
      assert.equal(Deno.readLinkSync("/proc/thread-self/ns/net"), ownNs, "we are back in our namespace");
      bindSocket(there, unixAddress(`@criu-ts-netns-${Deno.pid}`));
      const here = keep(makeSocket(AF.UNIX, SOCK.DGRAM));
      const diag = SockDiag.open(child.pid);
      try {
        const inos = diag.unixSockets().map((s) => s.ino);
        assert.deepEqual(inos, [socketInode(there)], "only the socket made in the child's namespace");
        assert.deepEqual(diag.inetSockets(AF.INET, IPPROTO.TCP), []);
      } finally {
        diag.close();
      }
      assert.equal(Deno.readLinkSync("/proc/thread-self/ns/net"), ownNs);
      const ours = dumpUnix();
      assert.ok(ours.has(socketInode(here)) && !ours.has(socketInode(there)));
    });
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
});

Deno.test("formatIPv6() and parseIP() agree on the usual shapes", () => {
  for (
    const text of ["::", "::1", "fe80::1:2", "2001:db8::8:800:200c:417a", "::ffff:10.1.2.3", "1:0:0:2::3"]
  ) {
    assert.equal(formatIPv6(parseIP(text, AF.INET6)), text);
  }
  assert.throws(() => parseIP("1::2::3", AF.INET6), /Expected an IPv6 address, found "1::2::3"/);
  assert.throws(() => parseIP("300.1.1.1", AF.INET), /Expected an IPv4 address/);
});

function bindRaw(fd: number, addr: Uint8Array<ArrayBuffer>): void {
  if (libc.bind(fd, addr, addr.length) !== 0) throw new Error(`bind of fd ${fd} failed`);
}
