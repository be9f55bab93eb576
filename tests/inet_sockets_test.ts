/**
 * IPv4/IPv6 TCP and UDP sockets: listeners (they accept after a restore), bound and unbound
 * sockets, UDP bound and connected, v6only and v4-mapped, their options (inet_sk in the matrix);
 * what Debian's crit reads of the images.
 */
import assert from "node:assert/strict";
import { criuOk, tempDir, Workload } from "./lib/harness.ts";
import { registerMatrix } from "./lib/matrix.ts";

registerMatrix([{ name: "inet_sk" }]);

function critDecode(path: string): { entries: Record<string, unknown>[] } {
  const out = new Deno.Command("/usr/bin/crit", { args: ["decode", "-i", path] }).outputSync();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("crit decodes the inet sockets of files.img", async () => {
  const w = await Workload.start("inet_sk");
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const files = critDecode(`${images}/files.img`).entries;
    const sockets = files.filter((f) => f["type"] === "INETSK").map((f) =>
      f["isk"] as Record<string, unknown>
    );
    assert.equal(sockets.length, 9, JSON.stringify(files));
    // crit shows the numbers: state 10 is LISTEN, 1 ESTABLISHED; family 10 is AF_INET6; an address
    // is its words as the kernel keeps them (127.0.0.1 is 0x0100007f).
    const listeners = sockets.filter((s) => s["state"] === 10);
    assert.equal(listeners.length, 4);
    assert.ok(listeners.some((s) => s["backlog"] === 7 && JSON.stringify(s["src_addr"]) === "[16777343]"));
    assert.ok(sockets.some((s) => s["family"] === 10 && s["v6only"] === true));
    const mapped = [0, 0, 0xffff0000, 0x0100007f];
    assert.ok(sockets.some((s) => JSON.stringify(s["dst_addr"]) === JSON.stringify(mapped)));
    const udp = sockets.filter((s) => s["proto"] === 17);
    assert.equal(udp.length, 3);
    assert.equal(udp.filter((s) => s["state"] === 1).length, 2);
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});
