import assert from "node:assert/strict";
import { parseControl, peekQueue, SCM_CREDENTIALS, scmCredentials, UCRED_SIZE } from "./skqueue.ts";
import {
  bindSocket,
  closeSocket,
  listenSocket,
  makeSocket,
  makeSocketPair,
  receiveBytes,
  SOCK,
} from "./sockcall.ts";
import { AF, unixAddress } from "./sockaddr.ts";
import { getIntOption, setBoolOption, setIntOption, SO, SOL } from "./sockopt.ts";
import { addressOf, libc } from "./libc.ts";
import { NR, O } from "./syscalls.ts";
import { iovecs, msghdr, scmRights } from "./structs.ts";
import { cFacts } from "../tests/lib/cfacts.ts";

function openFds(): string[] {
  return [...Deno.readDirSync("/proc/self/fd")].map((e) => e.name).sort();
}

/** Sends `data` with a control buffer (fds or credentials) on a socket of ours. */
function sendWith(fd: number, data: Uint8Array<ArrayBuffer>, control: Uint8Array<ArrayBuffer> | null): void {
  const iov = iovecs([{ base: addressOf(data), len: data.length }]);
  const header = msghdr(
    1,
    addressOf(iov),
    control ? { addr: addressOf(control), len: control.length } : null,
  );
  if (libc.sendmsg(fd, header, 0) !== BigInt(data.length)) throw new Error("sendmsg failed");
}

function bytes(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(text) as Uint8Array<ArrayBuffer>;
}

function text(b: Uint8Array): string {
  return new TextDecoder().decode(b);
}

Deno.test("SCM_CREDENTIALS and struct ucred match the headers", async () => {
  const f = await cFacts(["sys/socket.h"], {
    SCM_CREDENTIALS: "SCM_CREDENTIALS",
    ucred: "sizeof(struct ucred)",
  });
  assert.equal(SCM_CREDENTIALS, f.SCM_CREDENTIALS);
  assert.equal(UCRED_SIZE, f.ucred);
  const c = scmCredentials({ pid: 5, uid: 6, gid: 7 });
  assert.deepEqual(parseControl(c, c.length), { fds: [], creds: { pid: 5, uid: 6, gid: 7 } });
});

Deno.test("peekQueue() returns each datagram with its fds and credentials and leaves the queue as it was", () => {
  const before = openFds();
  const [a, b] = makeSocketPair(SOCK.DGRAM);
  const pipe = new Int32Array(2);
  libc.syscall(BigInt(NR.pipe2), addressOf(pipe), BigInt(O.CLOEXEC), 0n, 0n, 0n, 0n);
  const opened: number[] = [];
  try {
    setBoolOption(b, SOL.SOCKET, SO.PASSCRED, true);
    sendWith(a, bytes("first"), null);
    libc.write(pipe[1]!, bytes("through the pipe"), 16n);
    sendWith(a, bytes("with an fd"), scmRights([pipe[0]!]));
    sendWith(a, new Uint8Array(70000), null);

    const q = peekQueue(b);
    q.forEach((m) => opened.push(...m.fds));
    assert.deepEqual(q.map((m) => m.data.length), [5, 10, 70000]);
    assert.equal(text(q[0]!.data), "first");
    assert.deepEqual(q.map((m) => m.fds.length), [0, 1, 0]);
    assert.deepEqual(q[0]!.creds, { pid: Deno.pid, uid: Deno.uid(), gid: Deno.gid() });
    // The fd in flight is a copy of the pipe's read end: it reads what the pipe holds.
    const buf = new Uint8Array(16);
    assert.equal(libc.read(q[1]!.fds[0]!, buf, 16n), 16n);
    assert.equal(text(buf), "through the pipe");

    // Nothing was consumed, and the peek offset is back to "off".
    assert.equal(getIntOption(b, SOL.SOCKET, SO.PEEK_OFF), -1);
    assert.equal(text(receiveBytes(b, 100)), "first");
    assert.equal(text(receiveBytes(b, 100)), "with an fd");
    assert.equal(receiveBytes(b, 100000).length, 70000);
    assert.deepEqual(peekQueue(b), [], "an empty queue");
  } finally {
    opened.forEach((fd) => libc.close(fd));
    [a, b, pipe[0]!, pipe[1]!].forEach(closeSocket);
  }
  assert.deepEqual(openFds(), before, "fds left open");
});

Deno.test("peekQueue() of a stream keeps bytes in order and ends a message after the write that carried fds", () => {
  const before = openFds();
  const [a, b] = makeSocketPair(SOCK.STREAM);
  const opened: number[] = [];
  try {
    sendWith(a, bytes("abc"), null);
    sendWith(a, bytes("def"), null);
    sendWith(a, bytes("g"), scmRights([a]));
    sendWith(a, bytes("hij"), null);
    const q = peekQueue(b);
    q.forEach((m) => opened.push(...m.fds));
    // A stream peek runs on across writes and stops after the first one that carries fds.
    assert.deepEqual(q.map((m) => [text(m.data), m.fds.length]), [["abcdefg", 1], ["hij", 0]]);
    assert.equal(q[0]!.creds, undefined, "no credentials without SO_PASSCRED");
    assert.equal(text(receiveBytes(b, 3)), "abc");
  } finally {
    opened.forEach((fd) => libc.close(fd));
    [a, b].forEach(closeSocket);
  }
  assert.deepEqual(openFds(), before, "fds left open");
});

Deno.test("peekQueue() keeps a peek offset the socket had", () => {
  const [a, b] = makeSocketPair(SOCK.SEQPACKET);
  try {
    sendWith(a, bytes("one"), null);
    sendWith(a, bytes("two"), null);
    setIntOption(b, SOL.SOCKET, SO.PEEK_OFF, 1);
    assert.deepEqual(peekQueue(b).map((m) => text(m.data)), ["one", "two"]);
    assert.equal(getIntOption(b, SOL.SOCKET, SO.PEEK_OFF), 1);
  } finally {
    [a, b].forEach(closeSocket);
  }
});

Deno.test("peekQueue() of a listener or an unconnected stream socket is empty", () => {
  const l = makeSocket(AF.UNIX, SOCK.STREAM);
  const lone = makeSocket(AF.UNIX, SOCK.SEQPACKET);
  try {
    assert.deepEqual(peekQueue(lone), []);
    bindSocket(l, unixAddress(`@criu-ts-skqueue-${Deno.pid}`));
    listenSocket(l, 1);
    assert.deepEqual(peekQueue(l), []);
  } finally {
    closeSocket(l);
    closeSocket(lone);
  }
});
