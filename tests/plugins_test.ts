/**
 * Plugins: C plugins of both APIs, built here against the header criu-ts ships
 * (src/plugins/include), and TypeScript plugins, taking a kind of fd neither criu-ts nor CRIU takes
 * (a perf event, held by the perf_event_held workload). Each scenario runs through the launcher as a
 * user would, with -L pointing at a directory of plugins; the plugins trace every call into a file.
 */
import assert from "node:assert/strict";
import { criu, criuOk, exists, reap, ROOT, tempDir, waitFor, Workload } from "./lib/harness.ts";
import { python3 } from "./lib/tools.ts";
import { spawn } from "../ffi/spawn.ts";
import { closeFd, OPEN, openFd } from "../ffi/fd.ts";
import { dumpRestore, registerMatrix } from "./lib/matrix.ts";
import {
  acceptSocket,
  bindSocket,
  closeSocket,
  listenSocket,
  makeSocket,
  MSG,
  receiveBytes,
  SOCK,
} from "../ffi/sockcall.ts";
import { AF } from "../ffi/sockaddr.ts";
import { importSource } from "../src/plugins/plugins.ts";
import type { CriuPlugin, PluginContext } from "../src/plugins/api.ts";

const INCLUDE = `${ROOT}/src/plugins/include`;
const SOURCES = `${ROOT}/tests/plugins`;

/** Builds tests/plugins/NAME.c into DIR/FILE (the file name decides the load order). */
function buildPlugin(dir: string, name: string, file = `${name}.so`): void {
  const out = new Deno.Command("gcc", {
    args: [
      "-shared",
      "-fPIC",
      "-O1",
      "-Wall",
      "-Werror",
      "-I",
      INCLUDE,
      "-o",
      `${dir}/${file}`,
      `${SOURCES}/${name}.c`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (out.code !== 0) throw new Error(`Building ${name}.c failed:\n${new TextDecoder().decode(out.stderr)}`);
}

/** Puts a TypeScript plugin in DIR: a module that re-exports one of ours by its absolute URL. */
function addScriptPlugin(dir: string, module: string, file: string): void {
  Deno.writeTextFileSync(
    `${dir}/${file}`,
    `export { default } from "${new URL(`file://${module}`).href}";\n`,
  );
}

function pluginDir(setup: (dir: string) => void): string {
  const dir = tempDir("criu-ts-plugins-");
  setup(dir);
  return dir;
}

const C_NEW = pluginDir((d) => buildPlugin(d, "perf_plugin"));
const C_OLD = pluginDir((d) => buildPlugin(d, "perf_plugin_old"));
const C_CHAIN = pluginDir((d) => {
  buildPlugin(d, "notsup_plugin", "00-notsup.so");
  buildPlugin(d, "perf_plugin", "10-perf.so");
});
const TS_PLUGIN = pluginDir((d) => addScriptPlugin(d, `${SOURCES}/failing_plugin.ts`, "perf.ts"));
const TS_CHAIN = pluginDir((d) => {
  buildPlugin(d, "notsup_plugin", "00-notsup.so");
  addScriptPlugin(d, `${SOURCES}/failing_plugin.ts`, "10-perf.ts");
});
const TS_EXAMPLE = pluginDir((d) =>
  addScriptPlugin(d, `${ROOT}/src/plugins/examples/perf_event.ts`, "perf_event.ts")
);

globalThis.addEventListener("unload", () => {
  for (const d of [C_NEW, C_OLD, C_CHAIN, TS_PLUGIN, TS_CHAIN, TS_EXAMPLE]) {
    Deno.removeSync(d, { recursive: true });
  }
});

// The usual matrix, with each plugin taking the perf event.
registerMatrix([
  { name: "perf_event_held", criuArgs: ["-L", C_NEW] },
  { name: "perf_event_held", criuArgs: ["-L", C_OLD] },
  { name: "perf_event_held", criuArgs: ["-L", TS_EXAMPLE] },
]);

interface Run {
  trace: string[];
  dump: { code: number; stderr: string; log: string };
  restore?: { code: number; stderr: string; log: string };
  /** Whether the workload ended in PASS (after a restore, or running on after a failed dump). */
  passed: boolean;
}

/**
 * Starts perf_event_held, dumps it with the plugins of `dir` (and `mode`), restores it when the
 * dump worked; returns what happened, every process gone afterwards.
 */
async function scenario(dir: string, mode = "", opts: { restoreMode?: string } = {}): Promise<Run> {
  const w = await Workload.start("perf_event_held");
  const images = tempDir();
  const tracePath = `${w.dir}/plugin.trace`;
  const env = (m: string) => ({ CRIU_TS_PLUGIN_TRACE: tracePath, CRIU_TS_PLUGIN_MODE: m });
  try {
    const d = await criu(["dump", "-t", `${w.pid}`, "-D", images, "-L", dir, "-o", "dump.log", "-v4"], {
      env: env(mode),
    });
    const run: Run = {
      trace: [],
      dump: { ...d, log: readIf(`${images}/dump.log`) },
      passed: false,
    };
    if (d.code === 0) {
      await reap(w.pid);
      const r = await criu(["restore", "-D", images, "-d", "-L", dir, "-o", "restore.log", "-v4"], {
        env: env(opts.restoreMode ?? mode),
      });
      run.restore = { ...r, log: readIf(`${images}/restore.log`) };
      if (r.code !== 0) {
        assert.ok(!exists(`/proc/${w.pid}`), "a failed restore left the process behind");
        run.trace = readIf(tracePath).split("\n").filter((l) => l);
        return run;
      }
    }
    run.passed = (await w.finish()) === "PASS";
    run.trace = readIf(tracePath).split("\n").filter((l) => l);
    return run;
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
}

function readIf(path: string): string {
  return exists(path) ? Deno.readTextFileSync(path) : "";
}

Deno.test("without a plugin a perf event is refused by name and the process runs on", async () => {
  const w = await Workload.start("perf_event_held");
  const images = tempDir();
  try {
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /Cannot dump fd 5 \(anon_inode:\[perf_event\]\) of process \d+: this kind of file is not supported yet/,
    );
    assert.equal(await w.finish(), "PASS");
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("a C plugin of the new API takes the perf event, logs through pr_info, and exit sees success", async () => {
  const r = await scenario(C_NEW);
  assert.equal(r.dump.code, 0, r.dump.stderr);
  assert.equal(r.restore?.code, 0, r.restore?.stderr);
  assert.ok(r.passed, "the workload did not pass after restore");
  assert.match(r.dump.log, /perf plugin: init at stage 0, images fd \d+/);
  assert.match(r.dump.log, /perf plugin: saving perf event \d+ with flags (200)?4002\n/);
  assert.match(r.dump.log, /A plugin took fd 5 \(anon_inode:\[perf_event\]\)/);
  const id = /^dump (\d+)$/m.exec(r.trace.join("\n"))?.[1];
  assert.deepEqual(r.trace, ["init 0", `dump ${id}`, "exit 0 0", "init 2", `restore ${id}`, "exit 2 0"]);
});

Deno.test("a C plugin of the old API is loaded by its function names, with CRIU's warning", async () => {
  const r = await scenario(C_OLD);
  assert.equal(r.dump.code, 0, r.dump.stderr);
  assert.equal(r.restore?.code, 0, r.restore?.stderr);
  assert.ok(r.passed);
  assert.match(r.dump.log, /Generating dynamic descriptor for plugin/);
  assert.match(r.dump.log, /old perf plugin: saving perf event/);
  const id = /^dump (\d+)$/m.exec(r.trace.join("\n"))?.[1];
  assert.deepEqual(r.trace, ["init", `dump ${id}`, "fini", "init", `restore ${id}`, "fini"]);
});

for (const [what, dir] of [["C", C_CHAIN], ["TypeScript", TS_CHAIN]] as const) {
  Deno.test(`plugins are asked in load order: one answering -ENOTSUP passes the ${what} perf event on`, async () => {
    const r = await scenario(dir);
    assert.equal(r.restore?.code, 0, r.restore?.stderr);
    assert.ok(r.passed);
    const lines = r.trace.filter((l) => /dump|restore/.test(l));
    const id = /^dump (\d+)$/m.exec(lines.join("\n"))?.[1];
    assert.deepEqual(lines, [`notsup dump ${id}`, `dump ${id}`, `notsup restore ${id}`, `restore ${id}`]);
  });
}

for (const [what, dir] of [["C", C_NEW], ["TypeScript", TS_PLUGIN]] as const) {
  Deno.test(`a ${what} plugin whose init fails stops the dump by name; the process runs on`, async () => {
    const r = await scenario(dir, "fail-init");
    assert.equal(r.dump.code, 1);
    assert.match(r.dump.stderr, /Failed in init\(0\) of "(perf|perf-event-ts-test)"/);
    assert.ok(r.passed, "the process did not run on");
    assert.deepEqual(r.trace, ["init 0"], "a plugin whose init failed gets no exit, as in CRIU");
  });

  Deno.test(`a ${what} plugin failing its dump hook fails the dump; the process runs on; exit sees it`, async () => {
    const r = await scenario(dir, "fail-dump");
    assert.equal(r.dump.code, 1);
    assert.match(r.dump.stderr, /A plugin failed to dump fd 5 .*: -5/);
    assert.ok(r.passed, "the process did not run on");
    assert.match(r.trace.at(-1)!, /^exit 0 -?[1-9]\d*$/);
  });

  Deno.test(`a ${what} plugin failing its restore hook leaves nothing behind; exit sees it`, async () => {
    const r = await scenario(dir, "", { restoreMode: "fail-restore" });
    assert.equal(r.dump.code, 0, r.dump.stderr);
    assert.equal(r.restore?.code, 1);
    assert.match(r.restore!.stderr, /A plugin failed to restore external file \d+: -5/);
    assert.match(r.trace.at(-1)!, /^exit 2 -?[1-9]\d*$/);
  });
}

Deno.test("a missing plugin directory is refused by name before anything is touched", async () => {
  const w = await Workload.start("perf_event_held");
  const images = tempDir();
  try {
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images, "-L", `${images}/no-such-dir`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Unable to open the plugin directory .*no-such-dir: No such file or directory/);
    assert.equal(await w.finish(), "PASS");
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("a plugin built for a newer API is refused by name", async () => {
  const dir = tempDir("criu-ts-plugins-");
  try {
    Deno.writeTextFileSync(
      `${dir}/newer.c`,
      `#include "criu-plugin.h"\ncr_plugin_desc_t CR_PLUGIN_DESC = { .name = "newer", .version = CRIU_PLUGIN_GEN_VERSION(9, 0, 0), .max_hooks = 1 };\n`,
    );
    const cc = new Deno.Command("gcc", {
      args: ["-shared", "-fPIC", "-I", INCLUDE, "-o", `${dir}/newer.so`, `${dir}/newer.c`],
    })
      .outputSync();
    assert.equal(cc.code, 0);
    Deno.removeSync(`${dir}/newer.c`);
    const r = await criu(["restore", "-D", dir, "-L", dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Corrupted plugin .*newer\.so: API version 0x90000/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a TypeScript plugin that does not parse is refused by name with its error, no stack trace", async () => {
  const w = await Workload.start("perf_event_held");
  const dir = tempDir("criu-ts-plugins-");
  const images = tempDir();
  try {
    Deno.writeTextFileSync(`${dir}/broken.ts`, `const x: number = ;\nexport default { name: "broken" };\n`);
    const r = await criu(["dump", "-t", `${w.pid}`, "-D", images, "-L", dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Unable to load plugin .*broken\.ts: SyntaxError/);
    assert.doesNotMatch(r.stderr, /Internal error|at loadScript/);
    assert.equal(await w.finish(), "PASS");
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(dir, { recursive: true });
    Deno.removeSync(images, { recursive: true });
  }
});

// The compiled binary's way of loading a TypeScript plugin (its own source, made JavaScript by the
// runtime, imported as a data: URL): the binary itself is tested in compile_test.ts where a denort
// exists; the transpiling and importing are the same here.
Deno.test("a TypeScript plugin's source becomes a module the compiled binary can import", async () => {
  const example = `${ROOT}/src/plugins/examples/perf_event.ts`;
  const plugin = (await importSource(example, Deno.readTextFileSync(example))).default as CriuPlugin;
  assert.equal(plugin.name, "perf-event-ts");
  assert.equal(typeof plugin.dumpExtFile, "function");
  assert.equal(typeof plugin.restoreExtFile, "function");
  // What only TypeScript has: annotations, a type-only import, an enum, a parameter property.
  const source = `import type { CriuPlugin } from "../api.ts";
enum Answer { Mine = 0, NotMine = -95 }
class Counter { constructor(private readonly start: number) {} next(): number { return this.start + 1; } }
const plugin: CriuPlugin = { name: "typed", init: (): number => new Counter(-1).next(), dumpExtLink: () => Answer.NotMine };
export default plugin;
`;
  const typed = (await importSource("/plugins/typed.ts", source)).default as CriuPlugin;
  assert.equal(typed.name, "typed");
  assert.equal(typed.init?.(0, undefined as unknown as PluginContext), 0);
  assert.equal(typed.dumpExtLink?.(1, 0, "x"), -95);
  const js = (await importSource("/plugins/plain.js", `export default { name: "plain" };`)).default;
  assert.equal((js as CriuPlugin).name, "plain");
  await assert.rejects(importSource("/plugins/broken.ts", "const x: number = ;"), SyntaxError);
  await assert.rejects(
    importSource(
      "/plugins/two.ts",
      `import { helper } from "./helper.ts";\nexport default { name: helper };\n`,
    ),
    /the compiled criu imports a plugin as one file/,
  );
});

Deno.test("CRIU_LIBS_DIR names the plugin directory when -L is not given", async () => {
  const w = await Workload.start("perf_event_held");
  const images = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"], { env: { CRIU_LIBS_DIR: C_NEW } });
    assert.equal(await w.finish(), "PASS");
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

for (
  const [what, dir] of [["C (new API)", C_NEW], ["C (old API)", C_OLD], ["TypeScript", TS_PLUGIN]] as const
) {
  Deno.test(`a ${what} plugin takes a unix stream socket connected outside the tree and connects it again`, async () => {
    const place = tempDir();
    const path = `${place}/outside.sock`;
    const listener = makeSocket(AF.UNIX, SOCK.STREAM | SOCK.NONBLOCK);
    const trace = `${place}/trace`;
    try {
      bindSocket(listener, { family: AF.UNIX, name: new TextEncoder().encode(path) });
      listenSocket(listener, 4);
      const c = { name: "unix_sk", args: ["ext-stream", `extstream=${path}`], criuArgs: ["-L", dir] };
      const w = await Workload.start(c.name, c.args);
      const images = tempDir();
      try {
        Deno.env.set("CRIU_TS_PLUGIN_TRACE", trace);
        await dumpRestore(w, images, c);
        assert.equal(await w.finish(), "PASS", w.output());
      } finally {
        Deno.env.delete("CRIU_TS_PLUGIN_TRACE");
        await w.kill();
        w.cleanup();
        Deno.removeSync(images, { recursive: true });
      }
      // The connection made before the dump died with the dumped process; the plugin's new one
      // carries what the restored workload sent.
      const got: string[] = [];
      for (;;) {
        let conn: number;
        try {
          conn = acceptSocket(listener);
        } catch {
          break; // none left waiting (the listener does not block)
        }
        try {
          got.push(new TextDecoder().decode(receiveBytes(conn, 16, MSG.DONTWAIT)));
        } catch {
          got.push("");
        } finally {
          closeSocket(conn);
        }
      }
      assert.ok(got.includes("s"), `the listener outside got ${JSON.stringify(got)}`);
      const lines = readIf(trace).split("\n").filter((l) => / unix /.test(l));
      const id = /^dump unix (\d+)$/m.exec(lines.join("\n"))?.[1];
      assert.deepEqual(lines, [`dump unix ${id}`, `restore unix ${id}`]);
    } finally {
      closeSocket(listener);
      Deno.removeSync(place, { recursive: true });
    }
  });
}

/**
 * HANDLE_DEVICE_VMA and UPDATE_VMA_MAP. No character device of this machine takes a plain mmap
 * besides /dev/zero (a built-in backing; /dev/mem is not built in), so the device is a read-only
 * loop block device, which CRIU sends down the same path: a mapping of a file that is neither
 * regular nor /dev/zero goes to the plugins. A TypeScript plugin answers for it; at restore it is
 * asked UPDATE_VMA_MAP with the area's path, address and offset, and leaves the mapping as dumped.
 */
const DEVICE_PLUGIN = `let trace = "";
function note(line) { Deno.writeTextFileSync(trace, line + "\\n", { append: true }); }
export default {
  name: "device-vma-test",
  init(_stage, ctx) { trace = ctx.images.path + "/../device-trace"; return 0; },
  handleDeviceVma(device, stat) {
    note("handle " + (stat.isBlockDevice ? "block" : stat.isCharDevice ? "char" : "other") + " " + (device.fd >= 0));
    return 0;
  },
  updateVmaMap(path, addr, pgoff) {
    note("update " + path + " " + addr.toString(16) + " " + pgoff);
    return 0;
  },
};
`;

/** A Python process mapping `device` read-only and shared (libc mmap: Python's mmap keeps an fd), writing what it reads there into `out`. */
function startDeviceReader(device: string, out: string): number {
  const nul = openFd("/dev/null", OPEN.RDWR | OPEN.CLOEXEC);
  try {
    return spawn(python3(), [
      "python3",
      "-c",
      `import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
fd = os.open(${JSON.stringify(device)}, os.O_RDONLY)
at = libc.mmap(None, 8192, 1, 1, fd, 4096)  # PROT_READ, MAP_SHARED, the device's second page
os.close(fd)  # only the mapping holds the device now
i = 0
while True:
    i += 1
    with open(${JSON.stringify(out)} + ".tmp", "w") as f:
        f.write("%d %s" % (i, ctypes.string_at(at, 16).decode()))
    os.rename(${JSON.stringify(out)} + ".tmp", ${JSON.stringify(out)})
    time.sleep(0.02)`,
    ], { fds: { 0: nul, 1: nul, 2: nul }, setsid: true });
  } finally {
    closeFd(nul);
  }
}

interface DeviceReader {
  pid: number;
  device: string;
  dir: string;
  images: string;
  plugins: string;
  /** How many times the reader has read the device so far. */
  count(): number;
  /** What it read there last. */
  page(): string;
  /** The plugin's trace, one call a line. */
  trace(): string[];
}

/**
 * A read-only loop device over a file whose second page says "device page one!", a Python process
 * mapping it, and a plugin directory; all of it is gone afterwards.
 */
async function withDeviceReader(body: (r: DeviceReader) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const backing = `${dir}/disk`;
  const data = new Uint8Array(16384);
  data.set(new TextEncoder().encode("device page one!"), 4096);
  Deno.writeFileSync(backing, data);
  const losetup = (...args: string[]) => {
    const r = new Deno.Command("losetup", { args, stdout: "piped", stderr: "piped" }).outputSync();
    assert.ok(r.success, new TextDecoder().decode(r.stderr));
    return new TextDecoder().decode(r.stdout).trim();
  };
  const device = losetup("--find", "--show", "--read-only", backing);
  const out = `${dir}/read`;
  const read = () => (exists(out) ? Deno.readTextFileSync(out) : "0 ").split(" ");
  const r: DeviceReader = {
    pid: startDeviceReader(device, out),
    device,
    dir,
    images: `${dir}/images`,
    plugins: `${dir}/plugins`,
    count: () => Number(read()[0]),
    page: () => read().slice(1).join(" "),
    trace: () => Deno.readTextFileSync(`${dir}/device-trace`).trim().split("\n"),
  };
  Deno.mkdirSync(r.plugins);
  Deno.mkdirSync(r.images);
  try {
    await waitFor("the reader to start", () => r.count() > 0);
    assert.equal(r.page(), "device page one!");
    await body(r);
  } finally {
    try {
      Deno.kill(r.pid, "SIGKILL");
    } catch {
      // gone already
    }
    await reap(r.pid);
    losetup("-d", device);
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("a device mapping no plugin handles is refused by name, and the process runs on", () =>
  withDeviceReader(async (r) => {
    const refused = await criu(["dump", "-t", `${r.pid}`, "-D", r.images, "-o", "refused.log"]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`mapping of ${r.device}.*no plugin handles this device`));
    assert.ok(!exists(`${r.images}/inventory.img`));
    const before = r.count();
    await waitFor("the reader to go on", () => r.count() > before + 2);
  }));

for (const plugin of ["TypeScript", "C"] as const) {
  for (const mode of ["dump and restore", "dump --leave-running", "10 dump/restore cycles"] as const) {
    Deno.test(`a ${plugin} plugin takes a device mapping (HANDLE_DEVICE_VMA, UPDATE_VMA_MAP) across ${mode}`, () =>
      withDeviceReader(async (r) => {
        if (plugin === "C") buildPlugin(r.plugins, "device_vma_plugin");
        else Deno.writeTextFileSync(`${r.plugins}/device_vma.ts`, DEVICE_PLUGIN);
        const env = { CRIU_TS_PLUGIN_TRACE: `${r.dir}/device-trace` };
        const common = ["-D", r.images, "-L", r.plugins, "-v4"];
        if (mode === "dump --leave-running") {
          await criuOk(["dump", "-t", `${r.pid}`, ...common, "-o", "dump.log", "-R"], { env });
          const atDump = r.count();
          await waitFor("the reader to go on", () => r.count() > atDump + 2);
          assert.deepEqual(r.trace().map((l) => l.split(" ")[0]), ["handle"]);
          return;
        }
        const cycles = mode === "dump and restore" ? 1 : 10;
        for (let i = 0; i < cycles; i++) {
          await criuOk(["dump", "-t", `${r.pid}`, ...common, "-o", "dump.log"], { env });
          await reap(r.pid);
          const atDump = r.count();
          await criuOk(["restore", ...common, "-d", "-o", "restore.log"], { env });
          await waitFor("the restored reader to go on", () => r.count() > atDump + 2);
          assert.equal(r.page(), "device page one!");
        }
        const trace = r.trace();
        assert.equal(trace.length, 2 * cycles, trace.join("\n"));
        assert.match(trace[0]!, /^handle block /);
        // The area's offset is in bytes, as CRIU's vma_entry.pgoff: the device's second page.
        assert.match(trace[1]!, new RegExp(`^update ${r.device} [0-9a-f]+ 4096$`));
      }));
  }
}
