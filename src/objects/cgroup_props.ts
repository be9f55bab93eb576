/**
 * Which cgroup properties a dump saves, per controller, as CRIU decides it: a built-in list (the
 * limits and weights a restore can set again), changed by `--cgroup-props` (text) and
 * `--cgroup-props-file` (a file) in CRIU's small YAML-like format:
 *
 *     "cpu":
 *      - "strategy": "replace"
 *      - "properties": ["cpu.shares", "cpu.cfs_period_us"]
 *
 * "replace" puts the controller's list in place of the one before, "merge" adds to it. Besides these,
 * every cgroup v1 directory saves the global v1 list and every v2 directory the global v2 list.
 * `--cgroup-dump-controller NAME` (repeatable) limits the dump to the controllers named.
 */
import { DumpError } from "../errors.ts";

/** What every cgroup v1 directory saves, whatever its controllers. */
export const GLOBAL_V1_PROPS: readonly string[] = [
  "cgroup.clone_children",
  "notify_on_release",
  "cgroup.procs",
  "tasks",
];

/** What every cgroup v2 directory saves (CRIU's list). */
export const GLOBAL_V2_PROPS: readonly string[] = [
  "cgroup.subtree_control",
  "cgroup.max.descendants",
  "cgroup.max.depth",
  "cgroup.freeze",
  "cgroup.type",
];

/** CRIU's built-in lists (memory.limit_in_bytes before memory.memsw.limit_in_bytes: the order matters). */
const BUILTIN: Record<string, readonly string[]> = {
  cpu: ["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.rt_period_us", "cpu.rt_runtime_us"],
  memory: [
    "memory.limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.swappiness",
    "memory.soft_limit_in_bytes",
    "memory.move_charge_at_immigrate",
    "memory.oom_control",
    "memory.use_hierarchy",
    "memory.kmem.limit_in_bytes",
    "memory.kmem.tcp.limit_in_bytes",
  ],
  cpuset: [
    "cpuset.cpus",
    "cpuset.mems",
    "cpuset.memory_migrate",
    "cpuset.cpu_exclusive",
    "cpuset.mem_exclusive",
    "cpuset.mem_hardwall",
    "cpuset.memory_spread_page",
    "cpuset.memory_spread_slab",
    "cpuset.sched_load_balance",
    "cpuset.sched_relax_domain_level",
  ],
  blkio: ["blkio.weight"],
  freezer: [],
  perf_event: [],
  net_cls: ["net_cls.classid"],
  net_prio: ["net_prio.ifpriomap"],
  pids: ["pids.max"],
  devices: ["devices.list"],
};

/** The properties to save for each controller name. */
export class CgroupProps {
  readonly #lists = new Map<string, string[]>(Object.entries(BUILTIN).map(([k, v]) => [k, [...v]]));

  constructor(private readonly dumpControllers: readonly string[] = []) {}

  /** Built-ins, then the text of --cgroup-props, then the file of --cgroup-props-file. */
  static fromOptions(
    o: { cgroupProps?: string; cgroupPropsFile?: string; cgroupDumpControllers: readonly string[] },
  ) {
    const props = new CgroupProps(o.cgroupDumpControllers);
    if (o.cgroupProps) props.apply(o.cgroupProps, "--cgroup-props");
    if (o.cgroupPropsFile) {
      let text: string;
      try {
        text = Deno.readTextFileSync(o.cgroupPropsFile);
      } catch (e) {
        throw new DumpError(
          `Cannot read the --cgroup-props-file ${o.cgroupPropsFile}: ${(e as Error).message}`,
        );
      }
      props.apply(text, `--cgroup-props-file ${o.cgroupPropsFile}`);
    }
    return props;
  }

  /** The properties of controller `name` (none for one without a list, as for a v2 controller). */
  of(name: string): readonly string[] {
    return this.#lists.get(name) ?? [];
  }

  /** Whether a hierarchy (its /proc/PID/cgroup name, "cpu,cpuacct" or "" for v2) is left out. */
  skips(hierarchy: string): boolean {
    return this.dumpControllers.length > 0 && !this.dumpControllers.includes(hierarchy);
  }

  /** Applies one text in CRIU's format; a mistake names where and what was expected. */
  apply(text: string, source: string): void {
    for (const { controller, strategy, properties } of parseProps(text, source)) {
      if (strategy === "merge") this.#lists.set(controller, [...this.of(controller), ...properties]);
      else this.#lists.set(controller, properties);
    }
  }
}

interface PropsBlock {
  controller: string;
  strategy: "merge" | "replace";
  properties: string[];
}

/**
 * CRIU's format, line by line: a quoted controller name and a colon, then ` - "strategy": "..."`
 * and ` - "properties": [ "a", "b" ]`.
 */
function parseProps(text: string, source: string): PropsBlock[] {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  const blocks: PropsBlock[] = [];
  const fail = (what: string, found: string | undefined) =>
    new DumpError(
      `${source}: expected ${what}, found ${found === undefined ? "the end" : JSON.stringify(found)}`,
    );
  for (let i = 0; i < lines.length; i += 3) {
    const head = /^"([^"]+)"\s*:$/.exec(lines[i]!);
    if (!head) throw fail('a quoted controller name and a colon ("cpu":)', lines[i]);
    const strategy = /^-\s*"strategy"\s*:\s*"([^"]*)"$/.exec(lines[i + 1] ?? "");
    if (!strategy) throw fail(`- "strategy": "merge" or "replace" for ${head[1]}`, lines[i + 1]);
    if (strategy[1] !== "merge" && strategy[1] !== "replace") {
      throw fail(`strategy "merge" or "replace" for ${head[1]}`, strategy[1]);
    }
    const list = /^-\s*"properties"\s*:\s*\[(.*)\]$/.exec(lines[i + 2] ?? "");
    if (!list) throw fail(`- "properties": [ ... ] for ${head[1]}`, lines[i + 2]);
    const properties: string[] = [];
    for (const item of list[1]!.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
      const name = /^"([^"]+)"$/.exec(item);
      if (!name) throw fail(`a quoted property name for ${head[1]}`, item);
      properties.push(name[1]!);
    }
    blocks.push({ controller: head[1]!, strategy: strategy[1], properties });
  }
  return blocks;
}
