import assert from "node:assert/strict";
import {
  AF,
  decodeSockaddr,
  encodeSockaddr,
  inetAddress,
  SOCKADDR_IN6_SIZE,
  SOCKADDR_IN_SIZE,
  SOCKADDR_UN_SIZE,
  unixAddress,
  unixNameText,
} from "./sockaddr.ts";
import { cFacts } from "../tests/lib/cfacts.ts";

Deno.test("sockaddr layouts match the headers", async () => {
  const f = await cFacts(["sys/socket.h", "sys/un.h", "netinet/in.h"], {
    un: "sizeof(struct sockaddr_un)",
    in: "sizeof(struct sockaddr_in)",
    in6: "sizeof(struct sockaddr_in6)",
    inPort: "offsetof(struct sockaddr_in, sin_port)",
    inAddr: "offsetof(struct sockaddr_in, sin_addr)",
    in6Flow: "offsetof(struct sockaddr_in6, sin6_flowinfo)",
    in6Addr: "offsetof(struct sockaddr_in6, sin6_addr)",
    in6Scope: "offsetof(struct sockaddr_in6, sin6_scope_id)",
    AF_PACKET: "AF_PACKET",
    AF_NETLINK: "AF_NETLINK",
    AF_INET6: "AF_INET6",
  });
  assert.deepEqual([SOCKADDR_UN_SIZE, SOCKADDR_IN_SIZE, SOCKADDR_IN6_SIZE], [f.un, f.in, f.in6]);
  assert.deepEqual([f.inPort, f.inAddr, f.in6Flow, f.in6Addr, f.in6Scope], [2, 4, 4, 8, 24]);
  assert.deepEqual([AF.PACKET, AF.NETLINK, AF.INET6], [f.AF_PACKET, f.AF_NETLINK, f.AF_INET6]);
});

Deno.test("inet addresses encode in network order and decode back", () => {
  const v4 = encodeSockaddr(inetAddress(AF.INET, "10.1.2.3", 8080));
  assert.equal(v4.len, 16);
  assert.deepEqual([...v4.bytes.subarray(0, 8)], [2, 0, 0x1f, 0x90, 10, 1, 2, 3]);
  assert.deepEqual(decodeSockaddr(v4.bytes, v4.len), inetAddress(AF.INET, "10.1.2.3", 8080));
  const a6 = { family: AF.INET6, address: "fe80::1", port: 443, scopeId: 2, flowinfo: 0 } as const;
  const v6 = encodeSockaddr(a6);
  assert.equal(v6.len, 28);
  assert.deepEqual(decodeSockaddr(v6.bytes, v6.len), a6);
  assert.throws(
    () => encodeSockaddr(inetAddress(AF.INET, "::1", 1)),
    /Expected an IPv4 address, found "::1"/,
  );
});

Deno.test("unix names: paths, abstract names and the unnamed", () => {
  const path = encodeSockaddr(unixAddress("/run/x.sock"));
  assert.equal(path.len, 2 + 11);
  const abs = unixAddress("@hidden");
  assert.equal(abs.name[0], 0);
  assert.equal(unixNameText(abs.name), "@hidden");
  // As the kernel returns a path: with its terminating NUL.
  const kernelPath = new Uint8Array(2 + 12);
  kernelPath[0] = AF.UNIX;
  kernelPath.set(new TextEncoder().encode("/run/x.sock\0"), 2);
  const decoded = decodeSockaddr(kernelPath, kernelPath.length);
  assert.equal(decoded.family, AF.UNIX);
  assert.equal(unixNameText((decoded as { name: Uint8Array }).name), "/run/x.sock");
  assert.equal(unixNameText(new Uint8Array(0)), "");
  assert.throws(() => encodeSockaddr(unixAddress("/" + "x".repeat(120))), /at most 108 fit/);
});
