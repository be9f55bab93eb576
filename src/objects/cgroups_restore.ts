/**
 * Cgroups at restore, as `--manage-cgroups MODE` says (CRIU's modes; soft when not given):
 *   ignore  cgroup.img is not looked at: the tasks stay in criu's cgroups;
 *   none    the cgroups must exist; no property is written;
 *   props   the cgroups must exist; every saved property is written;
 *   soft    missing cgroups are made with their properties, existing ones are left as they are;
 *   full    missing cgroups are made, and every cgroup gets its saved properties;
 *   strict  every saved cgroup must be missing, and is made with its properties.
 * Then every task whose set differs from its parent's (the root's: from criu's at the dump) is
 * moved into its cgroups right after it is created, before its memory is restored (so the memory
 * is charged there). `--cgroup-root [CONTROLLER:]/PATH` puts the saved cgroups under another root,
 * as CRIU rewrites them. A restore that fails removes the cgroups it made, deepest first.
 *
 * Frozen cgroups (v2, cgroup_freezer.ts): a cgroup whose saved cgroup.freeze is 1, where the
 * properties are written, and an existing one on the tasks' way that is frozen now, are kept
 * thawed while the tasks are made and frozen once they are complete, before they are let go, so
 * that they come back frozen as they were.
 */
import type {
  cg_set_entry,
  cgroup_dir_entry,
  cgroup_entry,
  cgroup_prop_entry,
} from "../images/gen/cgroup_pb.ts";
import { KINDS } from "../images/kinds.ts";
import type { ImageDir } from "../images/dir.ts";
import type { Log } from "../log.ts";
import type { RunOptions } from "../options/options.ts";
import type { RestoreTaskImages } from "../restore/images.ts";
import type { core_entry } from "../images/gen/core_pb.ts";
import { RestoreError } from "../errors.ts";
import { cgroupsOf, controllerNames, hierarchyMounts } from "./cgroup_fs.ts";
import { frozenByItself } from "./cgroup_freezer.ts";

/** Properties that only take effect on a cgroup without tasks or children: written first. */
const WRITTEN_FIRST = new Set([
  "cpuset.cpus",
  "cpuset.mems",
  "devices.list",
  "memory.kmem.limit_in_bytes",
  "memory.swappiness",
  "memory.oom_control",
  "memory.use_hierarchy",
  "cgroup.type",
]);

const RMDIR_TRIES = 200;

export class CgroupsRestore {
  readonly #created: string[] = [];
  /** Cgroups to freeze once the tasks are complete (saved frozen, or frozen when the restore began). */
  readonly #toFreeze = new Set<string>();
  /** Of those, the ones that existed frozen and were thawed for the restore. */
  readonly #thawed: string[] = [];
  readonly #sets: Map<number, cg_set_entry>;
  readonly #mountOf: ReturnType<typeof hierarchyMounts>;

  private constructor(
    private readonly image: cgroup_entry | undefined,
    private readonly rootSet: number,
    private readonly options: RunOptions,
    private readonly log: Log,
  ) {
    this.#sets = new Map((image?.sets ?? []).map((s) => [s.id, s]));
    this.#mountOf = hierarchyMounts(options.cgroupYard);
  }

  /** PREPARE: reads cgroup.img (unless --manage-cgroups ignore) and checks every task's set is in it. */
  static prepare(
    dir: ImageDir,
    rootSet: number,
    tasks: readonly RestoreTaskImages[],
    options: RunOptions,
    log: Log,
  ): CgroupsRestore {
    if (options.manageCgroups === "ignore" || !dir.has(KINDS.CGROUP)) {
      return new CgroupsRestore(undefined, rootSet, options, log);
    }
    const [image] = dir.read<cgroup_entry>(KINDS.CGROUP);
    const cg = new CgroupsRestore(image, rootSet, options, log);
    if (image) rewriteRoots(image, options.cgroupRoots);
    for (const t of tasks) {
      for (const set of [setOfTask(t), ...t.cores.slice(1).map((c) => c.core.threadCore?.cgSet ?? 0)]) {
        if (set !== 0 && set !== rootSet && !cg.#sets.has(set)) {
          throw new RestoreError(
            `core-${t.entry.pid}.img names cgroup set ${set}, which cgroup.img does not hold`,
          );
        }
      }
    }
    return cg;
  }

  /** Whether the cgroups of cgroup.img are restored (not with --manage-cgroups ignore, nor without one). */
  get managed(): boolean {
    return this.image !== undefined;
  }

  /** The set a task's leader was in, when the images hold it. */
  setOf(t: RestoreTaskImages): cg_set_entry | undefined {
    return this.#sets.get(setOfTask(t));
  }

  /** The set the root was in, when it is not criu's and the images hold it. */
  rootSetOf(root: RestoreTaskImages): cg_set_entry | undefined {
    const set = setOfTask(root);
    return set === this.rootSet ? undefined : this.#sets.get(set);
  }

  /** Makes or checks the saved cgroups and writes their properties, as the mode says. */
  makeDirs(): void {
    if (!this.image) return;
    this.log.info(`Restoring cgroups (--manage-cgroups ${this.options.manageCgroups})`);
    for (const ctl of this.image.controllers) {
      const mount = this.#mountOf(ctl.cnames);
      if (mount === undefined) {
        if (ctl.dirs.length === 0) continue;
        throw new RestoreError(
          `The cgroup hierarchy ${ctl.cnames.join(",") || "v2"} of cgroup.img is not mounted here`,
        );
      }
      for (const head of ctl.dirs) {
        const path = head.dirName === "" ? "" : `/${head.dirName.replace(/^\//, "")}`;
        this.#thawAbove(mount, path);
        this.#makeDir(mount, path, head);
      }
    }
  }

  /** Moves the task just created into its cgroups, unless its parent's set is the same. */
  place(t: RestoreTaskImages, tasks: readonly RestoreTaskImages[]): void {
    if (!this.image) return;
    const set = setOfTask(t);
    if (set === 0 || set === parentSet(t, tasks, this.rootSet)) return;
    // criu's own set at the dump, which CRIU does not write (a task below a root in a cgroup of
    // its own that stayed in criu's): criu's own cgroups now, in the hierarchies mounted here.
    this.moveInto(t.hostPid, this.#membersOf(set));
  }

  /**
   * Once a task's threads exist: each thread whose set is not its leader's into its own cgroups
   * (a v2 threaded subtree's cgroup.threads, a v1 hierarchy's tasks), as CRIU keeps them per thread.
   */
  placeThreads(t: RestoreTaskImages, threads: readonly { tid: number; core: core_entry }[]): void {
    if (!this.image) return;
    const leader = setOfTask(t);
    for (const { tid, core } of threads.slice(1)) {
      const set = core.threadCore?.cgSet ?? 0;
      if (set !== 0 && set !== leader) this.moveInto(tid, this.#membersOf(set), "thread");
    }
  }

  /**
   * The cgroups of a saved set; criu's own set at the dump, which CRIU does not write (a task below
   * a root in a cgroup of its own that stayed in criu's), is criu's own cgroups now, in the
   * hierarchies mounted here.
   */
  #membersOf(set: number): readonly { name: string; path: string }[] {
    if (set === this.rootSet && !this.#sets.has(set)) {
      return cgroupsOf(Deno.pid).filter((c) => this.#mountOf(controllerNames(c.name)));
    }
    return this.#sets.get(set)!.ctls;
  }

  /** Task `t` back into its own cgroups (it made a cgroup namespace at those above them). */
  placeAgain(t: RestoreTaskImages): void {
    const set = this.setOf(t);
    if (set) this.moveInto(t.hostPid, set.ctls);
  }

  /**
   * Writes `pid` into the cgroup.procs of each cgroup named (a hierarchy's name field and a path);
   * a thread alone into cgroup.threads (v2) or tasks (v1).
   */
  moveInto(
    pid: number,
    cgroups: readonly { name: string; path: string }[],
    what: "process" | "thread" = "process",
  ): void {
    const list = (name: string) =>
      what === "process" ? "cgroup.procs" : name === "" ? "cgroup.threads" : "tasks";
    for (const m of cgroups) {
      const mount = this.#mountOf(controllerNames(m.name));
      if (mount === undefined) {
        throw new RestoreError(`The cgroup hierarchy ${m.name || "v2"} is not mounted here`);
      }
      const file = `${mount}${m.path.replace(/\/$/, "")}/${list(m.name)}`;
      try {
        Deno.writeTextFileSync(file, `${pid}`);
      } catch (e) {
        throw new RestoreError(`Cannot move ${what} ${pid} into ${file}: ${(e as Error).message}`);
      }
    }
  }

  /**
   * Once the tasks are complete, before they are let go: the cgroups saved frozen, and those that
   * were frozen before the restore, are frozen (again).
   */
  freezeAgain(): void {
    for (const path of this.#toFreeze) {
      try {
        write(`${path}/cgroup.freeze`, "1");
        this.log.info(`Froze the cgroup ${path}, as it was at the dump`);
      } catch (e) {
        // The tasks are complete: they run on rather than be lost (criu-ts cannot undo now).
        this.log.error((e as Error).message);
      }
    }
    this.#toFreeze.clear();
    this.#thawed.length = 0;
  }

  /** After a failed restore (the tasks are gone): removes the cgroups made, deepest first. */
  undo(): void {
    // Those found frozen are left frozen, as found.
    for (const path of this.#thawed.splice(0)) {
      try {
        write(`${path}/cgroup.freeze`, "1");
      } catch (e) {
        this.log.warn((e as Error).message);
      }
    }
    const pause = new Int32Array(new SharedArrayBuffer(4));
    for (const path of this.#created.splice(0).reverse()) {
      for (let i = 0;; i++) {
        try {
          Deno.removeSync(path);
          break;
        } catch (e) {
          // A killed task leaves its cgroup a moment after it is reaped.
          if (!(e instanceof Deno.errors.Busy) || i >= RMDIR_TRIES) {
            this.log.warn(`Cannot remove the cgroup ${path}: ${(e as Error).message}`);
            break;
          }
          Atomics.wait(pause, 0, 0, 10);
        }
      }
    }
  }

  /** An existing frozen cgroup at or above a head (v2) is thawed until the tasks are complete. */
  #thawAbove(mount: string, path: string): void {
    const parts = path.split("/").filter((p) => p !== "");
    for (let i = 1; i <= parts.length; i++) {
      const full = `${mount}/${parts.slice(0, i).join("/")}`;
      if (this.#toFreeze.has(full) || !frozenByItself(full)) continue;
      write(`${full}/cgroup.freeze`, "0");
      this.#thawed.push(full);
      this.#toFreeze.add(full);
      this.log.info(`Thawed the frozen cgroup ${full} until its tasks are restored`);
    }
  }

  /** Makes the cgroup at `path` and those missing above it (a head's parents are not saved). */
  #mkdirs(mount: string, path: string): void {
    const parts = path.split("/").filter((p) => p !== "");
    for (let i = 1; i <= parts.length; i++) {
      const full = `${mount}/${parts.slice(0, i).join("/")}`;
      try {
        Deno.mkdirSync(full);
      } catch (e) {
        if (e instanceof Deno.errors.AlreadyExists) continue;
        throw new RestoreError(`Cannot make the cgroup ${full}: ${(e as Error).message}`);
      }
      this.#created.push(full);
      this.log.info(`Made cgroup ${full}`);
    }
  }

  #makeDir(mount: string, path: string, dir: cgroup_dir_entry): void {
    const full = `${mount}${path}`;
    const mode = this.options.manageCgroups;
    let exists = true;
    try {
      Deno.statSync(full);
    } catch {
      exists = false;
    }
    let writeProps: boolean;
    if (!exists) {
      if (mode === "none" || mode === "props") {
        throw new RestoreError(`The cgroup ${full} does not exist (--manage-cgroups ${mode} makes none)`);
      }
      this.#mkdirs(mount, path);
      writeProps = true;
    } else {
      if (mode === "strict") {
        throw new RestoreError(`The cgroup ${full} exists already (--manage-cgroups strict makes every one)`);
      }
      writeProps = mode === "props" || mode === "full";
    }
    if (path !== "" && mode !== "none" && dir.dirPerms) {
      Deno.chownSync(full, dir.dirPerms.uid, dir.dirPerms.gid);
      Deno.chmodSync(full, dir.dirPerms.mode & 0o7777);
    }
    // The root of a hierarchy keeps its own properties, as in CRIU.
    if (writeProps && path !== "") {
      const first = dir.properties.filter((p) => WRITTEN_FIRST.has(p.name));
      const rest = dir.properties.filter((p) => !WRITTEN_FIRST.has(p.name));
      for (const p of [...first, ...rest]) writeProp(full, p, this.log);
      if (dir.properties.some((p) => p.name === "cgroup.freeze" && p.value.trim() === "1")) {
        this.#toFreeze.add(full);
      }
    }
    // A child of a head is not on #thawAbove's way: one found frozen is thawed the same way.
    if (path !== "" && exists && !this.#toFreeze.has(full) && frozenByItself(full)) {
      write(`${full}/cgroup.freeze`, "0");
      this.#thawed.push(full);
      this.#toFreeze.add(full);
    }
    for (const child of dir.children) this.#makeDir(mount, `${path}/${child.dirName}`, child);
  }
}

/** The set of a task's leader (0 for zombies and helpers). */
function setOfTask(t: RestoreTaskImages): number {
  const core = t.cores[0]?.core;
  return core?.tc?.cgSet || core?.threadCore?.cgSet || 0;
}

/** The set the task inherits: its nearest ancestor's with one, else criu's at the dump. */
function parentSet(t: RestoreTaskImages, tasks: readonly RestoreTaskImages[], rootSet: number): number {
  let child = t;
  for (;;) {
    if (child === tasks[0]) return rootSet;
    const parent = tasks.find((x) => x.entry.pid === child.entry.ppid && x !== child);
    if (!parent) return rootSet;
    const set = setOfTask(parent);
    if (set !== 0) return set;
    child = parent;
  }
}

/** Writes one saved property, as CRIU does for each kind. */
function writeProp(dir: string, p: cgroup_prop_entry, log: Log): void {
  const file = `${dir}/${p.name}`;
  if (p.perms) {
    try {
      Deno.chownSync(file, p.perms.uid, p.perms.gid);
      Deno.chmodSync(file, p.perms.mode & 0o7777);
    } catch (e) {
      throw new RestoreError(`Cannot set the owner and mode of ${file}: ${(e as Error).message}`);
    }
  }
  // The tasks' pids are not properties; a v2 cgroup is a domain unless made threaded; a hierarchy's
  // freezing is the freezer's business (--freeze-cgroup thaws what it froze).
  if (p.name === "cgroup.procs" || p.name === "tasks" || p.name === "cgroup.freeze") return;
  if (p.name === "cgroup.type" && p.value !== "threaded") return;
  if (p.name === "memory.swappiness" && p.value === "60") return;
  if (p.name === "memory.oom_control" && p.value === "0") return;
  if (p.name === "cgroup.subtree_control") return writeSubtreeControl(file, p.value);
  if (p.name === "devices.list") {
    write(`${dir}/devices.deny`, "a");
    for (const line of p.value.split("\n").filter((l) => l !== "")) write(`${dir}/devices.allow`, line);
    return;
  }
  if (p.name === "net_prio.ifpriomap") {
    // One interface a write; those this host does not have are let go.
    for (const line of p.value.split("\n").filter((l) => l !== "")) {
      try {
        write(file, line);
      } catch (e) {
        log.warn((e as Error).message);
      }
    }
    return;
  }
  try {
    write(file, p.value);
  } catch (e) {
    // The kernel no longer takes memory.kmem.limit_in_bytes (CRIU lets that go too).
    if (p.name === "memory.kmem.limit_in_bytes") return log.warn((e as Error).message);
    throw e;
  }
}

/** cgroup.subtree_control takes "+name"/"-name": what is on now goes off, the saved ones come on. */
function writeSubtreeControl(file: string, saved: string): void {
  const now = Deno.readTextFileSync(file).trim().split(/\s+/).filter((s) => s !== "");
  const wanted = saved.trim().split(/\s+/).filter((s) => s !== "");
  const change = [
    ...now.filter((c) => !wanted.includes(c)).map((c) => `-${c}`),
    ...wanted.map((c) => `+${c}`),
  ];
  if (change.length) write(file, change.join(" "));
}

function write(file: string, value: string): void {
  try {
    Deno.writeTextFileSync(file, value);
  } catch (e) {
    throw new RestoreError(`Cannot write ${JSON.stringify(value)} to ${file}: ${(e as Error).message}`);
  }
}

/**
 * --cgroup-root: the saved cgroups of a hierarchy move under a new root, as CRIU rewrites them: a
 * set's path keeps what lay below the old head (or below its cgroup namespace's root), and the head
 * takes the new root's name.
 */
export function rewriteRoots(image: cgroup_entry, roots: RunOptions["cgroupRoots"]): void {
  for (const ctl of image.controllers) {
    const named = roots.filter((r) =>
      r.controller !== undefined && ctl.cnames.some((c) => r.controller!.split(",").includes(c))
    );
    const distinct = [...new Set(named.map((r) => r.path))];
    if (distinct.length > 1) {
      throw new RestoreError(
        `--cgroup-root gives the hierarchy ${ctl.cnames.join(",")} two roots: ${distinct.join(" and ")}`,
      );
    }
    const newRoot = distinct[0] ?? roots.find((r) => r.controller === undefined)?.path;
    if (newRoot === undefined) continue;
    for (const head of ctl.dirs) rewriteHead(image, ctl.cnames, head, newRoot);
  }
}

function rewriteHead(
  image: cgroup_entry,
  cnames: readonly string[],
  head: cgroup_dir_entry,
  newRoot: string,
): void {
  const dir = head.dirName;
  let renamed: string | undefined;
  for (const set of image.sets) {
    for (const m of set.ctls) {
      // (CRIU compares bare prefixes, so that "a" would also take "/ab"; a whole path component here.)
      const below = dir === "" || m.path.slice(1) === dir || m.path.slice(1).startsWith(`${dir}/`);
      if (!controllerNames(m.name).every((n) => cnames.includes(n)) || !below) {
        continue;
      }
      if (m.cgnsPrefix) {
        renamed ??= `${newRoot}${dir.slice(m.cgnsPrefix - 1)}`;
        m.path = `${newRoot}${m.path.slice(m.cgnsPrefix)}`;
        m.cgnsPrefix = newRoot.length;
      } else {
        renamed ??= newRoot;
        // What lies below the head (CRIU drops the slash after a root head: "/a" would be "/NEWa").
        const rest = dir === "" ? (m.path === "/" ? "" : m.path) : m.path.slice(dir.length + 1);
        m.path = `${newRoot}${rest}`;
      }
    }
  }
  if (renamed !== undefined) head.dirName = renamed.replace(/^\//, "");
}
