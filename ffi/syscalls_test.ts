import assert from "node:assert/strict";
import {
  ARCH,
  AT_FDCWD,
  CAP,
  IOV_MAX,
  MOVE_MOUNT_SET_GROUP,
  NGROUPS_MAX,
  NR,
  RLIM_NLIMITS,
  S,
  SIG,
  TFD_IOC_SET_TICKS,
} from "./syscalls.ts";
import { ACCESS } from "./probe.ts";
import { cFacts } from "../tests/lib/cfacts.ts";

Deno.test("every syscall number of NR is the one <sys/syscall.h> gives", async () => {
  const names = Object.keys(NR) as (keyof typeof NR)[];
  const f = await cFacts(["sys/syscall.h"], Object.fromEntries(names.map((n) => [n, `SYS_${n}`])));
  for (const n of names) assert.equal(NR[n], f[n], `NR.${n}`);
});

Deno.test("arch_prctl, move_mount and AT_FDCWD constants are the headers'", async () => {
  const f = await cFacts(["asm/prctl.h", "linux/mount.h", "fcntl.h"], {
    AT_FDCWD: "AT_FDCWD",
    ARCH_MAP_VDSO_64: "ARCH_MAP_VDSO_64",
    MOVE_MOUNT_SET_GROUP: "MOVE_MOUNT_SET_GROUP",
  });
  assert.equal(ARCH.MAP_VDSO_64, f.ARCH_MAP_VDSO_64);
  assert.equal(MOVE_MOUNT_SET_GROUP, f.MOVE_MOUNT_SET_GROUP);
  assert.equal(AT_FDCWD, f.AT_FDCWD);
});

Deno.test("file type, access, signal, capability and limit constants are the headers'", async () => {
  const f = await cFacts(["sys/stat.h", "unistd.h", "signal.h", "limits.h", "sys/resource.h"], {
    S_IFMT: "S_IFMT",
    S_IFSOCK: "S_IFSOCK",
    S_IFLNK: "S_IFLNK",
    S_IFREG: "S_IFREG",
    S_IFBLK: "S_IFBLK",
    S_IFDIR: "S_IFDIR",
    S_IFCHR: "S_IFCHR",
    S_IFIFO: "S_IFIFO",
    F_OK: "F_OK",
    X_OK: "X_OK",
    W_OK: "W_OK",
    R_OK: "R_OK",
    IOV_MAX: "IOV_MAX",
    NGROUPS_MAX: "NGROUPS_MAX",
    RLIM_NLIMITS: "RLIM_NLIMITS",
  });
  const sigs = await cFacts(
    ["signal.h"],
    Object.fromEntries(Object.keys(SIG).map((n) => [`SIG${n}`, `SIG${n}`])),
  );
  for (const n of Object.keys(S) as (keyof typeof S)[]) assert.equal(S[n], f[`S_${n}`], `S.${n}`);
  for (const n of Object.keys(ACCESS) as (keyof typeof ACCESS)[]) {
    assert.equal(ACCESS[n], f[n], `ACCESS.${n}`);
  }
  for (const n of Object.keys(SIG) as (keyof typeof SIG)[]) assert.equal(SIG[n], sigs[`SIG${n}`], `SIG.${n}`);
  assert.deepEqual([IOV_MAX, NGROUPS_MAX, RLIM_NLIMITS], [f.IOV_MAX, f.NGROUPS_MAX, f.RLIM_NLIMITS]);
});

Deno.test("capability numbers and TFD_IOC_SET_TICKS are the kernel headers'", async () => {
  const f = await cFacts(["linux/capability.h", "linux/timerfd.h"], {
    CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
    CAP_CHECKPOINT_RESTORE: "CAP_CHECKPOINT_RESTORE",
    TFD_IOC_SET_TICKS: "TFD_IOC_SET_TICKS",
  });
  assert.deepEqual([CAP.SYS_ADMIN, CAP.CHECKPOINT_RESTORE], [f.CAP_SYS_ADMIN, f.CAP_CHECKPOINT_RESTORE]);
  assert.equal(TFD_IOC_SET_TICKS, f.TFD_IOC_SET_TICKS);
});
