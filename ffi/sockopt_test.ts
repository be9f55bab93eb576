import assert from "node:assert/strict";
import { copyFdOf } from "./process.ts";
import {
  decodeBpf,
  encodeBpf,
  getBoundDevice,
  getIntOption,
  getLinger,
  getRepairWindow,
  IP,
  IPV6,
  LINGER_SIZE,
  queueSizes,
  readIpOptions,
  readSocketOptions,
  readTcpOptions,
  readTcpStream,
  restoreTcpStream,
  setIntOption,
  setTcpRepair,
  SIOC,
  SO,
  SOCK_FILTER_SIZE,
  SOCK_FPROG_SIZE,
  socketKind,
  SOL,
  TCP,
  TCP_INFO_SIZE,
  TCP_REPAIR_MODE,
  TCP_REPAIR_OPT_SIZE,
  TCP_REPAIR_WINDOW_SIZE,
  TCPI_OPT,
  tcpInfo,
  TIMEVAL_SIZE,
  writeIpOptions,
  writeSocketOptions,
  writeTcpOptions,
} from "./sockopt.ts";
import {
  acceptSocket,
  bindSocket,
  closeSocket,
  connectSocket,
  listenSocket,
  makeSocket,
  makeSocketPair,
  MSG,
  receiveBytes,
  sendBytes,
  SOCK,
  socketName,
} from "./sockcall.ts";
import { AF, type InetAddress, inetAddress } from "./sockaddr.ts";
import { isSyscallError } from "./errors.ts";
import { cFacts } from "../tests/lib/cfacts.ts";

function openFds(): string[] {
  return [...Deno.readDirSync("/proc/self/fd")].map((e) => e.name).sort();
}

/** Runs `body` with the sockets it makes closed afterwards, and checks no fd of ours was left open. */
async function withSockets(
  body: (keep: (fd: number) => number, drop: (fd: number) => void) => void | Promise<void>,
): Promise<void> {
  const before = openFds();
  const made = new Set<number>();
  try {
    await body(
      (fd) => (made.add(fd), fd),
      (fd) => {
        made.delete(fd); // its number may be reused before the end: never close it twice
        closeSocket(fd);
      },
    );
  } finally {
    made.forEach(closeSocket);
  }
  assert.deepEqual(openFds(), before, "the test left fds open");
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(what: string, cond: () => boolean, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`Timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Reads exactly `n` bytes, giving up after `ms`. */
async function readExactly(fd: number, n: number, ms = 15000): Promise<Uint8Array<ArrayBuffer>> {
  const out = new Uint8Array(n);
  let got = 0;
  const end = Date.now() + ms;
  while (got < n) {
    if (Date.now() > end) throw new Error(`Only ${got} of ${n} bytes came within ${ms} ms`);
    let chunk: Uint8Array<ArrayBuffer>;
    try {
      chunk = receiveBytes(fd, n - got, MSG.DONTWAIT);
    } catch (e) {
      if (!isSyscallError(e, "EAGAIN")) throw e;
      await sleep(5);
      continue;
    }
    if (chunk.length === 0) throw new Error(`End of stream after ${got} of ${n} bytes`);
    out.set(chunk, got);
    got += chunk.length;
  }
  return out;
}

/** A byte pattern no shift of itself matches: any lost or repeated byte shows. */
function pattern(seed: number, n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 131 + (i >> 8) * 7 + seed) & 0xff;
  return out;
}

Deno.test("socket option constants and layouts match the system headers", async () => {
  const f = await cFacts(
    [
      "sys/socket.h",
      "sys/ioctl.h",
      "sys/time.h",
      "netinet/in.h",
      "linux/tcp.h",
      "linux/sockios.h",
      "linux/filter.h",
    ],
    {
      SO_REUSEPORT: "SO_REUSEPORT",
      SO_PASSCRED: "SO_PASSCRED",
      SO_PASSSEC: "SO_PASSSEC",
      SO_RCVTIMEO: "SO_RCVTIMEO",
      SO_SNDTIMEO: "SO_SNDTIMEO",
      SO_BINDTODEVICE: "SO_BINDTODEVICE",
      SO_TIMESTAMP: "SO_TIMESTAMP",
      SO_MARK: "SO_MARK",
      SO_PEEK_OFF: "SO_PEEK_OFF",
      SO_BUF_LOCK: "SO_BUF_LOCK",
      SO_NO_CHECK: "SO_NO_CHECK",
      SO_PROTOCOL: "SO_PROTOCOL",
      SO_DOMAIN: "SO_DOMAIN",
      SO_RCVBUFFORCE: "SO_RCVBUFFORCE",
      TCP_KEEPCNT: "TCP_KEEPCNT",
      TCP_REPAIR: "TCP_REPAIR",
      TCP_REPAIR_QUEUE: "TCP_REPAIR_QUEUE",
      TCP_QUEUE_SEQ: "TCP_QUEUE_SEQ",
      TCP_REPAIR_OPTIONS: "TCP_REPAIR_OPTIONS",
      TCP_REPAIR_WINDOW: "TCP_REPAIR_WINDOW",
      TCP_TIMESTAMP: "TCP_TIMESTAMP",
      TCP_REPAIR_OFF_NO_WP: "TCP_REPAIR_OFF_NO_WP",
      TCPI_OPT_WSCALE: "TCPI_OPT_WSCALE",
      IP_FREEBIND: "IP_FREEBIND",
      IP_PKTINFO: "IP_PKTINFO",
      IPV6_V6ONLY: "IPV6_V6ONLY",
      IPV6_FREEBIND: "IPV6_FREEBIND",
      IPV6_RECVPKTINFO: "IPV6_RECVPKTINFO",
      SIOCINQ: "SIOCINQ",
      SIOCOUTQ: "SIOCOUTQ",
      SIOCOUTQNSD: "SIOCOUTQNSD",
      SO_ATTACH_FILTER: "SO_ATTACH_FILTER",
      SO_GET_FILTER: "SO_GET_FILTER",
      sockFilter: "sizeof(struct sock_filter)",
      sockFprog: "sizeof(struct sock_fprog)",
      fprogFilter: "offsetof(struct sock_fprog, filter)",
      timeval: "sizeof(struct timeval)",
      linger: "sizeof(struct linger)",
      repairOpt: "sizeof(struct tcp_repair_opt)",
      repairWindow: "sizeof(struct tcp_repair_window)",
      tcpInfo: "sizeof(struct tcp_info)",
      infoRto: "offsetof(struct tcp_info, tcpi_rto)",
      infoUnacked: "offsetof(struct tcp_info, tcpi_unacked)",
      infoPmtu: "offsetof(struct tcp_info, tcpi_pmtu)",
      infoRtt: "offsetof(struct tcp_info, tcpi_rtt)",
      infoCwnd: "offsetof(struct tcp_info, tcpi_snd_cwnd)",
      infoTotalRetrans: "offsetof(struct tcp_info, tcpi_total_retrans)",
    },
  );
  const ours: Record<string, number> = {
    SO_REUSEPORT: SO.REUSEPORT,
    SO_PASSCRED: SO.PASSCRED,
    SO_PASSSEC: SO.PASSSEC,
    SO_RCVTIMEO: SO.RCVTIMEO,
    SO_SNDTIMEO: SO.SNDTIMEO,
    SO_BINDTODEVICE: SO.BINDTODEVICE,
    SO_TIMESTAMP: SO.TIMESTAMP,
    SO_MARK: SO.MARK,
    SO_PEEK_OFF: SO.PEEK_OFF,
    SO_BUF_LOCK: SO.BUF_LOCK,
    SO_NO_CHECK: SO.NO_CHECK,
    SO_PROTOCOL: SO.PROTOCOL,
    SO_DOMAIN: SO.DOMAIN,
    SO_RCVBUFFORCE: SO.RCVBUFFORCE,
    TCP_KEEPCNT: TCP.KEEPCNT,
    TCP_REPAIR: TCP.REPAIR,
    TCP_REPAIR_QUEUE: TCP.REPAIR_QUEUE,
    TCP_QUEUE_SEQ: TCP.QUEUE_SEQ,
    TCP_REPAIR_OPTIONS: TCP.REPAIR_OPTIONS,
    TCP_REPAIR_WINDOW: TCP.REPAIR_WINDOW,
    TCP_TIMESTAMP: TCP.TIMESTAMP,
    TCP_REPAIR_OFF_NO_WP: TCP_REPAIR_MODE.OFF_NO_WP,
    TCPI_OPT_WSCALE: TCPI_OPT.WSCALE,
    IP_FREEBIND: IP.FREEBIND,
    IP_PKTINFO: IP.PKTINFO,
    IPV6_V6ONLY: IPV6.V6ONLY,
    IPV6_FREEBIND: IPV6.FREEBIND,
    IPV6_RECVPKTINFO: IPV6.RECVPKTINFO,
    SIOCINQ: SIOC.INQ,
    SIOCOUTQ: SIOC.OUTQ,
    SIOCOUTQNSD: SIOC.OUTQNSD,
    SO_ATTACH_FILTER: SO.ATTACH_FILTER,
    SO_GET_FILTER: SO.GET_FILTER,
    sockFilter: SOCK_FILTER_SIZE,
    sockFprog: SOCK_FPROG_SIZE,
    fprogFilter: 8,
    timeval: TIMEVAL_SIZE,
    linger: LINGER_SIZE,
    repairOpt: TCP_REPAIR_OPT_SIZE,
    repairWindow: TCP_REPAIR_WINDOW_SIZE,
    infoRto: 8,
    infoUnacked: 24,
    infoPmtu: 60,
    infoRtt: 68,
    infoCwnd: 80,
    infoTotalRetrans: 100,
  };
  for (const [name, value] of Object.entries(ours)) assert.equal(value, f[name], name);
  assert.ok(f.tcpInfo! <= TCP_INFO_SIZE, "we ask for at least the whole tcp_info of the headers");
});

/** A classic BPF program that lets everything through: ldw len; jeq 0 ? drop : accept. */
const ACCEPT_ALL = [
  { code: 0x80, jt: 0, jf: 0, k: 0 }, // BPF_LD | BPF_W | BPF_LEN
  { code: 0x15, jt: 1, jf: 0, k: 0 }, // BPF_JMP | BPF_JEQ | BPF_K
  { code: 0x06, jt: 0, jf: 0, k: 0xffffffff }, // BPF_RET | BPF_K
  { code: 0x06, jt: 0, jf: 0, k: 0 },
];

Deno.test("BPF instructions encode as CRIU's images keep them", () => {
  const i = { code: 0x15, jt: 2, jf: 7, k: 0xdeadbeef };
  assert.equal(encodeBpf(i), 0x0015_02_07_deadbeefn);
  assert.deepEqual(decodeBpf(encodeBpf(i)), i);
});

Deno.test("socket options read from one unix socket and written to a fresh one come back the same", async () => {
  await withSockets((keep) => {
    const [a] = makeSocketPair(SOCK.STREAM).map(keep) as [number, number];
    setIntOption(a, SOL.SOCKET, SO.SNDBUF, 50000);
    setIntOption(a, SOL.SOCKET, SO.RCVBUF, 70000);
    writeSocketOptions(a, {
      sndTimeout: { sec: 3, usec: 500000 },
      rcvTimeout: { sec: 0, usec: 700000 },
      reuseaddr: true,
      passcred: true,
      keepalive: true,
      priority: 5,
      rcvlowat: 17,
      mark: 0x42,
      linger: { on: true, seconds: 9 },
      boundDevice: "lo",
      peekOff: 11,
      broadcast: true,
      oobinline: true,
      timestamp: true,
      dontroute: true,
      filter: ACCEPT_ALL,
    });
    const read = readSocketOptions(a, AF.UNIX);
    assert.deepEqual(
      [read.sndbuf, read.rcvbuf, read.bufLock],
      [100000, 140000, 3],
      "the kernel doubles sizes and locks them",
    );
    assert.deepEqual(read.sndTimeout, { sec: 3, usec: 500000 });
    assert.deepEqual(read.rcvTimeout, { sec: 0, usec: 700000 });
    assert.deepEqual(
      [read.reuseaddr, read.passcred, read.passsec, read.keepalive, read.broadcast, read.oobinline],
      [true, true, false, true, true, true],
    );
    assert.deepEqual([read.priority, read.rcvlowat, read.mark, read.peekOff], [5, 17, 0x42, 11]);
    assert.deepEqual(read.linger, { on: true, seconds: 9 });
    assert.equal(read.boundDevice, "lo");
    assert.deepEqual([read.timestamp, read.dontroute], [true, true]);
    assert.deepEqual(read.filter, ACCEPT_ALL);

    const [b] = makeSocketPair(SOCK.STREAM).map(keep) as [number, number];
    const fresh = readSocketOptions(b, AF.UNIX);
    assert.notDeepEqual(fresh, read, "a fresh socket starts different");
    writeSocketOptions(b, read);
    assert.deepEqual(readSocketOptions(b, AF.UNIX), read);
  });
});

Deno.test("TCP, IP and IPv6 options round-trip, and socketKind() names what socket() made", async () => {
  await withSockets((keep) => {
    const t = keep(makeSocket(AF.INET, SOCK.STREAM));
    assert.deepEqual(socketKind(t), { family: AF.INET, type: SOCK.STREAM, protocol: 6 });
    const tcp = { nodelay: true, cork: true, keepidle: 77, keepintvl: 13, keepcnt: 4 };
    writeTcpOptions(t, tcp);
    assert.deepEqual(readTcpOptions(t), tcp);
    const ip = { freebind: true, pktinfo: true, tos: 0x10, ttl: 33 };
    writeIpOptions(t, AF.INET, ip);
    assert.deepEqual(readIpOptions(t, AF.INET), ip);
    const u6 = keep(makeSocket(AF.INET6, SOCK.DGRAM));
    assert.equal(readIpOptions(u6, AF.INET6).v6only, false);
    const ip6 = { freebind: true, pktinfo: true, v6only: true };
    writeIpOptions(u6, AF.INET6, ip6);
    assert.deepEqual(readIpOptions(u6, AF.INET6), ip6);
    writeSocketOptions(u6, { noCheck: true, reuseport: true });
    const o = readSocketOptions(u6, AF.INET6);
    assert.deepEqual([o.noCheck, o.reuseport, o.passcred, o.peekOff], [true, true, undefined, undefined]);
    assert.equal(getBoundDevice(u6), "");
    assert.deepEqual(getLinger(u6), { on: false, seconds: 0 });
  });
});

Deno.test("getsockopt of an unknown option names it in a SyscallError", async () => {
  await withSockets((keep) => {
    const [a] = makeSocketPair(SOCK.DGRAM).map(keep) as [number, number];
    assert.throws(
      () => getIntOption(a, SOL.TCP, TCP.REPAIR_WINDOW),
      (e) => isSyscallError(e) && /getsockopt\(TCP_REPAIR_WINDOW\) failed/.test(e.message),
    );
  });
});

Deno.test("queueSizes() counts unread and unsent bytes of unix and TCP sockets", async () => {
  await withSockets(async (keep) => {
    const [a, b] = makeSocketPair(SOCK.STREAM).map(keep) as [number, number];
    sendBytes(a, new Uint8Array(4321));
    assert.equal(queueSizes(b, false).inq, 4321);
    const outq = queueSizes(a, false).outq;
    assert.ok(outq >= 4321, `a unix socket's outq is the memory the peer has not read yet, got ${outq}`);
    const l = keep(makeSocket(AF.INET, SOCK.STREAM));
    bindSocket(l, inetAddress(AF.INET, "127.0.0.1", 0));
    listenSocket(l, 1);
    const c = keep(makeSocket(AF.INET, SOCK.STREAM));
    connectSocket(c, socketName(l) as InetAddress);
    const s = keep(acceptSocket(l));
    sendBytes(c, new Uint8Array(999));
    await until("the bytes to arrive", () => queueSizes(s, true).inq === 999);
    await until("the bytes to be acknowledged", () => queueSizes(c, true).outq === 0);
    const info = tcpInfo(c);
    assert.equal(info.state, 1);
    assert.ok(info.sndMss > 0 && info.rto > 0, "tcp_info fields are read at their offsets");
  });
});

Deno.test("copyFdOf() copies a socket out of another process's fd table", async () => {
  const child = new Deno.Command("sleep", { args: ["60"], stdin: "null", stdout: "null" }).spawn();
  try {
    await withSockets((keep) => {
      // The child's stdin is /dev/null, not a socket: take fd 0 and see what it is.
      const fd = keep(copyFdOf(child.pid, 0));
      assert.equal(Deno.readLinkSync(`/proc/self/fd/${fd}`), "/dev/null");
      assert.throws(() => copyFdOf(child.pid, 999), /pidfd_getfd\(\d+, 999\) failed: EBADF/);
    });
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
});

Deno.test("readTcpStream() refuses a socket that is not in repair mode", async () => {
  await withSockets((keep) => {
    const t = keep(makeSocket(AF.INET, SOCK.STREAM));
    assert.throws(
      () => readTcpStream(t),
      /readTcpStream failed: EINVAL \(fd \d+ is not in TCP repair mode\)/,
    );
  });
});

for (const [family, loopback] of [[AF.INET, "127.0.0.1"], [AF.INET6, "::1"]] as const) {
  Deno.test(`TCP repair reads a live ${loopback} connection's sequence numbers and queues, and rebuilds it in a new socket`, () =>
    repairRoundTrip(family, loopback));
}

async function repairRoundTrip(family: typeof AF.INET | typeof AF.INET6, loopback: string): Promise<void> {
  await withSockets(async (keep, drop) => {
    const l = keep(makeSocket(family, SOCK.STREAM));
    // A small receive buffer on the server side keeps part of what the client sends in its queue.
    setIntOption(l, SOL.SOCKET, SO.RCVBUF, 4096);
    bindSocket(l, inetAddress(family, loopback, 0));
    listenSocket(l, 1);
    const serverAddr = socketName(l) as InetAddress;
    const c = keep(makeSocket(family, SOCK.STREAM));
    setIntOption(c, SOL.SOCKET, SO.SNDBUF, 65536);
    connectSocket(c, serverAddr);
    const s = keep(acceptSocket(l));
    const clientAddr = socketName(c) as InetAddress;

    const toClient = pattern(1, 3000);
    sendBytes(s, toClient);
    const toServer = pattern(2, 400000);
    let sent = 0;
    for (;;) {
      try {
        sent += sendBytes(c, toServer.subarray(sent, sent + 8192), MSG.NOSIGNAL | MSG.DONTWAIT);
      } catch (e) {
        if (isSyscallError(e, "EAGAIN")) break;
        throw e;
      }
      if (sent === toServer.length) {
        throw new Error("The server never pushed back; the test cannot fill a queue");
      }
    }
    await until("client's bytes to be either queued at the server or in the client's send queue", () => {
      return queueSizes(s, true).inq + queueSizes(c, true).outq === sent && queueSizes(c, true).inq === 3000;
    });

    setTcpRepair(c, TCP_REPAIR_MODE.ON);
    setTcpRepair(s, TCP_REPAIR_MODE.ON);
    const cs = readTcpStream(c);
    const ss = readTcpStream(s);
    setTcpRepair(s, TCP_REPAIR_MODE.OFF);
    assert.equal(cs.state, 1);
    assert.ok(cs.outqLen > 0, "part of what the client sent waits in its send queue");
    assert.ok(cs.unsentLen <= cs.outqLen);
    assert.equal(ss.inqLen + cs.outqLen, sent, "every byte is in one of the two queues");
    assert.deepEqual(ss.inq, toServer.subarray(0, ss.inqLen), "the server's receive queue, byte for byte");
    assert.deepEqual(cs.outq, toServer.subarray(ss.inqLen, sent), "the client's send queue, byte for byte");
    assert.deepEqual(cs.inq, toClient, "the client's receive queue");
    assert.equal(ss.inqSeq, (cs.outqSeq - cs.outqLen) >>> 0, "server's rcv_nxt is the client's snd_una");
    assert.equal(cs.inqSeq, ss.outqSeq, "client's rcv_nxt is the server's write_seq (all acknowledged)");
    assert.equal(ss.outqLen, 0);
    assert.ok(cs.mssClamp > 0);
    assert.ok(getRepairWindow(c).rcvWnd > 0);

    // Move the client's end into a new socket: the old one goes without a FIN (repair mode).
    drop(c);
    const c2 = keep(makeSocket(family, SOCK.STREAM));
    restoreTcpStream(c2, cs, clientAddr, serverAddr);
    setTcpRepair(c2, TCP_REPAIR_MODE.OFF);

    assert.deepEqual(
      await readExactly(s, sent),
      toServer.subarray(0, sent),
      "the server gets every byte once",
    );
    assert.deepEqual(await readExactly(c2, toClient.length), toClient, "the restored queue is read first");
    const after = pattern(3, 5000);
    sendBytes(s, after);
    assert.deepEqual(await readExactly(c2, after.length), after, "new data flows to the restored socket");
    sendBytes(c2, after);
    assert.deepEqual(await readExactly(s, after.length), after, "and from it");
  });
}
