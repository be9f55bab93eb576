import assert from "node:assert/strict";
import { failedWith, failureName, UFFD_FEATURE } from "./probe.ts";
import { cFacts } from "../tests/lib/cfacts.ts";

Deno.test("failureName() names a failed probe result and failedWith() matches it", () => {
  assert.equal(failureName(-22), "EINVAL");
  assert.equal(failureName(-38n), "ENOSYS");
  assert.equal(failureName(3), undefined);
  assert.ok(failedWith(-2, "ENOENT"));
  assert.ok(!failedWith(0, "ENOENT"));
  assert.ok(!failedWith(-22, "ENOENT"));
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
