/**
 * Network namespaces beyond the loopback: the netdev workload leads out of its namespace through a
 * veth pair (outer end in the test's namespace, which the test gives 198.19.77.1 and
 * fd00:198:19:77::1), with addresses, routes, a rule, an iptables rule and changed sysctls inside.
 * Every restore names the outer end (`--veth-pair` or `--external veth[]`) and the test gives it
 * its addresses again, as a runtime would; the workload then checks its own view and that traffic
 * flows through the veth. Also: an established TCP connection into the namespace, CRIU's tools
 * reading the images, device kinds refused by name, a plugin taking one (DUMP_EXT_LINK),
 * and a failed restore leaving no device behind.
 */
import assert from "node:assert/strict";
import { criu, criuOk, descendants, exists, reap, ROOT, tempDir, waitFor, Workload } from "./lib/harness.ts";
import { withWorkload } from "./lib/matrix.ts";
import { CriuClient } from "../mod.ts";
import { create } from "@bufbuild/protobuf";
import { ImageDir } from "../src/images/dir.ts";
import { KINDS } from "../src/images/kinds.ts";
import { nd_type, type net_device_entry, net_device_entrySchema } from "../src/images/gen/netdev_pb.ts";
import { sit_entrySchema } from "../src/images/gen/sit_pb.ts";
import { sitArgs, sitEntry } from "../src/objects/netdev_sit.ts";
import {
  type Dump,
  ourDump,
  ourRestore,
  type Restore,
  UPSTREAM,
  upstreamDump,
  upstreamRestore,
} from "./lib/upstream.ts";

const INNER = "eth0";
let outerCount = 0;

/** A name for the outer end of one test's veth (15 bytes at most), not used by anyone else. */
function outerName(): string {
  return `ctsnd${Deno.pid % 10000}x${outerCount++}`;
}

function run(program: string, args: string[], opts: { env?: Record<string, string> } = {}): string {
  const out = new Deno.Command(program, { args, stdin: "null", stdout: "piped", stderr: "piped", ...opts })
    .outputSync();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`${program} ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

function linkExists(name: string): boolean {
  return new Deno.Command("ip", { args: ["link", "show", "dev", name], stdout: "null", stderr: "null" })
    .outputSync().success;
}

/** What a runtime does with the outer end of a restored veth: its addresses, and up. */
function configureOuter(name: string): void {
  run("ip", ["addr", "add", "198.19.77.1/24", "dev", name]);
  run("ip", ["-6", "addr", "add", "fd00:198:19:77::1/64", "dev", name, "nodad"]);
  run("ip", ["link", "set", "dev", name, "up"]);
}

/** The outer end goes with the namespace, a moment after its last task. */
async function waitGone(name: string): Promise<void> {
  await waitFor(`${name} to go with its namespace`, () => !linkExists(name), 20000);
}

/** `--veth-pair` on even cycles, `--external veth[]` on odd ones: both name the outer end. */
function outerOption(outer: string, cycle: number): string[] {
  return cycle % 2 === 0 ? ["--veth-pair", `${INNER}=${outer}`] : ["--external", `veth[${INNER}]:${outer}`];
}

async function dumpTree(w: Workload, images: string, extra: string[] = [], env?: Record<string, string>) {
  const tree = [w.pid, ...descendants(w.pid)];
  await criuOk(
    ["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4", ...extra],
    env ? { env } : {},
  );
  for (const pid of tree) await reap(pid);
}

/** Dump (the namespace goes), restore naming the outer end, give it its addresses again. */
async function cycle(
  w: Workload,
  images: string,
  outer: string,
  n: number,
  extra: string[] = [],
): Promise<void> {
  await dumpTree(w, images, extra);
  await waitGone(outer);
  await criuOk([
    "restore",
    "-D",
    images,
    "-d",
    "-o",
    "restore.log",
    "-v4",
    ...outerOption(outer, n),
    ...extra,
  ]);
  assert.ok(exists(`/proc/${w.pid}`), "netdev is not back after restore");
  assert.ok(linkExists(outer), `the outer end ${outer} was not made in our namespace`);
  configureOuter(outer);
}

/** Runs the netdev workload with its outer end configured; leaves no device behind. */
async function withNetdev(
  args: string[],
  body: (w: Workload, images: string, outer: string) => Promise<void>,
): Promise<void> {
  const outer = outerName();
  try {
    await withWorkload({ name: "netdev", args: [outer, ...args] }, async (w, images) => {
      configureOuter(outer);
      await body(w, images, outer);
    });
  } finally {
    if (linkExists(outer)) await waitGone(outer);
  }
}

Deno.test("netdev passes plain", () => withNetdev([], async () => {}));

Deno.test("netdev passes after dump and restore", () =>
  withNetdev([], (w, images, outer) => cycle(w, images, outer, 0)));

Deno.test("netdev keeps running after dump --leave-running", () =>
  withNetdev([], async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    assert.ok(exists(`/proc/${w.pid}`));
    assert.ok(exists(`${images}/inventory.img`));
  }));

Deno.test("netdev passes after 10 dump/restore cycles", () =>
  withNetdev([], async (w, images, outer) => {
    for (let i = 0; i < 10; i++) await cycle(w, images, outer, i);
  }));

// A tap device held only by the workload's two tun files (multi-queue, virtio-net headers, the
// second queue detached): the files come back attached with the same flags, frames written into
// one arrive on the device, and the device goes with its last file (not made persistent).
Deno.test("netdev heldtap passes plain", () => withNetdev(["heldtap"], async () => {}));

Deno.test("netdev heldtap passes after dump and restore", () =>
  withNetdev(["heldtap"], (w, images, outer) => cycle(w, images, outer, 0)));

Deno.test("netdev heldtap keeps running after dump --leave-running", () =>
  withNetdev(["heldtap"], async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", "-o", "dump.log", "-v4"]);
    assert.ok(exists(`${images}/inventory.img`));
  }));

Deno.test("netdev heldtap passes after 10 dump/restore cycles", () =>
  withNetdev(["heldtap"], async (w, images, outer) => {
    for (let i = 0; i < 10; i++) await cycle(w, images, outer, i);
  }));

Deno.test("crit decodes a held tap: tunfile entries (device, detached queue, namespace) beside their REG entries, and the device's TunLinkEntry", () =>
  withNetdev(["heldtap"], async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R", "-o", "dump.log", "-v4"]);
    const decode = (file: string) => JSON.parse(run("crit", ["decode", "-i", `${images}/${file}`])).entries;
    const files = decode("files.img") as { type: string; id: number; tunf?: Record<string, unknown> }[];
    const tunfiles = files.filter((f) => f.type === "TUNF");
    assert.equal(tunfiles.length, 2, JSON.stringify(files));
    const netdevImage = [...Deno.readDirSync(images)].map((e) => e.name).find((n) =>
      /^netdev-\d+\.img$/.test(n)
    )!;
    const nsId = Number(/\d+/.exec(netdevImage)![0]);
    assert.deepEqual(tunfiles.map((f) => f.tunf), [
      { id: tunfiles[0]!.id, netdev: "held0", ns_id: nsId },
      { id: tunfiles[1]!.id, netdev: "held0", detached: true, ns_id: nsId },
    ]);
    for (const t of tunfiles) {
      assert.ok(files.some((f) => f.type === "REG" && f.id === t.id), `no REG entry for tun file ${t.id}`);
    }
    const held = (decode(netdevImage) as { name: string; type: string; tun?: Record<string, unknown> }[])
      .find((d) => d.name === "held0");
    assert.equal(held?.type, "TUN");
    // IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE, not persistent.
    assert.equal(held?.tun?.flags, 0x5102);
  }));

/** The held tap dumped by one tool and restored by the other (CRIU 4.x where CRIU_UPSTREAM names it). */
function crossHeldTap(dump: Dump, restore: (outer: string) => Restore): () => Promise<void> {
  return () =>
    withNetdev(["heldtap"], async (w, images, outer) => {
      const tree = [w.pid, ...descendants(w.pid)];
      await dump(w.pid, images);
      for (const pid of tree) await reap(pid);
      await waitGone(outer);
      await restore(outer)(images);
      assert.ok(exists(`/proc/${w.pid}`), "netdev is not back after restore");
      // A dump by CRIU saved its lock with the firewall: the restore must have dropped it.
      const firewall = run("nsenter", [
        `--net=/proc/${w.pid}/ns/net`,
        "sh",
        "-c",
        "iptables -w -S; nft list ruleset",
      ]);
      assert.match(firewall, /-P INPUT/, "iptables -S printed nothing: the check cannot see the firewall");
      assert.doesNotMatch(firewall, /CRIU|0xc114/i, `the lock stays after the restore:\n${firewall}`);
      configureOuter(outer);
    });
}

Deno.test({
  name: "CRIU 4.x restores our dump of a held tap (tun files attached again, frames arrive)",
  ignore: !UPSTREAM,
  fn: crossHeldTap(ourDump(), (outer) => upstreamRestore(["--veth-pair", `${INNER}=${outer}`])),
});

// CRIU's dump locks the namespace from inside (iptables by default, or an nft table) and saves
// the lock with its firewall: our restore drops it, as CRIU's does.
for (const lock of [[], ["--network-lock", "nftables"]]) {
  Deno.test({
    name: `we restore CRIU 4.x's dump of a held tap (tun files attached again, frames arrive)${
      lock.length ? ` with ${lock.join(" ")}` : ""
    }`,
    ignore: !UPSTREAM,
    fn: crossHeldTap(upstreamDump(lock), (outer) => ourRestore(["--veth-pair", `${INNER}=${outer}`])),
  });
}

// Nested network namespaces (a task in another one than the root's) are saved and restored, also
// across CRIU 4.x: tests/nested_ns_test.ts. The netns workload's `nested` variant is one too.
Deno.test("a task in a network namespace nested in the tree's comes back in a new one of its own", () =>
  withWorkload({ name: "netns", args: ["nested"] }, async (w, images) => {
    const tree = [w.pid, ...descendants(w.pid)];
    assert.equal(tree.length, 2);
    const link = (pid: number) => Deno.readLinkSync(`/proc/${pid}/ns/net`);
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"]);
    for (const pid of tree) await reap(pid);
    await criuOk(["restore", "-D", images, "-d", "-o", "restore.log", "-v4"]);
    assert.notEqual(link(tree[1]!), link(w.pid), "the child is back in the root's network namespace");
    assert.notEqual(link(w.pid), link(Deno.pid), "the root is in criu's network namespace");
  }));

Deno.test("a bridge and a veth pair inside come back (a port in the bridge); --external veth[IN]:OUT@BRIDGE puts the outer end in our bridge", async () => {
  const bridge = `ctsbr${Deno.pid % 10000}`;
  run("ip", ["link", "add", bridge, "type", "bridge"]);
  try {
    await withNetdev(["bridge", "pair"], async (w, images, outer) => {
      await dumpTree(w, images);
      await waitGone(outer);
      await criuOk([
        "restore",
        "-D",
        images,
        "-d",
        "-o",
        "restore.log",
        "-v4",
        "--external",
        `veth[${INNER}]:${outer}@${bridge}`,
      ]);
      const shown = run("ip", ["-d", "link", "show", "dev", outer]);
      assert.match(shown, new RegExp(`master ${bridge}`), shown);
      assert.match(shown, /<[^>]*\bUP\b[^>]*>/, `${outer} is not up: ${shown}`);
      const inside = run("nsenter", [
        `--net=/proc/${w.pid}/ns/net`,
        "ip",
        "-d",
        "link",
        "show",
        "dev",
        "br0",
      ]);
      assert.match(inside, /mtu 1300 .*\n(.*\n)*.*bridge /, inside);
      const in1 = run("nsenter", [`--net=/proc/${w.pid}/ns/net`, "ip", "-d", "link", "show", "dev", "in1"]);
      assert.match(in1, /in1@in0: .* master br0 /, in1);
      // The outer end is a bridge port now: the addresses go on the bridge.
      configureOuter(bridge);
    });
  } finally {
    run("ip", ["link", "del", bridge]);
  }
});

Deno.test("over RPC, veths and external name the outer end as --veth-pair and --external do", () =>
  withNetdev([], async (w, images, outer) => {
    const client = new CriuClient();
    for (
      const named of [
        { veths: [{ ifIn: INNER, ifOut: outer }] },
        { external: [`veth[${INNER}]:${outer}`] },
      ]
    ) {
      await dumpTree(w, images);
      await waitGone(outer);
      const restored = await client.restore({
        imagesDir: images,
        logFile: "restore.log",
        logLevel: 4,
        ...named,
      });
      assert.equal(restored.pid, w.pid);
      assert.ok(linkExists(outer), `${JSON.stringify(named)} did not name the outer end ${outer}`);
      configureOuter(outer);
    }
  }));

Deno.test("routes saved while the veth had no carrier (its outer end down) come back", async () => {
  const outer = outerName();
  try {
    await withWorkload({ name: "netdev", args: [outer] }, async (w, images) => {
      // The outer end stays down until after the restore: the saved routes say "linkdown".
      await cycle(w, images, outer, 0);
    });
  } finally {
    if (linkExists(outer)) await waitGone(outer);
  }
});

Deno.test("a macvlan comes back on the parent --external macvlan[NAME]:PARENT names, and not without one", () =>
  withNetdev(["macvlan"], async (w, images, outer) => {
    await dumpTree(w, images);
    await waitGone(outer);
    const id = netnsId(images);
    const mv0 = crit(`${images}/netdev-${id}.img`).entries.find((d) => d.name === "mv0");
    assert.equal(mv0?.type, "MACVLAN");
    assert.deepEqual(mv0.macvlan, { mode: 4, flags: 0 });
    const bare = ["restore", "-D", images, "-d", "-o", "restore.log", "-v4", ...outerOption(outer, 0)];
    const r = await criu(bare);
    assert.equal(r.code, 1, `a restore without the parent should fail: ${r.stderr}`);
    assert.match(r.stderr, /a macvlan parent for mv0 is required \(--external macvlan\[mv0\]:PARENT/);
    await reap(w.pid);
    await waitGone(outer);
    await criuOk([...bare, "--external", `macvlan[mv0]:${outer}`]);
    const shown = run("nsenter", [`--net=/proc/${w.pid}/ns/net`, "ip", "-d", "link", "show", "dev", "mv0"]);
    assert.match(shown, /macvlan mode bridge/, shown);
    configureOuter(outer);
  }));

Deno.test("a persistent tap device comes back at its index with its owner, group, header and MTU", () =>
  withNetdev(["tap"], async (w, images, outer) => {
    await cycle(w, images, outer, 0);
    const tap = crit(`${images}/netdev-${netnsId(images)}.img`).entries.find((d) => d.name === "extra0");
    assert.equal(tap?.type, "TUN");
    const t = tap.tun as Record<string, number>;
    assert.equal(t.owner, 65534);
    assert.equal(t.group, 65534);
    assert.equal(t.flags! & 0x4002, 0x4002, "IFF_TAP | IFF_VNET_HDR");
    await cycle(w, images, outer, 1);
  }));

/** crit's JSON of one image. */
function crit(path: string): { entries: Record<string, unknown>[] } {
  return JSON.parse(run("crit", ["decode", "-i", path]));
}

function netnsId(images: string): number {
  const name = [...Deno.readDirSync(images)].map((e) => e.name).find((n) => /^netns-\d+\.img$/.test(n));
  assert.ok(name, "no netns-ID.img written");
  return Number(/\d+/.exec(name)![0]);
}

type Sysctl = { type: string; iarg?: number };

Deno.test("crit and ip read the network namespace images", () =>
  withNetdev([], async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const id = netnsId(images);
    const devices = crit(`${images}/netdev-${id}.img`).entries;
    const eth0 = devices.find((d) => d.name === INNER);
    assert.ok(eth0, `no ${INNER} in netdev-${id}.img: ${JSON.stringify(devices.map((d) => d.name))}`);
    assert.equal(eth0.type, "VETH");
    assert.equal(eth0.mtu, 1400);
    assert.ok(typeof eth0.peer_ifindex === "number" && eth0.peer_ifindex > 0, "no peer index");
    assert.equal(atob(String(eth0.address)).length, 6, "no 6-byte hardware address");
    // CRIU's order of settings: accept_redirects is the second IPv4 one, hop_limit the 20th IPv6 one.
    assert.deepEqual((eth0.conf4 as Sysctl[])[1], { type: "CTL_32", iarg: 0 });
    assert.deepEqual((eth0.conf6 as Sysctl[])[19], { type: "CTL_32", iarg: 33 });
    assert.equal(devices.find((d) => d.name === "lo")?.type, "LOOPBACK");
    const netns = crit(`${images}/netns-${id}.img`).entries[0]!;
    assert.deepEqual((netns.all_conf4 as Sysctl[])[15], { type: "CTL_32", iarg: 1 }, "all.log_martians");
    assert.deepEqual((netns.def_conf6 as Sysctl[])[19], { type: "CTL_32", iarg: 44 }, "default.hop_limit");
    assert.deepEqual((netns.unix_conf as Sysctl[])[0], { type: "CTL_32", iarg: 77 }, "max_dgram_qlen");
    // The raw images are what CRIU's tools wrote: ip reads them back.
    const showdump = (what: string[], image: string) =>
      run("/bin/sh", ["-c", `ip ${what.join(" ")} showdump < ${images}/${image}-${id}.img`]);
    assert.match(showdump(["addr"], "ifaddr"), /198\.19\.77\.2\/24/);
    assert.match(showdump(["addr"], "ifaddr"), /fd00:198:19:77::2\/64/);
    assert.match(showdump(["route"], "route"), /198\.19\.78\.0\/24 via 198\.19\.77\.1/);
    assert.match(showdump(["-6", "route"], "route6"), /fd00:198:19:78::\/64 via fd00:198:19:77::1/);
    // ip cannot show a saved rule dump: restore it into a namespace of its own instead.
    const rules = run("unshare", [
      "-n",
      "/bin/sh",
      "-c",
      `ip rule restore < ${images}/rule-${id}.img && ip rule show`,
    ]);
    assert.match(rules, /from 198\.19\.77\.2 lookup 100/);
    assert.match(Deno.readTextFileSync(`${images}/nftables-${id}.img`), /tcp dport 7777 .*drop/);
  }));

Deno.test("a TCP connection into the namespace through the veth survives dump and restore", async () => {
  const outer = outerName();
  const w = await Workload.start("netdev", [outer, "tcp"]);
  const images = tempDir();
  let conn: Deno.TcpConn | undefined;
  try {
    configureOuter(outer);
    conn = await Deno.connect({ hostname: "198.19.77.2", port: 7000 });
    await echo(conn, "before the dump");
    await cycle(w, images, outer, 0, ["--tcp-established"]);
    await echo(conn, "after the restore");
    await cycle(w, images, outer, 1, ["--tcp-established"]);
    await echo(conn, "after the second restore");
    assert.equal(await w.finish(), "PASS", w.output());
  } catch (e) {
    await w.kill();
    throw e;
  } finally {
    conn?.close();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
    if (linkExists(outer)) await waitGone(outer);
  }
});

async function echo(conn: Deno.TcpConn, text: string): Promise<void> {
  const sent = new TextEncoder().encode(text);
  await conn.write(sent);
  const got = new Uint8Array(sent.length);
  let n = 0;
  while (n < got.length) {
    const r = await conn.read(got.subarray(n));
    assert.ok(r !== null, `the connection ended before "${text}" came back`);
    n += r;
  }
  assert.equal(new TextDecoder().decode(got), text);
}

const REFUSED_KINDS = [
  { arg: "ifb", device: "extra0", kind: "ifb", why: "neither CRIU nor criu-ts makes it" },
];
for (const { arg, device, kind, why } of REFUSED_KINDS) {
  Deno.test(`a dump refuses a ${kind} device (${why}), naming the device and its kind`, () =>
    withNetdev([arg], async (w, images) => {
      const r = await criu(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"]);
      assert.equal(r.code, 1, `the dump should fail: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`network device ${device} \\(${kind}\\) of process ${w.pid}`));
      assert.ok(!exists(`${images}/inventory.img`), "a failed dump leaves no checkpoint");
    }));
}

Deno.test("a dump whose ip tool fails says so and leaves the process running as it was", () =>
  withNetdev([], async (w, images) => {
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"], {
      env: { CR_IP_TOOL: "/bin/false" },
    });
    assert.equal(r.code, 1, `the dump should fail: ${r.stderr}`);
    assert.match(
      r.stderr,
      new RegExp(`Cannot list the network devices of process ${w.pid}: /bin/false .*failed`),
    );
    assert.doesNotMatch(r.stderr, /\bat .*\.ts:\d+/, "no stack trace");
    assert.ok(!exists(`${images}/inventory.img`), "a failed dump leaves no checkpoint");
    assert.ok(!exists(`${images}/netdev-2.img`), "a failed dump leaves no image");
  }));

/** Builds the test plugin that takes ifb links into a directory of its own. */
function ifbLinkPlugin(): string {
  const dir = tempDir("criu-ts-netdev-plugin-");
  run("gcc", [
    "-shared",
    "-fPIC",
    "-O1",
    "-Wall",
    "-Werror",
    "-I",
    `${ROOT}/src/plugins/include`,
    "-o",
    `${dir}/ifb_link.so`,
    `${ROOT}/tests/plugins/ifb_link_plugin.c`,
  ]);
  return dir;
}

Deno.test("a plugin takes an ifb device (DUMP_EXT_LINK); setup-namespaces makes it on restore", async () => {
  const plugins = ifbLinkPlugin();
  const trace = `${plugins}/trace`;
  const script = `${plugins}/make-ifb.sh`;
  try {
    await withNetdev(["ifb"], async (w, images, outer) => {
      await dumpTree(w, images, ["-L", plugins], { IFB_LINK_TRACE: trace });
      // Asked once, about extra0 alone (an Ethernet-type device, ARPHRD_ETHER = 1).
      assert.match(Deno.readTextFileSync(trace), /^link \d+ type 1 kind ifb\n$/);
      const devices = crit(`${images}/netdev-${netnsId(images)}.img`).entries;
      const extra = devices.find((d) => d.name === "extra0");
      assert.equal(extra?.type, "EXTLINK");
      // The runtime makes the device at its index (the veth takes its own index back after it),
      // with its address (an ifb device takes none once made).
      const mac = [...Uint8Array.from(atob(String(extra.address)), (c) => c.charCodeAt(0))]
        .map((b) => b.toString(16).padStart(2, "0")).join(":");
      Deno.writeTextFileSync(
        script,
        '#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = setup-namespaces ] || exit 0\n' +
          `exec nsenter --net=/proc/$CRTOOLS_INIT_PID/ns/net ip link add extra0 index ${extra.ifindex} address ${mac} type ifb\n`,
      );
      Deno.chmodSync(script, 0o755);
      await waitGone(outer);
      await criuOk([
        "restore",
        "-D",
        images,
        "-d",
        "-o",
        "restore.log",
        "-v4",
        "--action-script",
        script,
        ...outerOption(outer, 0),
      ]);
      configureOuter(outer);
    });
  } finally {
    Deno.removeSync(plugins, { recursive: true });
  }
});

Deno.test("a failed restore leaves no process and no device behind", () =>
  withNetdev([], async (w, images, outer) => {
    await dumpTree(w, images);
    await waitGone(outer);
    // The namespace is filled (the veth made) before post-setup-namespaces fails the restore.
    const script = `${images}/fail.sh`;
    Deno.writeTextFileSync(
      script,
      '#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = post-setup-namespaces ] && exit 3\nexit 0\n',
    );
    Deno.chmodSync(script, 0o755);
    const r = await criu([
      "restore",
      "-D",
      images,
      "-d",
      "-o",
      "restore.log",
      "-v4",
      "--action-script",
      script,
      ...outerOption(outer, 0),
    ]);
    assert.equal(r.code, 1, `the restore should fail: ${r.stderr}`);
    assert.match(Deno.readTextFileSync(`${images}/restore.log`), new RegExp(`Made veth ${INNER}`));
    await reap(w.pid);
    await waitGone(outer);
    // The same images restore afterwards: nothing was left in the way.
    await criuOk(["restore", "-D", images, "-d", "-o", "restore.log", "-v4", ...outerOption(outer, 1)]);
    configureOuter(outer);
  }));

Deno.test("a damaged ip dump is refused by name before any process or device is made", () =>
  withNetdev([], async (w, images, outer) => {
    await dumpTree(w, images);
    await waitGone(outer);
    const path = `${images}/ifaddr-${netnsId(images)}.img`;
    const good = Deno.readFileSync(path);
    const bad = good.slice();
    bad[0] = bad[0]! ^ 0xff;
    Deno.writeFileSync(path, bad);
    const restore = ["restore", "-D", images, "-d", "-o", "restore.log", "-v4", ...outerOption(outer, 0)];
    const r = await criu(restore);
    assert.equal(r.code, 1, `the restore should fail: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`${path} is not a dump of ip`));
    assert.ok(!exists(`/proc/${w.pid}`), "no process made");
    assert.ok(!linkExists(outer), "no device made");
    Deno.writeFileSync(path, good);
    await criuOk(restore);
    configureOuter(outer);
  }));

// Policy routing: routes in table 100 (where the workload's rule leads), IPv4 and IPv6, and a route
// added by hand to the local table, all in the view the workload compares; the local table's own
// entries must come back once.
Deno.test("netdev policy passes plain", () => withNetdev(["policy"], async () => {}));

Deno.test("netdev policy passes after dump and restore", () =>
  withNetdev(["policy"], (w, images, outer) => cycle(w, images, outer, 0)));

Deno.test("netdev policy keeps running after dump --leave-running", () =>
  withNetdev(["policy"], async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    assert.ok(exists(`/proc/${w.pid}`));
    assert.ok(exists(`${images}/inventory.img`));
  }));

Deno.test("netdev policy passes after 10 dump/restore cycles", () =>
  withNetdev(["policy"], async (w, images, outer) => {
    for (let i = 0; i < 10; i++) await cycle(w, images, outer, i);
  }));

Deno.test("the route images hold every table, without the local routes the kernel makes for addresses", () =>
  withNetdev(["policy"], async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const id = netnsId(images);
    const showdump = (family: string, image: string) =>
      run("/bin/sh", ["-c", `ip ${family} route showdump < ${images}/${image}-${id}.img`]);
    const v4 = showdump("-4", "route");
    const v6 = showdump("-6", "route6");
    assert.match(v4, /198\.19\.82\.0\/24 via 198\.19\.77\.1 dev \S+ table 100/);
    assert.match(v4, /198\.19\.78\.0\/24 via 198\.19\.77\.1/, "the main table's route");
    assert.match(v4, /local 198\.19\.83\.0\/24 dev \S+ table local scope host/, "the route added to local");
    assert.doesNotMatch(
      v4,
      /proto kernel.*table local|table local.*proto kernel/,
      "a kernel-made local route",
    );
    assert.doesNotMatch(v4, /fd00:/, "an IPv6 route in the IPv4 image");
    assert.match(v6, /fd00:198:19:82::\/64 via fd00:198:19:77::1 dev \S+ table 100/);
    assert.doesNotMatch(v6, /table local.*proto kernel/, "a kernel-made local route");
  }));

// --empty-ns net, as CRIU 4.2 takes it: the dump saves nothing of the namespace, the restore makes
// it empty (loopback down) and locks it as CRIU does (its CRIU chain in iptables and ip6tables)
// from setup-namespaces until after the network-unlock script.

/**
 * What the --empty-ns tests look at in the namespace: devices, iptables, nft tables (the run id left
 * out, and iptables' own filter tables, which CRIU's unlock leaves behind even where nothing was
 * locked: its iptables-restore calls make them).
 */
const NAMESPACE_LOOK = `ip -o link | cut -d' ' -f2,3; iptables -w -S; ip6tables -w -S; ` +
  `nft list tables | grep -v -e '^table ip filter$' -e '^table ip6 filter$' | sed 's/CRIU-.*/CRIU-RUNID/'`;

/**
 * An action script (a file: CRIU runs it as a program) recording the root's namespace at
 * post-setup-namespaces and network-unlock into `log`.
 */
function namespaceRecorder(log: string): string {
  const look = `${NAMESPACE_LOOK}`;
  const script = `${log}.sh`;
  Deno.writeTextFileSync(
    script,
    `#!/bin/sh\ncase "$CRTOOLS_SCRIPT_ACTION" in post-setup-namespaces|network-unlock) ` +
      `{ echo "== $CRTOOLS_SCRIPT_ACTION"; nsenter -t "$CRTOOLS_INIT_PID" -n sh -c "${look}"; } >> ${log};; esac\n`,
    { mode: 0o755 },
  );
  return script;
}

interface EmptyNsSeen {
  /** The namespace's images the dump wrote. */
  images: string[];
  /** What the scripts saw, then the namespace after the restore. */
  scripts: string;
  after: string;
  /** Whether the restored root is in a namespace other than ours. */
  ownNs: boolean;
}

/** Dumps `name` with `dump`, restores it with `restore` and the recorder, and says what it saw. */
async function emptyNsRoundTrip(name: string, dump: Dump, restore: ScriptedRestore): Promise<EmptyNsSeen> {
  const w = await Workload.start(name);
  try {
    const images = tempDir();
    await dump(w.pid, images);
    await reap(w.pid);
    const log = `${images}/seen.log`;
    await restore(images, log);
    const after = run("nsenter", [
      "-t",
      `${w.pid}`,
      "-n",
      "sh",
      "-c",
      NAMESPACE_LOOK,
    ]);
    const seen = {
      images: [...Deno.readDirSync(images)].map((e) => e.name).filter((n) =>
        /^(netns|netdev|ifaddr|route|route6|rule|iptables|ip6tables|nftables)-/.test(n)
      ).sort(),
      scripts: exists(log) ? Deno.readTextFileSync(log) : "",
      after,
      ownNs: Deno.readLinkSync(`/proc/${w.pid}/ns/net`) !== Deno.readLinkSync("/proc/self/ns/net"),
    };
    Deno.removeSync(images, { recursive: true });
    return seen;
  } finally {
    await w.kill();
    w.cleanup();
  }
}

type ScriptedRestore = (images: string, log: string) => Promise<void>;
const EMPTY = ["--empty-ns", "net"];
const oursEmpty = (extra: string[]): ScriptedRestore => (images, log) =>
  ourRestore([...extra, "--action-script", namespaceRecorder(log)])(images);
const upstreamEmpty = (extra: string[]): ScriptedRestore => (images, log) =>
  upstreamRestore([...extra, "--action-script", namespaceRecorder(log)])(images);

/** CRIU's lock in iptables -S (and ip6tables -S) form. */
const LOCK_LINES = [
  "-N CRIU",
  "-A INPUT -j CRIU",
  "-A OUTPUT -j CRIU",
  "-A CRIU -m mark --mark 0xc114 -j ACCEPT",
  "-A CRIU -j DROP",
];

Deno.test("--empty-ns net: no image of the namespace; it comes back empty, locked as CRIU locks it until network-unlock ran", async () => {
  const seen = await emptyNsRoundTrip("netns", ourDump(EMPTY), oursEmpty(EMPTY));
  assert.deepEqual(seen.images, [], "the dump saved the namespace");
  assert.ok(seen.ownNs, "the tree is not in a namespace of its own");
  const [post, unlock] = seen.scripts.split(/^== /m).filter((s) => s !== "");
  for (const [hook, text] of [["post-setup-namespaces", post], ["network-unlock", unlock]] as const) {
    assert.ok(text?.startsWith(hook), `no ${hook} record in ${seen.scripts}`);
    assert.match(text!, /^lo: <LOOPBACK>$/m, `${hook}: the loopback, down, alone:\n${text}`);
    assert.doesNotMatch(text!, /^(?!lo:)\S+: </m, `${hook}: a device besides the loopback`);
    for (const line of LOCK_LINES) assert.ok(text!.includes(line), `${hook}: no "${line}" in\n${text}`);
  }
  assert.match(seen.after, /^lo: <LOOPBACK>$/m);
  assert.doesNotMatch(seen.after, /CRIU/, `the lock stays after the restore:\n${seen.after}`);
});

Deno.test("a tree in criu's network namespace stays there with --empty-ns net (dump and restore)", async () => {
  const seen = await emptyNsRoundTrip("counter", ourDump(EMPTY), oursEmpty(EMPTY));
  assert.equal(seen.ownNs, false);
  assert.equal(seen.scripts, "", "no namespace scripts: no namespace was made");
});

Deno.test({
  name:
    "--empty-ns net: CRIU 4.x and criu-ts save and restore the same empty namespace, either's dump by either",
  ignore: !UPSTREAM,
  async fn() {
    const ours = await emptyNsRoundTrip("netns", ourDump(EMPTY), oursEmpty(EMPTY));
    const theirs = await emptyNsRoundTrip("netns", upstreamDump(EMPTY), upstreamEmpty(EMPTY));
    assert.deepEqual(ours, theirs);
    // Either restores the other's dump (no image of the namespace) as CRIU restores its own, with
    // the option and without (then the namespace is empty, but not locked).
    for (const extra of [EMPTY, []]) {
      const reference = await emptyNsRoundTrip("netns", upstreamDump(EMPTY), upstreamEmpty(extra));
      assert.deepEqual(await emptyNsRoundTrip("netns", upstreamDump(EMPTY), oursEmpty(extra)), reference);
      assert.deepEqual(await emptyNsRoundTrip("netns", ourDump(EMPTY), upstreamEmpty(extra)), reference);
      assert.deepEqual(await emptyNsRoundTrip("netns", ourDump(EMPTY), oursEmpty(extra)), reference);
      assert.equal(reference.scripts.includes("-N CRIU"), extra.length > 0, "locked only with the option");
    }
    for (
      const [dump, restore] of [[ourDump(EMPTY), oursEmpty(EMPTY)], [
        upstreamDump(EMPTY),
        upstreamEmpty(EMPTY),
      ]] as const
    ) {
      assert.equal((await emptyNsRoundTrip("counter", dump, restore)).ownNs, false);
    }
  },
});

// sit tunnels (IPv6 in IPv4). This kernel may have no sit at all (not built in, no module to
// load): the tests ask it, and check what matches its answer.

/** Whether the kernel makes sit devices: it is asked to make one in a namespace of its own. */
const SIT_ERROR = (() => {
  const out = new Deno.Command("unshare", {
    args: [
      "-n",
      "ip",
      "link",
      "add",
      "name",
      "sit1",
      "type",
      "sit",
      "remote",
      "198.18.0.2",
      "local",
      "198.18.0.1",
      "ttl",
      "64",
    ],
    stdout: "null",
    stderr: "piped",
  }).outputSync();
  return out.success ? undefined : new TextDecoder().decode(out.stderr).trim();
})();

Deno.test({
  name:
    "netdev sit passes plain, after dump and restore, after dump -R and after 10 cycles (a kernel with sit)",
  ignore: SIT_ERROR !== undefined,
  async fn() {
    await withNetdev(["sit"], async () => {});
    await withNetdev(["sit"], (w, images, outer) => cycle(w, images, outer, 0));
    await withNetdev(["sit"], async (w, images) => {
      await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
      const sit = crit(`${images}/netdev-${netnsId(images)}.img`).entries.find((d) => d.name === "sit1");
      assert.equal(sit?.type, "SIT");
      assert.deepEqual((sit?.sit as Record<string, unknown>).remote, ["198.18.0.2"]);
    });
    await withNetdev(["sit"], async (w, images, outer) => {
      for (let i = 0; i < 10; i++) await cycle(w, images, outer, i);
    });
  },
});

Deno.test({
  name:
    "on a kernel without sit the netdev sit workload cannot make its device: the kernel's refusal names the kind",
  ignore: SIT_ERROR === undefined,
  async fn() {
    assert.match(SIT_ERROR!, /Unknown device type/);
    const outer = outerName();
    const dir = tempDir();
    try {
      await assert.rejects(Workload.start("netdev", [outer, "sit"], { dir }), /Unknown device type/);
    } finally {
      if (linkExists(outer)) await waitGone(outer);
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

/** sit1 as `ip -d -j link show` prints it after `ip link add name sit1 type sit remote 198.18.0.2 local 198.18.0.1 ttl 64`. */
const SIT1_JSON = {
  ifindex: 5,
  ifname: "sit1",
  link_type: "sit",
  linkinfo: {
    info_kind: "sit",
    info_data: {
      proto: "ip6ip",
      remote: "198.18.0.2",
      local: "198.18.0.1",
      ttl: 64,
      pmtudisc: true,
      prefix: "2002::",
      prefixlen: 16,
    },
  },
};

Deno.test("a sit device's settings read from ip are CRIU's SitEntry, and make the device again with the same ip arguments", () => {
  const entry = sitEntry(1, SIT1_JSON, new Map());
  const d = create(net_device_entrySchema, {
    type: nd_type.SIT,
    ifindex: 5,
    mtu: 1480,
    name: "sit1",
    sit: entry,
  });
  // As CRIU: addresses are the u32 of their bytes in memory order (198.18.0.1 is 0x010012c6).
  assert.deepEqual(entry.local, [0x010012c6]);
  assert.deepEqual(entry.remote, [0x020012c6]);
  assert.equal(entry.ttl, 64);
  assert.equal(entry.proto, 41);
  assert.equal(entry.pmtudisc, true);
  assert.equal(entry.rdPrefixlen, 16);
  assert.deepEqual(entry.rdPrefix, [0x0220, 0, 0, 0]);
  assert.deepEqual(sitArgs(d, entry, [d]), [
    "mode",
    "ip6ip",
    "remote",
    "198.18.0.2",
    "local",
    "198.18.0.1",
    "ttl",
    "64",
    "tos",
    "inherit",
    "6rd-prefix",
    "2002:0:0:0:0:0:0:0/16",
  ]);
  // An unknown mode is refused by name at the dump.
  const odd = structuredClone(SIT1_JSON);
  odd.linkinfo.info_data.proto = "gre";
  assert.throws(() => sitEntry(1, odd, new Map()), /network device sit1 \(sit\).*mode gre/);
});

/** A sit device added to netdev-ID.img of a checkpoint of the netns workload, as CRIU would save it. */
function addSit(images: string): net_device_entry {
  const dir = new ImageDir(images);
  const id = netnsId(images);
  const devices = dir.read<net_device_entry>(KINDS.NETDEV, id);
  const sit = create(net_device_entrySchema, {
    type: nd_type.SIT,
    ifindex: 40,
    mtu: 1480,
    flags: 0x1 | 0x80, // up, noarp
    name: "sit1",
    sit: create(sit_entrySchema, {
      local: [0x010012c6],
      remote: [0x020012c6],
      ttl: 64,
      tos: 0,
      proto: 41,
      pmtudisc: true,
      flags: 0,
      link: 0,
    }),
  });
  dir.write(KINDS.NETDEV, id, [...devices, sit]);
  return sit;
}

Deno.test("a checkpoint with a sit device: it comes back with its endpoints on a kernel with sit, and is refused by name without", async () => {
  const w = await Workload.start("netns");
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-o", "dump.log", "-v4"]);
    await reap(w.pid);
    addSit(images);
    const r = await criu(["restore", "-D", images, "-d", "-o", "restore.log", "-v4"]);
    if (SIT_ERROR === undefined) {
      assert.equal(r.code, 0, r.stderr);
      const [sit] = JSON.parse(
        run("nsenter", ["-t", `${w.pid}`, "-n", "ip", "-d", "-j", "link", "show", "sit1"]),
      );
      assert.equal(sit.ifindex, 40);
      assert.equal(sit.linkinfo.info_data.remote, "198.18.0.2");
      assert.equal(sit.linkinfo.info_data.local, "198.18.0.1");
      assert.equal(sit.linkinfo.info_data.ttl, 64);
    } else {
      assert.equal(r.code, 1, "the restore should fail");
      assert.match(r.stderr, /network device sit1 \(SIT\): this kernel makes no sit devices/);
      assert.ok(
        !exists(`/proc/${w.pid}`) || Deno.readTextFileSync(`/proc/${w.pid}/stat`).includes(") Z"),
        "a process is left",
      );
    }
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("--empty-ns net with --network-lock nftables: the empty namespace is locked by CRIU's nft table until network-unlock ran", async () => {
  const extra = [...EMPTY, "--network-lock", "nftables"];
  const seen = await emptyNsRoundTrip("netns", ourDump(extra), oursEmpty(EMPTY));
  const [post, unlock] = seen.scripts.split(/^== /m).filter((s) => s !== "");
  for (const text of [post, unlock]) {
    assert.match(text ?? "", /^table inet CRIU-RUNID$/m, `no CRIU table in\n${seen.scripts}`);
    assert.doesNotMatch(text ?? "", /-N CRIU/, "an iptables lock besides");
  }
  assert.doesNotMatch(seen.after, /CRIU/, `the lock stays after the restore:\n${seen.after}`);
  if (UPSTREAM) {
    assert.deepEqual(await emptyNsRoundTrip("netns", upstreamDump(extra), upstreamEmpty(EMPTY)), seen);
  }
});
