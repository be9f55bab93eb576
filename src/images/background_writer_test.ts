import assert from "node:assert/strict";
import { BackgroundWriter } from "./background_writer.ts";
import { isSyscallError } from "../../ffi/errors.ts";
import { pathExists } from "../../ffi/fd.ts";

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("BackgroundWriter has written every queued file when finish() returns", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const w = new BackgroundWriter();
    for (let i = 0; i < 100; i++) w.write(`${dir}/core-${i}.img`, text(`image ${i}`));
    // A view into a larger buffer is copied, not taken away from its owner.
    const shared = text("headimage tail");
    w.write(`${dir}/part.img`, shared.subarray(4, 9));
    w.finish();
    for (let i = 0; i < 100; i++) assert.equal(Deno.readTextFileSync(`${dir}/core-${i}.img`), `image ${i}`);
    assert.equal(Deno.readTextFileSync(`${dir}/part.img`), "image");
    assert.equal(shared.byteLength, 14);
    assert.equal(Deno.statSync(`${dir}/core-0.img`).mode! & 0o022, 0);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("BackgroundWriter names the first file it could not write and writes nothing after it", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const w = new BackgroundWriter();
    w.write(`${dir}/first.img`, text("a"));
    w.write(`${dir}/no-such-dir/core-7.img`, text("b"));
    w.write(`${dir}/after.img`, text("c"));
    assert.throws(
      () => w.finish(),
      (e: unknown) => isSyscallError(e, "ENOENT") && e.message.includes(`${dir}/no-such-dir/core-7.img`),
    );
    assert.ok(pathExists(`${dir}/first.img`));
    assert.ok(!pathExists(`${dir}/after.img`));
    w.finish(); // finished already: nothing to wait for
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
