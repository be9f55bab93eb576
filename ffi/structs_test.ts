import assert from "node:assert/strict";
import {
  CLONE_ARGS_SIZE,
  cloneArgs,
  CMSG_HDR_SIZE,
  cmsgSpace,
  EPOLL_EVENT_SIZE,
  epollEvent,
  IOVEC_SIZE,
  iovecs,
  KERNEL_TERMIOS_SIZE,
  KSIGACTION_SIZE,
  msghdr,
  MSGHDR_SIZE,
  parseKernelTermios,
  parseScmRights,
  parseWinsize,
  PRCTL_MM_MAP_SIZE,
  prctlMmMap,
  REG_NAMES,
  Regs,
  scmRights,
  SIGINFO_SIZE,
  SOCKADDR_UN_SIZE,
  sockaddrUn,
  USER_REGS_SIZE,
  WINSIZE_SIZE,
} from "./structs.ts";

Deno.test("user_regs_struct is 27 slots with orig_ax at 15, ip at 16, fs_base at 21", () => {
  assert.equal(USER_REGS_SIZE, 216);
  assert.equal(REG_NAMES.indexOf("orig_ax"), 15);
  assert.equal(REG_NAMES.indexOf("ip"), 16);
  assert.equal(REG_NAMES.indexOf("fs_base"), 21);
  const r = new Regs();
  r.set("orig_ax", -1);
  assert.equal(r.getSigned("orig_ax"), -1n);
  assert.equal(new DataView(r.bytes().buffer).getBigUint64(15 * 8, true), 0xffffffffffffffffn);
});

Deno.test("iovec is 16 bytes: base then length", () => {
  assert.equal(IOVEC_SIZE, 16);
  const v = iovecs([{ base: 0x1000n, len: 7 }]);
  assert.deepEqual([...v], [0x1000n, 7n]);
});

Deno.test("clone_args is 88 bytes with set_tid at 64 and set_tid_size at 72", () => {
  assert.equal(CLONE_ARGS_SIZE, 88);
  const b = cloneArgs({ flags: 0x8000n, exitSignal: 17, setTid: 0xabcn, setTidSize: 1 });
  const v = new DataView(b.buffer);
  assert.equal(b.byteLength, 88);
  assert.equal(v.getBigUint64(0, true), 0x8000n);
  assert.equal(v.getBigUint64(32, true), 17n);
  assert.equal(v.getBigUint64(64, true), 0xabcn);
  assert.equal(v.getBigUint64(72, true), 1n);
});

Deno.test("prctl_mm_map is 104 bytes with auxv_size at 96 and exe_fd at 100", () => {
  assert.equal(PRCTL_MM_MAP_SIZE, 104);
  const z = 0n;
  const b = prctlMmMap({
    startCode: 1n,
    endCode: z,
    startData: z,
    endData: z,
    startBrk: z,
    brk: z,
    startStack: z,
    argStart: z,
    argEnd: z,
    envStart: z,
    envEnd: 11n,
    auxv: 0x55n,
    auxvSize: 48,
    exeFd: -1,
  });
  const v = new DataView(b.buffer);
  assert.equal(v.getBigUint64(0, true), 1n);
  assert.equal(v.getBigUint64(80, true), 11n);
  assert.equal(v.getBigUint64(88, true), 0x55n);
  assert.equal(v.getUint32(96, true), 48);
  assert.equal(v.getInt32(100, true), -1);
});

Deno.test("siginfo is 128 bytes and kernel sigaction 32", () => {
  assert.equal(SIGINFO_SIZE, 128);
  assert.equal(KSIGACTION_SIZE, 32);
});

Deno.test("sockaddr_un holds family 1 and a NUL-terminated path", () => {
  assert.equal(SOCKADDR_UN_SIZE, 110);
  const { addr, len } = sockaddrUn("/run/x.sock");
  assert.equal(new DataView(addr.buffer).getUint16(0, true), 1);
  assert.equal(len, 2 + 11 + 1);
  assert.throws(() => sockaddrUn("/" + "x".repeat(200)), /at most 107/);
});

Deno.test("msghdr is 56 bytes and SCM_RIGHTS round-trips fds", () => {
  assert.equal(MSGHDR_SIZE, 56);
  assert.equal(CMSG_HDR_SIZE, 16);
  assert.equal(cmsgSpace(4), 24);
  const m = msghdr(1, 0x1000n, { addr: 0x2000n, len: 24 });
  const v = new DataView(m.buffer);
  assert.equal(v.getBigUint64(16, true), 0x1000n);
  assert.equal(v.getBigUint64(24, true), 1n);
  assert.equal(v.getBigUint64(32, true), 0x2000n);
  const c = scmRights([5, 9]);
  assert.deepEqual(parseScmRights(c, c.byteLength), [5, 9]);
});

Deno.test("epoll_event is 12 packed bytes: events at 0, data at 4", () => {
  assert.equal(EPOLL_EVENT_SIZE, 12);
  const v = new DataView(epollEvent(0x80000001, 0x1122334455667788n).buffer);
  assert.equal(v.byteLength, 12);
  assert.equal(v.getUint32(0, true), 0x80000001);
  assert.equal(v.getBigUint64(4, true), 0x1122334455667788n);
});

Deno.test("kernel termios is 36 bytes: four flag words, c_line at 16, 19 control characters from 17", () => {
  assert.equal(KERNEL_TERMIOS_SIZE, 36);
  const b = new Uint8Array(36);
  const v = new DataView(b.buffer);
  [1, 2, 3, 4].forEach((x, i) => v.setUint32(4 * i, x, true));
  b[16] = 9;
  for (let i = 0; i < 19; i++) b[17 + i] = 100 + i;
  const t = parseKernelTermios(b);
  assert.deepEqual([t.iflag, t.oflag, t.cflag, t.lflag, t.line], [1, 2, 3, 4, 9]);
  assert.equal(t.cc.length, 19);
  assert.equal(t.cc[18], 118);
});

Deno.test("winsize is four u16: rows, columns, x and y pixels", () => {
  assert.equal(WINSIZE_SIZE, 8);
  const b = new Uint8Array(new Uint16Array([24, 80, 640, 480]).buffer);
  assert.deepEqual(parseWinsize(b), { row: 24, col: 80, xpixel: 640, ypixel: 480 });
});
