/**
 * Bytes queued in a pty of the tree, both ways (pty.ts): taken at the end of the dump into
 * tty-data.img as CRIU keeps them, put back when the tree goes on, and written into the other side
 * at restore, so each side reads them once, first. The workload reads them and checks the flow.
 */
import assert from "node:assert/strict";
import { criuOk } from "./lib/harness.ts";
import { debianCrit } from "./lib/tools.ts";
import { registerMatrix, withWorkload } from "./lib/matrix.ts";

registerMatrix([{ name: "pty", args: ["queued"] }]);

Deno.test("tty-data.img holds each side's queued bytes by its tty-info id, as CRIU (Debian's crit)", () =>
  withWorkload({ name: "pty", args: ["queued"] }, async (w, images) => {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-R"]);
    const out = await new Deno.Command(debianCrit(), {
      args: ["decode", "-i", `${images}/tty-data.img`],
      stdout: "piped",
    }).output();
    assert.equal(out.code, 0, "crit cannot decode tty-data.img");
    const entries = JSON.parse(new TextDecoder().decode(out.stdout)).entries as {
      tty_id: number;
      data: string;
    }[];
    const data = entries.map((e) => atob(e.data.replace(/\n/g, ""))).sort();
    assert.deepEqual(data, ["OUT", "q"]);
    const files = JSON.parse(
      new TextDecoder().decode(
        (await new Deno.Command(debianCrit(), {
          args: ["decode", "-i", `${images}/files.img`],
          stdout: "piped",
        })
          .output()).stdout,
      ),
    ).entries as { id: number; type: string; tty?: { tty_info_id: number } }[];
    for (const e of entries) {
      assert.ok(
        files.some((f) => f.tty?.tty_info_id === e.tty_id),
        `no terminal file has tty_info_id ${e.tty_id}`,
      );
    }
  }));
