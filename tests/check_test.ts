/**
 * `criu check`: the probes run directly (real answers of this kernel, Linux 6.18 without
 * soft-dirty), and the command run through the launcher as a user would.
 */
import assert from "node:assert/strict";
import {
  featureNames,
  FEATURES,
  featuresFor,
  findFeature,
  probeFeature,
  runProbes,
} from "../src/check/probes.ts";
import { listChildren } from "../ffi/proc.ts";
import { summarize } from "../src/cli/commands/check.ts";
import { criu } from "./lib/harness.ts";
import { python3 } from "./lib/tools.ts";

/** CRIU's `--feature` names, in CRIU's order (facts of its interface). */
const CRIU_NAMES = [
  "mnt_id",
  "mem_dirty_track",
  "aio_remap",
  "timerfd",
  "tun",
  "tun_ns",
  "userns",
  "fdinfo_lock",
  "seccomp_suspend",
  "seccomp_filters",
  "loginuid",
  "cgroupns",
  "autofs",
  "tcp_half_closed",
  "compat_cr",
  "uffd",
  "uffd-noncoop",
  "can_map_vdso",
  "sk_ns",
  "sk_unix_file",
  "net_diag_raw",
  "nsid",
  "link_nsid",
  "kcmp_epoll",
  "timens",
  "external_net_ns",
  "clone3_set_tid",
  "newifindex",
  "nftables",
  "has_ipt_legacy",
  "pidfd_store",
  "ns_pid",
  "apparmor_stacking",
  "network_lock_nftables",
  "sockopt_buf_lock",
  "memfd_hugetlb",
  "move_mount_set_group",
  "openat2",
  "get_rseq_conf",
  "ipv6_freebind",
  "pagemap_scan",
  "timer_cr_ids",
  "overlayfs_maps",
  "breakpoints",
  "pagemap_scan_guard_pages",
];

/** What this machine (Linux 6.18, root, no soft-dirty, no raw sock_diag, no AppArmor) answers. */
const SUPPORTED_HERE = [
  "clone3_set_tid",
  "get_rseq_conf",
  "pagemap_scan",
  "pagemap_scan_guard_pages",
  "uffd",
  "uffd-noncoop",
  "tcp_half_closed",
  "seccomp_suspend",
  "seccomp_filters",
  "aio_remap",
  "timerfd",
  "mnt_id",
  "memfd_hugetlb",
  "openat2",
  "pidfd_store",
  "timer_cr_ids",
  "move_mount_set_group",
  "overlayfs_maps",
  "link_nsid",
  "nsid",
  "newifindex",
  "can_map_vdso",
  "kcmp_epoll",
  "timens",
  // ours
  "ptrace_seize",
  "remote_syscall",
  "process_vm_readv",
  "proc_pid_mem",
  "pagemap",
  "map_files",
  "prctl_mm_map",
  "special_mapping_mremap",
  "sigqueueinfo",
  "ptrace_peeksiginfo",
  "tcp",
  "memfd",
  "pagemap_scan_dirty_track",
];
const NOT_SUPPORTED_HERE = [
  "net_diag_raw", // CONFIG_INET_RAW_DIAG is off
  "apparmor_stacking", // no AppArmor
  "compat_cr", // criu-ts: 64-bit only
  "nftables", // criu-ts: no libnftables
  "network_lock_nftables",
];

/**
 * Answers that depend on how the kernel was built or which modules it has loaded, not on the
 * kind of machine: each is asked of the kernel here, without criu-ts's code, and the probe must
 * agree with it. autofs is in /proc/filesystems once its module is in (a probe may load it when
 * the machine can load modules, so this is read after the probes ran); soft-dirty is asked of
 * pagemap by Python: a page just written after clear_refs 4 has bit 55 set only with it.
 */
function kernelAnswers(): Map<string, boolean> {
  const fsList = Deno.readTextFileSync("/proc/filesystems");
  const softDirty = new Deno.Command(python3(), {
    args: [
      "-c",
      [
        "import ctypes,mmap,struct",
        "m=mmap.mmap(-1,4096)",
        "a=ctypes.addressof(ctypes.c_char.from_buffer(m))",
        "open('/proc/self/clear_refs','w').write('4')",
        "m[0]=1",
        "f=open('/proc/self/pagemap','rb');f.seek(a//4096*8)",
        "print((struct.unpack('<Q',f.read(8))[0]>>55)&1)",
      ].join("\n"),
    ],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const bit = new TextDecoder().decode(softDirty.stdout).trim();
  // clear_refs 4 is refused (EINVAL) where soft-dirty is not built in: that is a "no" too.
  if (softDirty.code !== 0 && !new TextDecoder().decode(softDirty.stderr).includes("Invalid argument")) {
    throw new Error(`Cannot ask the kernel about soft-dirty: ${new TextDecoder().decode(softDirty.stderr)}`);
  }
  if (softDirty.code === 0 && bit !== "0" && bit !== "1") throw new Error(`pagemap read gave "${bit}"`);
  return new Map([
    ["autofs", /\tautofs$/m.test(fsList)],
    ["mem_dirty_track", bit === "1"],
  ]);
}

function fds(): string[] {
  return [...Deno.readDirSync("/proc/self/fd")].map((e) => e.name).sort();
}

/** Our children that are probe children ("sleep 60"), and every stopped or zombie child. */
function leftovers(): string[] {
  const out: string[] = [];
  for (const pid of listChildren(Deno.pid)) {
    let cmdline = "";
    let state = "?";
    try {
      cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ").trim();
      state = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]![0]!;
    } catch {
      continue; // gone meanwhile
    }
    if (cmdline === "sleep 60" || "tTZ".includes(state)) out.push(`${pid} ${state} ${cmdline}`);
  }
  return out;
}

/** `sleep 60` processes anywhere (a probe child that escaped would be one, reparented). */
function probeChildrenAnywhere(): Set<number> {
  const out = new Set<number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${e.name}/cmdline`) === "sleep\x0060\x00") out.add(Number(e.name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

// --- the table ------------------------------------------------------------------------------------

Deno.test("featureNames() lists CRIU's names first, in CRIU's order", () => {
  assert.deepEqual(featureNames().slice(0, CRIU_NAMES.length), CRIU_NAMES);
  assert.ok(FEATURES.slice(0, CRIU_NAMES.length).every((f) => f.origin === "criu"));
  assert.ok(FEATURES.slice(CRIU_NAMES.length).every((f) => f.origin === "criu-ts"));
});

Deno.test("FEATURES has no duplicate names and every feature says how it is probed", () => {
  assert.equal(new Set(featureNames()).size, FEATURES.length);
  for (const f of FEATURES) assert.ok(f.how.length > 0, f.name);
});

Deno.test("featuresFor() runs core always, extra and optional with --extra, experimental with --experimental", () => {
  const core = featuresFor({ extra: false, experimental: false });
  assert.ok(core.every((f) => f.category === "core"));
  assert.ok(core.some((f) => f.name === "clone3_set_tid"));
  const extra = featuresFor({ extra: true, experimental: false }).map((f) => f.name);
  assert.ok(extra.includes("mem_dirty_track") && extra.includes("breakpoints") && !extra.includes("autofs"));
  assert.ok(!extra.includes("apparmor_stacking"), "AppArmor is not active here, so CRIU would skip it");
  const experimental = featuresFor({ extra: false, experimental: true }).map((f) => f.name);
  assert.ok(
    experimental.includes("autofs") && experimental.includes("compat_cr") && !experimental.includes("uffd"),
  );
  const all = featuresFor({ extra: true, experimental: true }).map((f) => f.name);
  assert.ok(!all.includes("has_ipt_legacy") && !all.includes("nsid"), "on-request features need --feature");
});

// --- the probes, run directly ---------------------------------------------------------------------

Deno.test("runProbes() answers every feature and leaves no fd, child or stopped task behind", () => {
  const fdsBefore = fds();
  const sleepersBefore = probeChildrenAnywhere();
  const checked = runProbes(FEATURES);
  assert.deepEqual(fds(), fdsBefore);
  assert.deepEqual(leftovers(), []);
  const escaped = [...probeChildrenAnywhere()].filter((p) => !sleepersBefore.has(p));
  assert.deepEqual(escaped, []);
  const byName = new Map(checked.map((c) => [c.feature.name, c.result]));
  for (const name of SUPPORTED_HERE) {
    const r = byName.get(name)!;
    assert.ok(r.supported, `${name} should be supported here: ${r.detail}`);
  }
  for (const name of NOT_SUPPORTED_HERE) {
    const r = byName.get(name)!;
    assert.ok(!r.supported, `${name} should not be supported here: ${r.detail}`);
    assert.ok(r.detail.length > 0);
  }
  for (const [name, kernel] of kernelAnswers()) {
    const r = byName.get(name)!;
    assert.equal(r.supported, kernel, `${name}: the kernel says ${kernel}, the probe ${r.detail}`);
  }
});

Deno.test("every core feature is supported on this machine", () => {
  const checked = runProbes(featuresFor({ extra: false, experimental: false }));
  for (const { feature, result } of checked) assert.ok(result.supported, `${feature.name}: ${result.detail}`);
});

Deno.test("mem_dirty_track answers as the kernel's pagemap does, and points at PAGEMAP_SCAN tracking without it", () => {
  const r = probeFeature("mem_dirty_track")!;
  const kernel = kernelAnswers().get("mem_dirty_track")!;
  assert.equal(r.supported, kernel, r.detail);
  if (!kernel) {
    assert.match(r.detail, /soft-dirty/);
    assert.match(r.detail, /pagemap_scan_dirty_track/);
  }
  const ours = probeFeature("pagemap_scan_dirty_track")!;
  assert.equal(ours.supported, true, ours.detail);
});

Deno.test("clone3_set_tid creates the chosen pid and the task is gone afterwards", () => {
  const r = probeFeature("clone3_set_tid")!;
  assert.ok(r.supported, r.detail);
  const pid = Number(/pid (\d+)/.exec(r.detail)![1]);
  assert.throws(() => Deno.statSync(`/proc/${pid}`));
});

Deno.test("probeFeature() is undefined for an unknown name", () => {
  assert.equal(probeFeature("no_such_feature"), undefined);
  assert.equal(findFeature("list"), undefined);
});

// --- the command ------------------------------------------------------------------------------------

Deno.test("criu check prints Looks good. and exits 0", async () => {
  const r = await criu(["check"]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(r.stdout, "Looks good.\n");
});

Deno.test("criu check --feature NAME exits 0 and says so for a supported feature", async () => {
  const r = await criu(["check", "--feature", "clone3_set_tid"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "clone3_set_tid is supported\n");
});

Deno.test("criu check --feature mem_dirty_track answers as the kernel does, and says why when not", async () => {
  const r = await criu(["check", "--feature", "mem_dirty_track"]);
  if (kernelAnswers().get("mem_dirty_track")) {
    assert.equal(r.code, 0, r.stdout);
    assert.equal(r.stdout, "mem_dirty_track is supported\n");
  } else {
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^mem_dirty_track is NOT supported: .*soft-dirty/);
  }
});

Deno.test("criu check --feature takes our names too", async () => {
  const r = await criu(["check", "--feature", "pagemap_scan_dirty_track", "--feature=ptrace_seize"]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(r.stdout, "pagemap_scan_dirty_track is supported\nptrace_seize is supported\n");
});

Deno.test("criu check --feature list prints every name on one line", async () => {
  const r = await criu(["check", "--feature", "list"]);
  assert.equal(r.code, 0);
  assert.deepEqual(r.stdout.trim().split(" "), featureNames());
});

Deno.test("criu check --feature with an unknown name exits 1 and lists the valid ones", async () => {
  const r = await criu(["check", "--feature", "bogus"]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /Unknown feature bogus/);
  assert.match(r.stderr, /clone3_set_tid/);
});

Deno.test("criu check --all lists what is missing and answers Looks good but", async () => {
  const sleepersBefore = probeChildrenAnywhere();
  const r = await criu(["check", "--all"]);
  assert.equal(r.code, 1);
  const lines = r.stdout.trim().split("\n");
  assert.match(lines.at(-1)!, /^Looks good but /);
  for (const name of ["mem_dirty_track", "net_diag_raw", "compat_cr"]) {
    assert.ok(
      lines.some((l) => l.startsWith(`${name} is NOT supported: `)),
      `${name} missing from:\n${r.stdout}`,
    );
  }
  assert.ok(!lines.some((l) => l.startsWith("clone3_set_tid")));
  const escaped = [...probeChildrenAnywhere()].filter((p) => !sleepersBefore.has(p));
  assert.deepEqual(escaped, []);
});

Deno.test("criu check --extra skips the experimental features", async () => {
  const r = await criu(["check", "--extra"]);
  assert.equal(r.code, 1);
  assert.doesNotMatch(r.stdout, /compat_cr/);
  assert.match(r.stdout, /net_diag_raw is NOT supported/);
});

Deno.test("criu check -v4 logs every result with how it was probed", async () => {
  const r = await criu(["check", "-v4"]);
  assert.equal(r.code, 0);
  assert.match(r.stderr, /clone3_set_tid \(core\): supported: /);
  assert.match(r.stderr, /ptrace_seize: probed by PTRACE_SEIZE/);
});

Deno.test("summarize() says Does not look good. when a core feature is missing", () => {
  const f = (name: string) => findFeature(name)!;
  const ok = { supported: true, detail: "fine" };
  const bad = { supported: false, detail: "broken" };
  const run = (pairs: [string, typeof ok][]) =>
    summarize(pairs.map(([n, result]) => ({ feature: f(n), result, ms: 0 })));
  assert.deepEqual(run([["ptrace_seize", bad], ["uffd", bad]]), {
    lines: ["ptrace_seize is NOT supported: broken", "uffd is NOT supported: broken", "Does not look good."],
    code: 1,
  });
  const maybe = run([["ptrace_seize", ok], ["uffd", bad]]);
  assert.equal(maybe.code, 1);
  assert.match(maybe.lines.at(-1)!, /^Looks good but /);
  assert.deepEqual(run([["ptrace_seize", ok], ["breakpoints", bad]]), {
    lines: ["breakpoints is NOT supported (optional): broken", "Looks good."],
    code: 0,
  });
});
