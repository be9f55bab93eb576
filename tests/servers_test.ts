/**
 * Real server programs from Debian's archive (and Node.js, Deno), run as a user runs them: each
 * listens on a free port of 127.0.0.1 with its configuration in a temporary directory. A client
 * (this test) keeps one connection open across the checkpoint: after a dump with
 * --tcp-established and a restore, the same connection answers with the state made before (keys
 * set, counters going on), and new connections are accepted. With -R the server runs on and the
 * connection with it. Each test stops its server and leaves nothing behind.
 */
import assert from "node:assert/strict";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import { criuOk, descendants, exists, killTree, openFds, reap, ROOT, sleep, tempDir } from "./lib/harness.ts";
import { findInPath, installed } from "./lib/tools.ts";

/** One connection of the client, kept open; a reply ends where `complete` says it does. */
class Connection {
  private buffered = new Uint8Array(0);
  private constructor(private readonly conn: Deno.TcpConn) {}

  static async open(port: number): Promise<Connection> {
    return new Connection(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Sends `request` and reads until `complete` gives the reply's length; returns the reply. */
  async ask(request: string, complete: (text: string) => number | null): Promise<string> {
    await this.conn.write(new TextEncoder().encode(request));
    const chunk = new Uint8Array(65536);
    const deadline = Date.now() + 20000;
    for (;;) {
      const text = new TextDecoder().decode(this.buffered);
      const length = complete(text);
      if (length !== null) {
        this.buffered = this.buffered.slice(new TextEncoder().encode(text.slice(0, length)).length);
        return text.slice(0, length);
      }
      if (Date.now() > deadline) throw new Error(`No whole reply to ${JSON.stringify(request)}: "${text}"`);
      const n = await this.conn.read(chunk);
      if (n === null) throw new Error(`The server closed the connection; had "${text}"`);
      const joined = new Uint8Array(this.buffered.length + n);
      joined.set(this.buffered);
      joined.set(chunk.subarray(0, n), this.buffered.length);
      this.buffered = joined;
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // closed already
    }
  }
}

/** The length of a whole HTTP/1.1 response at the start of `text` (Content-Length framed). */
function httpResponse(text: string): number | null {
  const head = text.indexOf("\r\n\r\n");
  if (head < 0) return null;
  const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, head));
  if (!length) throw new Error(`An HTTP response without Content-Length: ${text.slice(0, head)}`);
  const end = head + 4 + Number(length[1]);
  return text.length >= end ? end : null;
}

/** The body of a keep-alive GET of `path`, checked to be a 200 kept alive. */
async function httpGet(c: Connection, path: string): Promise<string> {
  const reply = await c.ask(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n`,
    httpResponse,
  );
  assert.match(reply, /^HTTP\/1\.1 200 /, reply);
  assert.doesNotMatch(reply, /\r\nconnection: *close/i, `the server closes the connection: ${reply}`);
  return reply.slice(reply.indexOf("\r\n\r\n") + 4);
}

/** The length of one whole RESP reply at the start of `text` (simple, integer, bulk). */
function redisReply(text: string): number | null {
  const line = text.indexOf("\r\n");
  if (line < 0) return null;
  if (text[0] !== "$") return line + 2;
  const size = Number(text.slice(1, line));
  if (size < 0) return line + 2;
  return text.length >= line + 2 + size + 2 ? line + 2 + size + 2 : null;
}

function redisCommand(...words: string[]): string {
  return `*${words.length}\r\n${words.map((w) => `$${w.length}\r\n${w}\r\n`).join("")}`;
}

/** The length of one memcached reply: up to END (a get) or one line (set, incr). */
function memcachedReply(text: string): number | null {
  if (text.startsWith("VALUE") || text.startsWith("END")) {
    const end = text.indexOf("END\r\n");
    return end < 0 ? null : end + 5;
  }
  const line = text.indexOf("\r\n");
  return line < 0 ? null : line + 2;
}

/** A server program and how a client tells its state. */
interface Server {
  name: string;
  /** The program (Debian's packages are installed by scripts/setup.sh). */
  binary: string;
  /** Its command line, with its configuration written into `dir`. */
  argv(dir: string, port: number): string[];
  /** Makes state through `c` that must survive (keys, counters). */
  prepare(c: Connection): Promise<void>;
  /** Checks through `c` that the state is still there; `round` counts checks since prepare. */
  check(c: Connection, round: number): Promise<void>;
  /** Options the program needs besides --tcp-established, as CRIU would ask of it. */
  criuArgs?: string[];
}

const page = "criu-ts keeps this page\n";

function writePage(dir: string): void {
  Deno.mkdirSync(`${dir}/www`, { recursive: true });
  Deno.writeTextFileSync(`${dir}/www/page.txt`, page);
}

/** An HTTP server answering with a counter held in its memory: it must go on, not restart. */
function counterServer(name: string, binary: string, argv: (dir: string, port: number) => string[]): Server {
  let last = 0;
  return {
    name,
    binary,
    argv,
    async prepare(c) {
      last = Number(await httpGet(c, "/"));
      assert.ok(last >= 1, `${name} answered a count of ${last}`);
    },
    async check(c) {
      const now = Number(await httpGet(c, "/"));
      assert.ok(now > last, `${name} counted ${now} after ${last}: its memory was not kept`);
      last = now;
    },
  };
}

/** A server of static files: the page comes back the same on the old and a new connection. */
function fileServer(name: string, binary: string, argv: (dir: string, port: number) => string[]): Server {
  return {
    name,
    binary,
    argv,
    async prepare(c) {
      assert.equal(await httpGet(c, "/page.txt"), page);
    },
    async check(c) {
      assert.equal(await httpGet(c, "/page.txt"), page);
    },
  };
}

function nginxConfig(dir: string, port: number): string {
  const conf = `${dir}/nginx.conf`;
  writePage(dir);
  Deno.writeTextFileSync(
    conf,
    `daemon off;
user root;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 64; }
http {
  access_log off;
  keepalive_timeout 600s;
  keepalive_requests 100000;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    root ${dir}/www;
  }
}
`,
  );
  return conf;
}

/** Node wherever this machine has it; checked when a server starts. */
const nodeBin = findInPath("node") ?? "node (in no directory of PATH)";

const denoBin = `${ROOT}/node_modules/.bin/deno`;

const servers: Server[] = [
  fileServer(
    "nginx",
    "/usr/sbin/nginx",
    (dir, port) => ["nginx", "-c", nginxConfig(dir, port), "-e", `${dir}/error.log`],
  ),
  {
    name: "redis-server",
    binary: "/usr/bin/redis-server",
    argv: (dir, port) => [
      "redis-server",
      "--port",
      `${port}`,
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "no",
      "--timeout",
      "0",
      "--logfile",
      `${dir}/redis.log`,
    ],
    async prepare(c) {
      assert.equal(
        await c.ask(redisCommand("SET", "greeting", "kept across a checkpoint"), redisReply),
        "+OK\r\n",
      );
      assert.equal(await c.ask(redisCommand("INCR", "visits"), redisReply), ":1\r\n");
    },
    async check(c, round) {
      assert.equal(
        await c.ask(redisCommand("GET", "greeting"), redisReply),
        "$24\r\nkept across a checkpoint\r\n",
      );
      assert.equal(await c.ask(redisCommand("INCR", "visits"), redisReply), `:${round + 2}\r\n`);
    },
  },
  {
    name: "memcached",
    binary: "/usr/bin/memcached",
    argv: (
      _dir,
      port,
    ) => ["memcached", "-l", "127.0.0.1", "-p", `${port}`, "-U", "0", "-u", "root", "-t", "2", "-m", "16"],
    async prepare(c) {
      assert.equal(await c.ask("set greeting 0 0 5\r\nhello\r\n", memcachedReply), "STORED\r\n");
      assert.equal(await c.ask("set visits 0 0 1\r\n0\r\n", memcachedReply), "STORED\r\n");
    },
    async check(c, round) {
      assert.equal(await c.ask("get greeting\r\n", memcachedReply), "VALUE greeting 0 5\r\nhello\r\nEND\r\n");
      assert.equal(await c.ask("incr visits 1\r\n", memcachedReply), `${round + 1}\r\n`);
    },
  },
  fileServer("python3 -m http.server", "/usr/bin/python3", (dir, port) => {
    writePage(dir);
    return [
      "python3",
      "-m",
      "http.server",
      "--protocol",
      "HTTP/1.1",
      "--bind",
      "127.0.0.1",
      "-d",
      `${dir}/www`,
      `${port}`,
    ];
  }),
  counterServer("node http", nodeBin, (_dir, port) => [
    "node",
    "-e",
    `let n = 0;
const server = require("http").createServer((req, res) => {
  const body = String(++n);
  res.writeHead(200, { "Content-Length": body.length });
  res.end(body);
});
server.keepAliveTimeout = 0;
server.listen(${port}, "127.0.0.1");`,
  ]),
  {
    // Deno holds a lock on its module cache (SQLite) while it runs: as with CRIU, --file-locks.
    ...counterServer("deno serve", denoBin, (dir, port) => {
      Deno.writeTextFileSync(
        `${dir}/server.ts`,
        `let n = 0;
Deno.serve({ hostname: "127.0.0.1", port: ${port}, onListen() {} }, () => new Response(String(++n)));
`,
      );
      return ["deno", "run", "--allow-net", "--no-prompt", `${dir}/server.ts`];
    }),
    criuArgs: ["--file-locks"],
  },
];

/** A port nobody listens on now (the kernel picks it). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function startServer(s: Server, dir: string, port: number): number {
  const argv = s.argv(dir, port);
  const log = openFd(`${dir}/server.log`, OPEN.WRONLY | OPEN.CREAT | OPEN.APPEND | OPEN.CLOEXEC);
  const nul = openFd("/dev/null", OPEN.RDONLY | OPEN.CLOEXEC);
  try {
    return spawn(installed(s.binary, `${s.name}'s`), argv, {
      fds: { 0: nul, 1: log, 2: log },
      setsid: true,
      env: { PATH: "/usr/sbin:/usr/bin:/bin", HOME: dir, DENO_DIR: `${dir}/deno`, NO_COLOR: "1" },
    });
  } finally {
    closeFd(log);
    closeFd(nul);
  }
}

async function accepting(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

async function waitAccepting(s: Server, dir: string, port: number): Promise<void> {
  const end = Date.now() + 30000;
  while (!(await accepting(port))) {
    if (Date.now() > end) {
      const log = exists(`${dir}/server.log`) ? Deno.readTextFileSync(`${dir}/server.log`) : "";
      throw new Error(`${s.name} does not accept on port ${port}: ${log}`);
    }
    await sleep(50);
  }
}

type Mode = "restore" | "leave-running" | "cycles";

/** Dumps the server's tree with --tcp-established and restores it (or leaves it running). */
async function checkpoint(pid: number, images: string, mode: Mode, extra: string[]): Promise<void> {
  const tree = [pid, ...descendants(pid)];
  const options = ["--tcp-established", ...extra];
  const common = [
    "-D",
    images,
    "-o",
    mode === "leave-running" ? "dump-R.log" : "dump.log",
    "-v4",
    ...options,
  ];
  if (mode === "leave-running") {
    await criuOk(["dump", "-t", `${pid}`, ...common, "-R"]);
    return;
  }
  await criuOk(["dump", "-t", `${pid}`, ...common]);
  for (const p of tree) await reap(p);
  await criuOk(["restore", "-D", images, "-d", "-o", "restore.log", "-v4", ...options]);
  assert.ok(exists(`/proc/${pid}`), "the server is back under its PID");
}

/**
 * Netfilter rules of a network lock (CRIU's mark 0xC114, table inet CRIU) on `port` now present
 * (other tests of the machine may hold locks of their own on other ports meanwhile).
 */
function lockRules(port: number): string[] {
  const run = (cmd: string, args: string[]) =>
    new TextDecoder().decode(
      new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).outputSync().stdout,
    );
  const all = run("iptables-save", []) + run("ip6tables-save", []) + run("nft", ["list", "ruleset"]);
  return all.split("\n").filter((l) => /0xc114|table inet CRIU/i.test(l) && l.includes(`${port}`));
}

async function serverAcrossCheckpoints(s: Server, mode: Mode): Promise<void> {
  const fds = openFds();
  const dir = tempDir("criu-ts-server-");
  const images = tempDir();
  const port = freePort();
  let pid = 0;
  let old: Connection | null = null;
  try {
    pid = startServer(s, dir, port);
    await waitAccepting(s, dir, port);
    old = await Connection.open(port);
    await s.prepare(old);
    await s.check(old, 0);
    const rounds = mode === "cycles" ? 10 : 1;
    for (let round = 1; round <= rounds; round++) {
      await checkpoint(pid, images, mode, s.criuArgs ?? []);
      await s.check(old, round);
    }
    const fresh = await Connection.open(port);
    try {
      await s.check(fresh, rounds + 1);
    } finally {
      fresh.close();
    }
    await s.check(old, rounds + 2);
  } catch (e) {
    const logs = ["dump.log", "dump-R.log", "restore.log"].filter((f) => exists(`${images}/${f}`))
      .map((f) => `--- ${f}\n${Deno.readTextFileSync(`${images}/${f}`).split("\n").slice(-15).join("\n")}`);
    throw new Error(`${s.name}: ${e instanceof Error ? e.message : e}\n${logs.join("\n")}`, { cause: e });
  } finally {
    old?.close();
    await killTree(pid);
    Deno.removeSync(dir, { recursive: true });
    Deno.removeSync(images, { recursive: true });
  }
  assert.ok(!(await accepting(port)), `${s.name} left a listener on port ${port}`);
  assert.deepEqual(lockRules(port), [], "a network lock rule was left behind");
  assert.deepEqual(openFds(), fds, "the test leaked fds");
}

for (const s of servers) {
  Deno.test(`${s.name} answers on its old and new connections after dump and restore`, () =>
    serverAcrossCheckpoints(s, "restore"));
  Deno.test(`${s.name} answers on after dump --leave-running`, () =>
    serverAcrossCheckpoints(s, "leave-running"));
  Deno.test(`${s.name} answers on after 10 dump/restore cycles`, () => serverAcrossCheckpoints(s, "cycles"));
}
