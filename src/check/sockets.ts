/** Probes of socket features: options TCP repair relies on, sock_diag, rtnetlink. All in our process. */
import {
  type Answer,
  bindTo,
  closeFd,
  connectTo,
  failed,
  failedWith,
  getsockname,
  getsockoptBytes,
  ioctlNone,
  rawSyscall,
  setsockoptInt,
} from "../../ffi/probe.ts";
import { NR, O } from "../../ffi/syscalls.ts";
import {
  AF,
  ask,
  attrS32,
  attrString,
  NETLINK,
  NLM_F,
  parseAttrs,
  request,
  sockDiagDumpRequest,
} from "../../ffi/netlink.ts";
import { encodeSockaddr, inetAddress } from "../../ffi/sockaddr.ts";
import { SOCK } from "../../ffi/sockcall.ts";
import { IPV6, SIOC_SOCKET, SO, SOL, TCP } from "../../ffi/sockopt.ts";
import { readInt32 } from "../../ffi/structs.ts";
import { answerText, closeAll, errnoText, no, type ProbeResult, withFd, yes } from "./result.ts";

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_RAW = 255;
const { GSKNS: SIOCGSKNS, UNIXFILE: SIOCUNIXFILE } = SIOC_SOCKET;

function socket(domain: number, type: number, protocol = 0): Answer {
  return rawSyscall(NR.socket, domain, type | O.CLOEXEC, protocol);
}

/** Runs `fn` on a new socket, or reports that none could be made. */
function withSocket(
  domain: number,
  type: number,
  protocol: number,
  fn: (fd: number) => ProbeResult,
): ProbeResult {
  const fd = socket(domain, type, protocol);
  if (failed(fd)) return no(`cannot make a socket: ${errnoText(fd)}`);
  return withFd(fd, fn);
}

export function tcp(): ProbeResult {
  return withSocket(AF.INET, SOCK.STREAM, IPPROTO_TCP, (fd) => {
    const r = setsockoptInt(fd, SOL.TCP, TCP.REPAIR, 1);
    if (failed(r)) return no(`cannot turn TCP repair mode on: ${errnoText(r)}`);
    const ts = getsockoptBytes(fd, SOL.TCP, TCP.TIMESTAMP, 4);
    if (failed(ts.r)) return no(`cannot read TCP_TIMESTAMP: ${errnoText(ts.r)}`);
    return yes("TCP_REPAIR turns on and TCP_TIMESTAMP reads");
  });
}

/** struct sockaddr_in for 127.0.0.1, port 0. */
function loopback(): Uint8Array<ArrayBuffer> {
  return encodeSockaddr(inetAddress(AF.INET, "127.0.0.1", 0)).bytes;
}

export function tcpHalfClosed(): ProbeResult {
  const server = socket(AF.INET, SOCK.STREAM, IPPROTO_TCP);
  const client = socket(AF.INET, SOCK.STREAM, IPPROTO_TCP);
  try {
    if (failed(server)) return no(`cannot make a TCP socket: ${errnoText(server)}`);
    if (failed(client)) return no(`cannot make a TCP socket: ${errnoText(client)}`);
    let r = bindTo(server, loopback());
    if (failed(r)) return no(`cannot bind to 127.0.0.1: ${errnoText(r)}`);
    const name = getsockname(server);
    if (failed(name.r)) return no(`getsockname failed: ${errnoText(name.r)}`);
    if (failed(r = rawSyscall(NR.listen, server, 1))) return no(`listen failed: ${errnoText(r)}`);
    if (failed(r = connectTo(client, name.addr))) {
      return no(`cannot connect over loopback: ${errnoText(r)}`);
    }
    if (failed(r = rawSyscall(NR.shutdown, client, 1))) {
      return no(`shutdown(SHUT_WR) failed: ${errnoText(r)}`);
    }
    r = setsockoptInt(client, SOL.TCP, TCP.REPAIR, 1);
    return r === 0
      ? yes("TCP_REPAIR turns on for a half-closed connection")
      : no(`TCP_REPAIR can't be enabled for half-closed sockets: ${answerText(r)}`);
  } finally {
    closeAll(client, server);
  }
}

export function tcpRepairWindow(): ProbeResult {
  return withSocket(AF.INET, SOCK.STREAM, IPPROTO_TCP, (fd) => {
    const r = setsockoptInt(fd, SOL.TCP, TCP.REPAIR, 1);
    if (failed(r)) return no(`cannot turn TCP repair mode on: ${errnoText(r)}`);
    const w = getsockoptBytes(fd, SOL.TCP, TCP.REPAIR_WINDOW, 20);
    if (w.r === 0) return yes("TCP_REPAIR_WINDOW reads in repair mode");
    return no(`the TCP_REPAIR_WINDOW option is not supported: ${answerText(w.r)}`);
  });
}

export function sockPeekOff(): ProbeResult {
  return withSocket(AF.UNIX, SOCK.DGRAM, 0, (fd) => {
    const o = getsockoptBytes(fd, SOL.SOCKET, SO.PEEK_OFF, 4);
    return o.r === 0 && o.len === 4 && readInt32(o.bytes) === -1
      ? yes("SO_PEEK_OFF reads -1 (off) on a new unix socket")
      : no(`SO_PEEK_OFF does not work (${failed(o.r) ? errnoText(o.r) : `value ${readInt32(o.bytes)}`})`);
  });
}

export function soGets(): ProbeResult {
  return withSocket(AF.INET, SOCK.DGRAM, IPPROTO_UDP, (fd) => {
    const filter = getsockoptBytes(fd, SOL.SOCKET, SO.GET_FILTER, 0);
    if (failed(filter.r)) {
      return no(`cannot read a socket filter (SO_GET_FILTER): ${errnoText(filter.r)}`);
    }
    const dev = getsockoptBytes(fd, SOL.SOCKET, SO.BINDTODEVICE, 16);
    if (failed(dev.r)) {
      return no(`cannot read a socket's bound device (SO_BINDTODEVICE): ${errnoText(dev.r)}`);
    }
    return yes("SO_GET_FILTER and SO_BINDTODEVICE read");
  });
}

export function sockoptBufLock(): ProbeResult {
  return withSocket(AF.INET, SOCK.STREAM, IPPROTO_TCP, (fd) => {
    const o = getsockoptBytes(fd, SOL.SOCKET, SO.BUF_LOCK, 4);
    if (o.r === 0) return yes("SO_BUF_LOCK reads");
    return no(
      failedWith(o.r, "ENOPROTOOPT")
        ? "SO_BUF_LOCK is not known to this kernel"
        : `SO_BUF_LOCK: ${answerText(o.r)}`,
    );
  });
}

export function ipv6Freebind(): ProbeResult {
  try {
    Deno.statSync("/proc/sys/net/ipv6");
  } catch {
    return no("IPv6 is disabled (/proc/sys/net/ipv6 is missing)");
  }
  return withSocket(AF.INET6, SOCK.DGRAM, IPPROTO_UDP, (fd) => {
    const r = setsockoptInt(fd, SOL.IPV6, IPV6.FREEBIND, 1);
    if (r === 0) return yes("IPV6_FREEBIND sets");
    return no(
      failedWith(r, "ENOPROTOOPT")
        ? "IPV6_FREEBIND is not known to this kernel"
        : `IPV6_FREEBIND: ${answerText(r)}`,
    );
  });
}

export function skNetns(): ProbeResult {
  return withSocket(AF.UNIX, SOCK.DGRAM, 0, (fd) => {
    const ns = ioctlNone(fd, SIOCGSKNS);
    if (failed(ns)) return no(`SIOCGSKNS cannot get a socket's network namespace: ${errnoText(ns)}`);
    closeFd(ns);
    return yes("SIOCGSKNS returns a socket's network namespace");
  });
}

export function skUnixFile(): ProbeResult {
  return withSocket(AF.UNIX, SOCK.DGRAM, 0, (fd) => {
    const r = ioctlNone(fd, SIOCUNIXFILE);
    if (!failed(r)) closeFd(r);
    return !failed(r) || failedWith(r, "ENOENT")
      ? yes("SIOCUNIXFILE exists (ENOENT for an unbound socket)")
      : no(`SIOCUNIXFILE cannot open a socket's file: ${errnoText(r)}`);
  });
}

// --- sock_diag -----------------------------------------------------------------------------------

/** Dumps every kind in `kinds`; the ones the kernel refused, with why. */
function diagFailures(kinds: readonly [string, number, number][]): string[] {
  const refused: string[] = [];
  for (const [name, family, protocol] of kinds) {
    const { error } = ask(NETLINK.SOCK_DIAG, sockDiagDumpRequest(family, protocol));
    if (failed(error)) refused.push(`${name} (${errnoText(error)})`);
  }
  return refused;
}

export function sockDiag(): ProbeResult {
  const kinds: [string, number, number][] = [
    ["unix", AF.UNIX, 0],
    ["tcp", AF.INET, IPPROTO_TCP],
    ["udp", AF.INET, IPPROTO_UDP],
    ["packet", AF.PACKET, 0],
    ["netlink", AF.NETLINK, 0],
  ];
  try {
    Deno.statSync("/proc/sys/net/ipv6");
    kinds.push(["tcp6", AF.INET6, IPPROTO_TCP], ["udp6", AF.INET6, IPPROTO_UDP]);
  } catch {
    // no IPv6: nothing to dump there
  }
  const refused = diagFailures(kinds);
  return refused.length
    ? no(`sock_diag cannot dump ${refused.join(", ")}: the *_DIAG kernel options or modules are missing`)
    : yes(`sock_diag dumps ${kinds.map((k) => k[0]).join(", ")} sockets`);
}

export function netDiagRaw(): ProbeResult {
  const refused = diagFailures([["raw", AF.INET, IPPROTO_RAW], ["raw6", AF.INET6, IPPROTO_RAW]]);
  return refused.length
    ? no(`sock_diag cannot dump ${refused.join(", ")} sockets (CONFIG_INET_RAW_DIAG)`)
    : yes("sock_diag dumps raw and raw6 sockets");
}

// --- rtnetlink -----------------------------------------------------------------------------------

const RTM_SETLINK = 19;
const RTM_NEWNSID = 88;
const RTM_GETNSID = 90;
const NETNSA_NSID = 1;
const NETNSA_PID = 2;
const IFLA_IFNAME = 3;
const IFLA_NEW_IFINDEX = 49;

export function nsid(): ProbeResult {
  const msg = request(RTM_GETNSID, NLM_F.REQUEST | NLM_F.ACK, new Uint8Array(1), [
    attrS32(NETNSA_PID, Deno.pid),
  ]);
  const { error, replies } = ask(NETLINK.ROUTE, msg);
  const reply = replies.find((r) => r.type === RTM_NEWNSID);
  if (reply && parseAttrs(reply.payload, 1).has(NETNSA_NSID)) return yes("RTM_GETNSID answers with an nsid");
  return no(`NSID isn't supported${failed(error) ? `: ${errnoText(error)}` : ""}`);
}

export function newIfindex(): ProbeResult {
  // A negative index: ERANGE when IFLA_NEW_IFINDEX is understood, ENODEV (no such link) otherwise.
  const msg = request(RTM_SETLINK, NLM_F.REQUEST | NLM_F.ACK | NLM_F.CREATE, new Uint8Array(16), [
    attrS32(IFLA_NEW_IFINDEX, -1),
    attrString(IFLA_IFNAME, "criu-ts-kdat"),
  ]);
  const { error } = ask(NETLINK.ROUTE, msg);
  if (failedWith(error, "ERANGE")) {
    return yes("rtnetlink checks IFLA_NEW_IFINDEX (ERANGE for a negative index)");
  }
  if (failedWith(error, "ENODEV")) return no("IFLA_NEW_IFINDEX isn't supported");
  return no(`unexpected answer to IFLA_NEW_IFINDEX: ${failed(error) ? errnoText(error) : "success"}`);
}
