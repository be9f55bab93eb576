/**
 * Packet sockets (AF_PACKET): a raw socket bound to lo capturing (aux data, original device, loss,
 * timestamp, copy threshold, a multicast membership), a datagram socket in a fanout group, and an
 * unbound one with virtio-net headers, TPACKET_V2, a reserve and a receive ring, in the usual
 * matrix, and with an obsolete SOCK_PACKET socket bound to lo; packetsk entries as CRIU writes
 * them, read by Debian's crit; a ring mapped into memory (not supported yet) refused by name with
 * the process left running.
 */
import assert from "node:assert/strict";
import { criuOk, tempDir, Workload } from "./lib/harness.ts";
import { critDecode } from "./lib/tools.ts";
import { refusedDump, registerMatrix } from "./lib/matrix.ts";

registerMatrix([{ name: "packet_sk" }, { name: "packet_sk", args: ["spkt"] }]);

Deno.test("crit decodes the packet sockets of files.img as CRIU writes them", async () => {
  const w = await Workload.start("packet_sk");
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const sockets = critDecode(`${images}/files.img`).entries
      .filter((f) => f["type"] === "PACKETSK")
      .map((f) => f["psk"] as Record<string, unknown>);
    assert.equal(sockets.length, 3, JSON.stringify(sockets));
    // Protocols are kept as socket() takes them, in network order: ETH_P_ALL (3) is 0x300.
    const raw = sockets.find((s) => s["protocol"] === 0x300)!;
    assert.ok(raw, "no ETH_P_ALL socket");
    assert.equal(raw["ifindex"], 1);
    assert.deepEqual(
      [raw["aux_data"], raw["orig_dev"], raw["loss"], raw["timestamp"], raw["copy_thresh"]],
      [true, true, true, 0x10, 128],
    );
    const mclist = raw["mclist"] as Record<string, unknown>[];
    assert.equal(mclist.length, 1);
    assert.equal(mclist[0]!["type"], 0);
    const dgram = sockets.find((s) => s["protocol"] === 0x8)!; // ETH_P_IP, 0x0800
    assert.ok(dgram, "no ETH_P_IP socket");
    assert.equal(dgram["type"], 2);
    assert.equal((dgram["fanout"] as number) & 0xffff, w.pid & 0xffff);
    const unbound = sockets.find((s) => s["protocol"] === 0)!;
    assert.deepEqual([unbound["vnet_hdr"], unbound["version"], unbound["reserve"]], [true, 1, 64]);
    const ring = unbound["rx_ring"] as Record<string, unknown>;
    assert.deepEqual([ring["block_size"], ring["block_nr"], ring["frame_size"], ring["frame_nr"]], [
      4096,
      2,
      2048,
      4,
    ]);
    assert.equal(unbound["tx_ring"], undefined);
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("a packet socket's ring mapped into memory is refused by name, and the process runs on", () =>
  refusedDump(
    "packet_sk",
    ["mapped"],
    /the mapping of socket:\[\d+\] at 0x[0-9a-f]+-0x[0-9a-f]+.*not supported/,
  ));
