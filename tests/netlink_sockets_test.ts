/**
 * Netlink sockets: a route socket bound to a group and a generic one never bound, in the usual
 * matrix; a socket with an answer waiting to be read is refused by name.
 */
import assert from "node:assert/strict";
import { registerMatrix } from "./lib/matrix.ts";
import { criu, readNumbers, tempDir } from "./lib/harness.ts";
import { python3 } from "./lib/tools.ts";

registerMatrix([{ name: "netlink_sk" }]);

Deno.test("a netlink socket with data waiting is refused by name, and the process runs on", async () => {
  const images = tempDir();
  // Python asks for a link dump and never reads the answer.
  const script = [
    "import socket,struct,os,time",
    "s=socket.socket(socket.AF_NETLINK,socket.SOCK_RAW,0)",
    "s.bind((0,0))",
    "s.send(struct.pack('=LHHLLBxxxiII',32,18,0x301,1,0,0,0,0,0))",
    "time.sleep(0.2)",
    "print(os.getpid(),flush=True)",
    "time.sleep(30)",
  ].join("\n");
  const py = new Deno.Command(python3(), { args: ["-c", script], stdout: "piped", stdin: "null" })
    .spawn();
  try {
    const [pid] = await readNumbers(py.stdout, 1);
    const r = await criu(["dump", "-t", `${pid}`, "-D", images, "-j"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /netlink socket \d+\) of process \d+: the socket has data to read/);
    assert.match(Deno.readTextFileSync(`/proc/${pid}/status`), /TracerPid:\s+0\n/);
  } finally {
    py.kill("SIGKILL");
    await py.status;
    await py.stdout.cancel().catch(() => {});
    Deno.removeSync(images, { recursive: true });
  }
});
