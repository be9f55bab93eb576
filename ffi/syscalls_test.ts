import assert from "node:assert/strict";
import { ARCH, AT_FDCWD, MOVE_MOUNT_SET_GROUP, NR } from "./syscalls.ts";
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
