/**
 * Where the cgroup hierarchies are: a line of /proc/PID/cgroup names a hierarchy by its
 * controllers ("cpu,cpuacct", "name=systemd", "" for the v2 unified one); the directory its
 * cgroups are read and made in is a mount of that hierarchy's root found in /proc/self/mountinfo,
 * or, with --cgroup-yard DIR, DIR/NAME as CRIU lays a yard out (the controllers joined by commas,
 * "name=" left off, "unified" for v2).
 */
import { readSmallFile } from "../../ffi/nsenter.ts";

export interface CgroupLine {
  /** The hierarchy's name field: "cpu,cpuacct", "name=systemd", or "" for v2. */
  name: string;
  /** The path seen by whoever read the file. */
  path: string;
}

/** Parses /proc/PID/cgroup (or /proc/PID/task/TID/cgroup) text, sorted by name as CRIU keeps it. */
export function parseCgroupFile(text: string): CgroupLine[] {
  const out: CgroupLine[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const first = line.indexOf(":");
    const second = line.indexOf(":", first + 1);
    if (first < 0 || second < 0) throw new Error(`Cannot parse the cgroup line ${JSON.stringify(line)}`);
    out.push({ name: line.slice(first + 1, second), path: line.slice(second + 1) });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The cgroups a thread is in, as criu's own cgroup namespace sees them. */
export function cgroupsOf(pid: number, tid = pid): CgroupLine[] {
  return parseCgroupFile(readSmallFile(`/proc/${pid}/task/${tid}/cgroup`));
}

/** The controller names of a hierarchy's name field ([""] for v2). */
export function controllerNames(name: string): string[] {
  return name === "" ? [""] : name.split(",");
}

/** CRIU's directory name for a hierarchy in a yard. */
export function yardName(cnames: readonly string[]): string {
  return cnames.map((n) => n === "" ? "unified" : n.replace(/^name=/, "")).join(",");
}

/** Mounts of cgroup hierarchies' roots, by hierarchy name field. */
export function hierarchyMounts(yard?: string): (cnames: readonly string[]) => string | undefined {
  if (yard !== undefined) return (cnames) => `${yard}/${yardName(cnames)}`;
  const mounts: { v2: boolean; options: string[]; at: string }[] = [];
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const before = line.slice(0, sep).split(" ");
    const [fstype, , superOptions] = line.slice(sep + 3).split(" ");
    if ((fstype !== "cgroup" && fstype !== "cgroup2") || before[3] !== "/") continue;
    mounts.push({
      v2: fstype === "cgroup2",
      options: (superOptions ?? "").split(","),
      at: unescape(before[4]!),
    });
  }
  return (cnames) => {
    const v2 = cnames.length === 1 && cnames[0] === "";
    return mounts.find((m) => m.v2 === v2 && (v2 || cnames.every((c) => m.options.includes(c))))?.at;
  };
}

/** mountinfo escapes spaces, tabs, newlines and backslashes as octal. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}
