/**
 * A TypeScript plugin for the tests: the example perf event plugin, with the same trace and failure
 * modes as the C test plugins (CRIU_TS_PLUGIN_TRACE, CRIU_TS_PLUGIN_MODE; see perf_common.h), and
 * as they do, it takes a unix stream socket connected outside the tree: it saves the path of the
 * socket's peer and connects a new socket there at restore (libc through FFI, as a plugin would).
 */
import example from "../../src/plugins/examples/perf_event.ts";
import type { CriuPlugin } from "../../src/plugins/api.ts";

const EIO = 5;

function trace(line: string): void {
  const path = Deno.env.get("CRIU_TS_PLUGIN_TRACE");
  if (path) Deno.writeTextFileSync(path, `${line}\n`, { append: true });
}

const mode = () => Deno.env.get("CRIU_TS_PLUGIN_MODE") ?? "";

const ENOTSUP = 95;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
/** struct sockaddr_un: a u16 family, then up to 108 bytes of path. */
const SOCKADDR_UN_SIZE = 110;

let images = "";

function libc() {
  return Deno.dlopen("libc.so.6", {
    getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
    socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
    connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
  });
}

/** The path a unix socket's peer is bound to, or undefined (not unix, unbound, abstract). */
function peerPath(fd: number): string | undefined {
  const lib = libc();
  try {
    const addr = new Uint8Array(SOCKADDR_UN_SIZE);
    const len = new Uint32Array([SOCKADDR_UN_SIZE]);
    if (lib.symbols.getpeername(fd, addr, len) !== 0) return undefined;
    if (new DataView(addr.buffer).getUint16(0, true) !== AF_UNIX || addr[2] === 0) return undefined;
    const path = addr.subarray(2, len[0]);
    const end = path.indexOf(0);
    return new TextDecoder().decode(end < 0 ? path : path.subarray(0, end));
  } finally {
    lib.close();
  }
}

function connectTo(path: string): number {
  const lib = libc();
  try {
    const addr = new Uint8Array(SOCKADDR_UN_SIZE);
    new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
    addr.set(new TextEncoder().encode(path), 2);
    const sk = lib.symbols.socket(AF_UNIX, SOCK_STREAM, 0);
    if (sk < 0 || lib.symbols.connect(sk, addr, SOCKADDR_UN_SIZE) !== 0) {
      if (sk >= 0) lib.symbols.close(sk);
      return -1;
    }
    return sk;
  } finally {
    lib.close();
  }
}

const plugin: CriuPlugin = {
  name: "perf-event-ts-test",
  init(stage, ctx) {
    trace(`init ${stage}`);
    ctx.log.info(`perf-event-ts-test: init at stage ${stage}, images fd ${ctx.images.fd}`);
    images = ctx.images.path;
    return mode() === "fail-init" ? -1 : example.init!(stage, ctx);
  },
  exit(stage, ret) {
    trace(`exit ${stage} ${ret}`);
  },
  dumpExtFile(file, id) {
    const r = example.dumpExtFile!(file, id);
    if (r === 0) trace(`dump ${id}`);
    return r === 0 && mode() === "fail-dump" ? -EIO : r;
  },
  dumpUnixSk(socket, id) {
    const path = peerPath(socket.fd);
    if (path === undefined) return -ENOTSUP;
    Deno.writeTextFileSync(`${images}/unix-peer-ts-${id}.txt`, path);
    trace(`dump unix ${id}`);
    return 0;
  },
  restoreUnixSk(id) {
    trace(`restore unix ${id}`);
    let path: string;
    try {
      path = Deno.readTextFileSync(`${images}/unix-peer-ts-${id}.txt`);
    } catch {
      return -ENOTSUP;
    }
    const fd = connectTo(path);
    return fd < 0 ? -EIO : { fd };
  },
  restoreExtFile(id) {
    trace(`restore ${id}`);
    return mode() === "fail-restore" ? -EIO : example.restoreExtFile!(id);
  },
};

export default plugin;
