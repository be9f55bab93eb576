/**
 * User namespaces: a process in a user namespace of its own, with uid and gid maps and
 * credentials that differ inside and outside, through the usual matrix; the saved maps as crit
 * reads them; a tree of several tasks in a user namespace without a PID namespace of its own is
 * refused by name and runs on.
 */
import assert from "node:assert/strict";
import { criuOk } from "./lib/harness.ts";
import { refusedDump, registerMatrix, withWorkload } from "./lib/matrix.ts";

registerMatrix([{ name: "userns" }]);

Deno.test("crit decodes userns-ID.img: the uid and gid maps; the core holds the credentials seen inside", () =>
  withWorkload({ name: "userns" }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const files = [...Deno.readDirSync(images)].map((e) => e.name).filter((n) => /^userns-\d+\.img$/.test(n));
    assert.equal(files.length, 1, files.join(" "));
    const decode = async (file: string) => {
      const out = await new Deno.Command("crit", { args: ["decode", "-i", `${images}/${file}`] }).output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      return JSON.parse(new TextDecoder().decode(out.stdout)).entries[0];
    };
    const maps = await decode(files[0]!);
    const expected = [{ first: 0, lower_first: 0, count: 1 }, {
      first: 1000,
      lower_first: 101000,
      count: 1000,
    }];
    assert.deepEqual(maps.uid_map, expected);
    assert.deepEqual(maps.gid_map, expected);
    const creds = (await decode(`core-${w.pid}.img`)).thread_core.creds;
    assert.deepEqual([creds.uid, creds.gid, creds.egid, creds.groups], [0, 1000, 1000, [1000, 1001]]);
  }));

Deno.test("a tree of several tasks in a user namespace without a PID namespace of its own is refused by name, and runs on", () =>
  refusedDump(
    "userns",
    ["child"],
    /Cannot dump the user namespace user:\[\d+\] of process \d+: a tree of several tasks in a user namespace of its own comes back only with a PID namespace of its own too/,
  ));
