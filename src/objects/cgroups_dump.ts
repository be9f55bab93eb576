/**
 * Cgroups at dump, as CRIU records them in cgroup.img:
 *   - sets: each distinct combination of cgroups a thread is in (one path per hierarchy) gets an id;
 *     criu's own set comes first (id 1, inventory.img's root_cg_set) and is not written; every
 *     task's core says its set (core.tc.cg_set and thread_core.cg_set). A member's cgns_prefix is
 *     how much of its path lies above the root of its task's cgroup namespace (the tree's, or one a
 *     task made below it, which CRIU 4.2 refuses to dump).
 *   - controllers: one per hierarchy, with the directories below the tasks' cgroups and the
 *     properties CRIU saves (cgroup_props.ts), each with its owner and mode.
 * When every task is in criu's own set, nothing is written (as CRIU): the restore leaves them in
 * criu's cgroups.
 *
 * One difference from CRIU: a hierarchy in which a set's path is criu's own is not walked (CRIU
 * walks it too, which for a task in the hierarchy's root records every cgroup of the host, whose
 * properties `--manage-cgroups full` would then write back and which `strict` refuses).
 */
import { create } from "@bufbuild/protobuf";
import {
  type cg_controller_entry,
  cg_controller_entrySchema,
  cg_member_entrySchema,
  cg_set_entrySchema,
  type cgroup_dir_entry,
  cgroup_dir_entrySchema,
  cgroup_entrySchema,
  cgroup_prop_entrySchema,
} from "../images/gen/cgroup_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import type { FrozenTree } from "../dump/freeze.ts";
import type { Log } from "../log.ts";
import type { RunOptions } from "../options/options.ts";
import { DumpError } from "../errors.ts";
import { inNamespaceOf, readSmallFile } from "../../ffi/nsenter.ts";
import {
  type CgroupLine,
  cgroupsOf,
  controllerNames,
  hierarchyMounts,
  parseCgroupFile,
} from "./cgroup_fs.ts";
import { CgroupProps, GLOBAL_V1_PROPS, GLOBAL_V2_PROPS } from "./cgroup_props.ts";

interface Member extends CgroupLine {
  cgnsPrefix: number;
}

interface CgSet {
  id: number;
  members: Member[];
}

/** The tree's cgroups, collected while it is frozen. */
export class CgroupsDump {
  readonly #sets: CgSet[] = [];
  readonly #setOfTid = new Map<number, number>();
  readonly #controllers = new Map<string, cg_controller_entry>();
  readonly #props: CgroupProps;
  readonly #mountOf: ReturnType<typeof hierarchyMounts>;
  readonly #criu: CgSet;
  /** v2 cgroups frozen by their user, thawed for the dump (cgroup_freezer.ts): saved frozen. */
  #thawed: ReadonlySet<string> = new Set();

  constructor(private readonly options: RunOptions, private readonly log: Log) {
    this.#props = CgroupProps.fromOptions(options);
    this.#mountOf = hierarchyMounts(options.cgroupYard);
    this.#criu = this.#setOf(this.#members(cgroupsOf(Deno.pid)), false);
  }

  /** criu's own set: inventory.img's root_cg_set. */
  get rootSet(): number {
    return this.#criu.id;
  }

  /** The set of a thread (0 for a thread not collected: a zombie). */
  setOf(tid: number): number {
    return this.#setOfTid.get(tid) ?? 0;
  }

  /**
   * Reads the cgroups of every live thread; each task's cgroup namespace gives its set the prefixes
   * (the root's for most; a task that made one of its own below has its own).
   */
  collect(tree: FrozenTree): void {
    const byNamespace = new Map<string, Map<string, number>>();
    for (const task of tree.tasks) {
      if (task.state === "zombie") continue;
      const ns = Deno.readLinkSync(`/proc/${task.pid}/ns/cgroup`);
      const prefixes = byNamespace.get(ns) ?? this.#prefixesOf(task.pid);
      byNamespace.set(ns, prefixes);
      for (const tid of [task.pid, ...task.threads.filter((t) => t !== task.pid)]) {
        const members = this.#members(cgroupsOf(task.pid, tid)).map((m) => {
          const cgnsPrefix = prefixes.get(m.name) ?? 0;
          if (m.path.length < cgnsPrefix) {
            throw new DumpError(
              `Thread ${tid} is in cgroup ${m.path} (${
                m.name || "v2"
              }), above the root of its tree's cgroup namespace`,
            );
          }
          return { ...m, cgnsPrefix };
        });
        // A thread may be in other cgroups than its leader (a v2 threaded subtree, a v1 hierarchy):
        // its set is its own, in its thread core.
        this.#setOfTid.set(tid, this.#setOf(members, true).id);
      }
    }
  }

  /** cgroup.img, unless every task is in criu's set. */
  write(dir: ImageDir): void {
    const others = this.#sets.filter((s) => s !== this.#criu);
    if (others.length === 0) {
      this.log.info("All tasks are in criu's cgroups; no cgroup.img");
      return;
    }
    const sets = others.map((s) =>
      create(cg_set_entrySchema, {
        id: s.id,
        ctls: s.members.map((m) =>
          create(cg_member_entrySchema, {
            name: m.name,
            path: m.path,
            ...(m.cgnsPrefix > 0 ? { cgnsPrefix: m.cgnsPrefix } : {}),
          })
        ),
      })
    );
    dir.write(KINDS.CGROUP, undefined, [
      create(cgroup_entrySchema, { sets, controllers: [...this.#controllers.values()] }),
    ]);
  }

  #members(lines: CgroupLine[]): Member[] {
    return lines.filter((l) => !this.#props.skips(l.name)).map((l) => ({ ...l, cgnsPrefix: 0 }));
  }

  #setOf(members: Member[], collect: boolean): CgSet {
    const same = this.#sets.find((s) =>
      s.members.length === members.length &&
      s.members.every((m, i) =>
        m.name === members[i]!.name && m.path === members[i]!.path && m.cgnsPrefix === members[i]!.cgnsPrefix
      )
    );
    if (same) return same;
    const set = { id: this.#sets.length + 1, members };
    this.#sets.push(set);
    this.log.debug(`Cgroup set ${set.id}: ${members.map((m) => `${m.name || "v2"}:${m.path}`).join(" ")}`);
    if (collect) { for (const m of members) this.#collectDirs(m); }
    return set;
  }

  /**
   * How much of each path lies above the root of the cgroup namespace of `pid`: its paths seen from
   * inside that namespace are the tails of those seen from criu's.
   */
  #prefixesOf(pid: number): Map<string, number> {
    const out = new Map<string, number>();
    if (Deno.readLinkSync(`/proc/${pid}/ns/cgroup`) === Deno.readLinkSync("/proc/self/ns/cgroup")) return out;
    const outside = cgroupsOf(pid);
    const inside = parseCgroupFile(inNamespaceOf(pid, "cgroup", () => readSmallFile(`/proc/${pid}/cgroup`)));
    for (const inner of inside) {
      const outer = outside.find((o) => o.name === inner.name);
      if (!outer || outer.path === inner.path) continue;
      const tail = inner.path === "/" ? "" : inner.path;
      if (!outer.path.endsWith(tail)) {
        throw new DumpError(
          `Process ${pid} sees its cgroup ${outer.path} (${
            inner.name || "v2"
          }) as ${inner.path} in its cgroup namespace, which is not a tail of it`,
        );
      }
      out.set(inner.name, outer.path.length - tail.length);
    }
    return out;
  }

  /** Adds the directories at and below a member's cgroup to its hierarchy's controller entry. */
  #collectDirs(m: Member): void {
    const cnames = controllerNames(m.name);
    let ctl = this.#controllers.get(m.name);
    if (!ctl) {
      ctl = create(cg_controller_entrySchema, { cnames, dirs: [], isThreaded: false });
      this.#controllers.set(m.name, ctl);
    }
    const criuPath = this.#criu.members.find((c) => c.name === m.name)?.path;
    if (m.path === criuPath || this.options.manageCgroups === "ignore") return;
    const mount = this.#mountOf(cnames);
    if (mount === undefined) {
      throw new DumpError(
        `The cgroup hierarchy ${m.name || "v2"} is not mounted (no cgroup${
          m.name ? "" : "2"
        } mount of its root in /proc/self/mountinfo)`,
      );
    }
    addDir(ctl.dirs, m.path, (name) => this.#readDir(ctl, cnames, `${mount}${m.path}`, name));
  }

  /** The cgroups at these full paths were frozen before the dump thawed them: cgroup.freeze is saved as 1. */
  savesFrozen(paths: readonly string[]): void {
    this.#thawed = new Set(paths);
  }

  #readDir(ctl: cg_controller_entry, cnames: string[], full: string, dirName: string): cgroup_dir_entry {
    const st = Deno.statSync(full);
    const dir = create(cgroup_dir_entrySchema, {
      dirName,
      dirPerms: { mode: st.mode ?? 0, uid: st.uid ?? 0, gid: st.gid ?? 0 },
    });
    const v2 = cnames[0] === "";
    const names = [...cnames.flatMap((c) => this.#props.of(c)), ...(v2 ? GLOBAL_V2_PROPS : GLOBAL_V1_PROPS)];
    for (const name of names) {
      const value = readProp(`${full}/${name}`, name);
      if (value === undefined) continue;
      if (name === "cgroup.freeze" && this.#thawed.has(full)) value.value = "1";
      if ((name === "cgroup.type" && value.value === "threaded") || name === "tasks") ctl.isThreaded = true;
      dir.properties.push(create(cgroup_prop_entrySchema, { name, ...value }));
    }
    const children = [...Deno.readDirSync(full)].filter((e) => e.isDirectory).map((e) => e.name).sort();
    for (const name of children) dir.children.push(this.#readDir(ctl, cnames, `${full}/${name}`, name));
    return dir;
  }
}

/**
 * Adds the tree at `path` to a controller's heads, as CRIU names them: a head's dir_name is its
 * path without the leading slash ("" for the root), a child's its own name. A path inside a head
 * is there already; heads inside the new one are read again as part of it.
 */
function addDir(heads: cgroup_dir_entry[], path: string, read: (name: string) => cgroup_dir_entry): void {
  const name = path.replace(/^\//, "");
  const inside = (inner: string, outer: string) =>
    outer === "" || inner === outer || inner.startsWith(`${outer}/`);
  if (heads.some((h) => inside(name, h.dirName))) return;
  for (let i = heads.length - 1; i >= 0; i--) if (inside(heads[i]!.dirName, name)) heads.splice(i, 1);
  heads.push(read(name));
}

/** A property's value and perms as CRIU saves them; undefined when this kernel has no such file. */
function readProp(path: string, name: string) {
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(path);
  } catch {
    return undefined;
  }
  const perms = { mode: st.mode ?? 0, uid: st.uid ?? 0, gid: st.gid ?? 0 };
  // The pids of cgroup.procs and tasks mean nothing elsewhere: only their perms are kept.
  if (name === "cgroup.procs" || name === "tasks") return { value: "", perms };
  let value = readSmallFile(path).slice(0, 1023).replace(/\n$/, "");
  // As CRIU: a number that reaches LLONG_MAX ("max" of a few v1 files) is saved as -1.
  const leading = /^\d+/.exec(value);
  if (leading && BigInt(leading[0]) >= 2n ** 63n - 1n) value = "-1";
  if (name === "memory.oom_control") {
    const m = /oom_kill_disable (\d+)/.exec(value);
    if (!m) throw new DumpError(`Cannot read oom_kill_disable from ${path}: ${JSON.stringify(value)}`);
    value = m[1]!;
  }
  return { value, perms };
}
