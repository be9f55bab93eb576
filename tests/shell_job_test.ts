/**
 * --shell-job: a program started by an interactive shell on a terminal is dumped with -j and
 * restored with -j on criu's terminal, in criu's session and foreground process group. The whole
 * scenario runs inside a real pty (util-linux `script`), with job control on, as a user would.
 */
import assert from "node:assert/strict";
import { CRIU, tempDir, workloadBin } from "./lib/harness.ts";

Deno.test("a shell job comes back on criu's terminal as its foreground group", async () => {
  const dir = tempDir();
  const result = `${dir}/shell_job.result`;
  const scenario = `${dir}/scenario.sh`;
  // A non-interactive bash on the pty: its background job shares its (foreground) group, and is
  // given the terminal explicitly (bash would give it /dev/null otherwise).
  Deno.writeTextFileSync(
    scenario,
    `term=$(tty)
"${await workloadBin("shell_job")}" "${result}" <"$term" &
pid=$!
while [ ! -e "${result}.ready" ]; do sleep 0.05; done
mkdir "${dir}/img"
"${CRIU}" dump -t $pid -D "${dir}/img" -j -o dump.log -v4 || exit 11
wait $pid 2>/dev/null
"${CRIU}" restore -D "${dir}/img" -j -o restore.log -v4 &
restorer=$!
until grep -q "Restored [0-9]* task" "${dir}/img/restore.log" 2>/dev/null; do sleep 0.05; done
kill -TERM $pid
wait $restorer
echo $? > "${dir}/restore.status"
`,
  );
  try {
    const out = await new Deno.Command("timeout", {
      args: ["60", "script", "-qec", `bash ${scenario}`, "/dev/null"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, text);
    assert.equal(Deno.readTextFileSync(result).trim(), "PASS", text);
    assert.equal(
      Deno.readTextFileSync(`${dir}/restore.status`).trim(),
      "0",
      "criu restore -j exits with the job's status",
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
