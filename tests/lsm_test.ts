/**
 * --lsm-profile (LXC passes `apparmor:PROFILE` when its config names one): taken as CRIU 4.2 takes
 * it. On a host running neither AppArmor nor SELinux (this machine) `apparmor:` and `selinux:` are
 * refused with CRIU's reason before any process is touched, and `none:` dumps and restores; a
 * malformed value is refused by name. With CRIU_UPSTREAM set, CRIU is asked the same and must agree.
 */
import assert from "node:assert/strict";
import { criu, exists, reap, tempDir, waitFor, Workload } from "./lib/harness.ts";
import { hostLsm, lsmProfileProblem } from "../src/lsm.ts";
import { UPSTREAM } from "./lib/upstream.ts";

Deno.test("lsmProfileProblem() takes none: and no value, on any host", () => {
  for (const host of ["none", "apparmor", "selinux"] as const) {
    assert.equal(lsmProfileProblem(undefined, host), undefined);
    assert.equal(lsmProfileProblem("none:", host), undefined);
    assert.equal(lsmProfileProblem("none:anything", host), undefined);
  }
});

Deno.test("lsmProfileProblem() refuses a module the host does not run, with CRIU's reason", () => {
  assert.match(
    lsmProfileProblem("apparmor:unconfined", "none")!,
    /names apparmor, which this host does not run \(CRIU: apparmor LSM specified but apparmor not supported by kernel\)/,
  );
  assert.match(
    lsmProfileProblem("selinux:system_u:system_r:container_t:s0", "apparmor")!,
    /CRIU: selinux LSM specified but selinux not supported by kernel/,
  );
});

Deno.test("lsmProfileProblem() refuses a malformed value by name", () => {
  assert.match(
    lsmProfileProblem("bogus", "none")!,
    /^--lsm-profile bogus: expected TYPE:NAME.*invalid argument bogus/,
  );
  assert.match(
    lsmProfileProblem("foo:bar", "none")!,
    /expected TYPE one of apparmor, selinux, none, found foo/,
  );
});

Deno.test("lsmProfileProblem() says a profile of the host's own module is not supported yet", () => {
  assert.match(
    lsmProfileProblem("apparmor:lxc-container-default", "apparmor")!,
    /not supported by criu-ts yet/,
  );
});

/** What --lsm-profile apparmor:unconfined gets on this host, by criu-ts or by CRIU. */
function apparmorRefusal(): RegExp {
  return hostLsm() === "apparmor"
    ? /not supported by criu-ts yet/
    : /apparmor LSM specified but apparmor not supported by kernel/;
}

Deno.test("dump and restore with --lsm-profile: apparmor: refused before anything is touched, none: taken", async () => {
  const w = await Workload.start("counter");
  const images = tempDir();
  try {
    const refused = await criu([
      "dump",
      "-t",
      `${w.pid}`,
      "-D",
      images,
      "--lsm-profile",
      "apparmor:unconfined",
    ]);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, apparmorRefusal());
    assert.doesNotMatch(refused.stderr, /\n\s+at /, "a stack trace");
    assert.match(Deno.readTextFileSync(`/proc/${w.pid}/status`), /TracerPid:\s+0\n/);
    assert.deepEqual([...Deno.readDirSync(images)], [], "no checkpoint left");
    if (hostLsm() === "apparmor") return; // the rest is about a host without one, as this machine
    const dumped = await criu(["dump", "-t", `${w.pid}`, "-D", images, "--lsm-profile", "none:"]);
    assert.equal(dumped.code, 0, dumped.stderr);
    await reap(w.pid);
    for (const profile of ["apparmor:unconfined", "selinux:x", "bogus"]) {
      const r = await criu(["restore", "-D", images, "-d", "--lsm-profile", profile]);
      assert.equal(r.code, 1, `${profile}: ${r.stderr}`);
      assert.match(r.stderr, /--lsm-profile/);
      assert.ok(!exists(`/proc/${w.pid}`), `${profile}: a process left behind`);
    }
    const restored = await criu(["restore", "-D", images, "-d", "--lsm-profile", "none:"]);
    assert.equal(restored.code, 0, restored.stderr);
    await waitFor("the counter to run again", () => exists(`/proc/${w.pid}`));
    assert.equal(await w.finish(), "PASS");
  } finally {
    if (exists(`/proc/${w.pid}`)) await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test({
  name: "CRIU 4.x refuses and takes the same --lsm-profile values on this host",
  ignore: UPSTREAM === undefined,
  fn: async () => {
    const dir = tempDir();
    // No task has pid_max as its pid: CRIU checks the option before it looks for the tree.
    const noTask = Deno.readTextFileSync("/proc/sys/kernel/pid_max").trim();
    try {
      for (
        const [profile, expected] of [["apparmor:unconfined", apparmorRefusal()], [
          "foo:bar",
          /unknown lsm foo/,
        ]] as const
      ) {
        const out = await new Deno.Command(UPSTREAM!, {
          args: ["dump", "-t", noTask, "-D", dir, "-o", "dump.log", "--lsm-profile", profile],
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).output();
        assert.equal(out.code, 1);
        if (hostLsm() !== "apparmor" || profile !== "apparmor:unconfined") {
          assert.match(Deno.readTextFileSync(`${dir}/dump.log`), expected);
        }
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
