/**
 * An example plugin in TypeScript: it takes perf event fds (which neither criu-ts nor CRIU dumps)
 * and brings them back with the same flags. Copy it into the plugin directory (-L DIR) as it is,
 * or use it as the shape of your own: a default export implementing `CriuPlugin`.
 *
 * The kernel shows nothing of a perf event's attr (its type, config, read format), so this plugin
 * knows one event, the one it re-creates: a disabled software "dummy" counter read with
 * PERF_FORMAT_ID, as the tests hold. A real plugin would learn the attr from the program.
 *
 * What it keeps: one small JSON file per perf event in the images directory, named by the file's
 * id. The restore opens a new event in criu's own process (perf_event_open through libc's
 * syscall) and hands its fd over; criu gives the restored task a copy at the dumped number.
 */
import type { CriuPlugin, PluginContext, PluginFd, RestoredFile } from "../api.ts";

const ENOTSUP = 95;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const F_SETFL = 4;
const SYS_PERF_EVENT_OPEN = 298n;
const PERF_FLAG_FD_CLOEXEC = 8n;
/** struct perf_event_attr as of PERF_ATTR_SIZE_VER7, and the fields set here. */
const ATTR_SIZE = 128;
const PERF_TYPE_SOFTWARE = 1;
const PERF_COUNT_SW_DUMMY = 9n;
const PERF_FORMAT_ID = 4n;
const ATTR_DISABLED = 1n;

let images = "";
let log: PluginContext["log"] | undefined;

interface Saved {
  flags: number;
}

function savedPath(id: number): string {
  return `${images}/perf-event-ts-${id}.json`;
}

/** The flags of a perf event fd, from its fdinfo; undefined for any other file. */
function describe(file: PluginFd): Saved | undefined {
  if (Deno.readLinkSync(`/proc/self/fd/${file.fd}`) !== "anon_inode:[perf_event]") return undefined;
  const info = Deno.readTextFileSync(`/proc/self/fdinfo/${file.fd}`);
  const flags = /^flags:\s*([0-7]+)$/m.exec(info)?.[1];
  return { flags: parseInt(flags ?? "0", 8) };
}

/** The attr this plugin re-creates: a disabled software dummy counter read with its id. */
function testAttr(): Uint8Array<ArrayBuffer> {
  const attr = new Uint8Array(ATTR_SIZE);
  const v = new DataView(attr.buffer);
  v.setUint32(0, PERF_TYPE_SOFTWARE, true); // type
  v.setUint32(4, ATTR_SIZE, true); // size
  v.setBigUint64(8, PERF_COUNT_SW_DUMMY, true); // config
  v.setBigUint64(32, PERF_FORMAT_ID, true); // read_format
  v.setBigUint64(40, ATTR_DISABLED, true); // the flag bits: disabled is bit 0
  return attr;
}

/** A new perf event of criu's own (this process, any CPU) with the saved flags; -1 on failure. */
function newPerfEvent(saved: Saved): number {
  const libc = Deno.dlopen("libc.so.6", {
    syscall: { parameters: ["i64", "buffer", "i64", "i64", "i64", "i64"], result: "i64" },
    fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
  });
  try {
    const cloexec = saved.flags & O_CLOEXEC ? PERF_FLAG_FD_CLOEXEC : 0n;
    const fd = Number(libc.symbols.syscall(SYS_PERF_EVENT_OPEN, testAttr(), 0n, -1n, -1n, cloexec));
    if (fd < 0) return -1;
    if (libc.symbols.fcntl(fd, F_SETFL, BigInt(saved.flags & O_NONBLOCK)) < 0) {
      libc.symbols.close(fd);
      return -1;
    }
    return fd;
  } finally {
    libc.close();
  }
}

const plugin: CriuPlugin = {
  name: "perf-event-ts",
  init(_stage, ctx) {
    images = ctx.images.path;
    log = ctx.log;
    return 0;
  },
  dumpExtFile(file, id) {
    const saved = describe(file);
    if (!saved) return -ENOTSUP;
    Deno.writeTextFileSync(savedPath(id), JSON.stringify(saved));
    log?.info(`perf-event-ts: saved perf event ${id} (flags ${saved.flags.toString(8)})`);
    return 0;
  },
  restoreExtFile(id): RestoredFile | number {
    let saved: Saved;
    try {
      saved = JSON.parse(Deno.readTextFileSync(savedPath(id)));
    } catch {
      return -ENOTSUP; // not one of ours
    }
    const fd = newPerfEvent(saved);
    return fd < 0 ? -1 : { fd };
  },
};

export default plugin;
