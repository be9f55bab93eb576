import assert from "node:assert/strict";
import {
  failed,
  failedWith,
  failureName,
  netlinkAnswer,
  openPath,
  rawSyscall,
  UFFD_FEATURE,
} from "./probe.ts";
import { closeFd } from "./fd.ts";
import { NR } from "./syscalls.ts";
import { cFacts } from "../tests/lib/cfacts.ts";

Deno.test("a failed probe call answers a SyscallError naming the errno, a successful one its result", () => {
  const missing = openPath("/nonexistent-criu-ts-probe", 0);
  assert.ok(failed(missing));
  assert.equal(failureName(missing), "ENOENT");
  assert.ok(failedWith(missing, "ENOENT"));
  assert.ok(!failedWith(missing, "EINVAL"));
  const range = rawSyscall(NR.close_range, 2, 1, 0); // first > last: refused, nothing closed
  assert.ok(failedWith(range, "EINVAL"));
  const fd = openPath("/", 0);
  assert.ok(!failed(fd));
  assert.equal(failureName(fd), undefined);
  closeFd(fd);
});

Deno.test("netlinkAnswer() names the kernel's -errno in an NLMSG_ERROR body and reads 0 as success", () => {
  const body = (code: number) => new Uint8Array(new Int32Array([code, 0, 0, 0, 0]).buffer);
  assert.ok(failedWith(netlinkAnswer("rtnetlink", body(-34)), "ERANGE"));
  assert.equal(netlinkAnswer("rtnetlink", body(0)), 0);
  assert.equal(netlinkAnswer("rtnetlink", new Uint8Array(2)), 0); // too short to hold an error: none
});

// Debian 12's headers (Linux 6.1) predate PAGEMAP_SCAN and the write-protect features: only the
// event bits can be checked against them here.
Deno.test("the UFFD_FEATURE event bits are <linux/userfaultfd.h>'s", async () => {
  const events = ["EVENT_FORK", "EVENT_REMAP", "EVENT_REMOVE", "EVENT_UNMAP"] as const;
  const f = await cFacts(
    ["linux/userfaultfd.h"],
    Object.fromEntries(events.map((name) => [name, `UFFD_FEATURE_${name}`])),
  );
  for (const name of events) assert.equal(Number(UFFD_FEATURE[name]), f[name], name);
});
