/**
 * Asks the C compiler about the system headers: each fact is a C expression (sizeof, offsetof, a
 * constant) compiled against `includes` and printed by a throwaway program. Tests use it to pin our
 * hand-written struct layouts and constants to what the kernel's UAPI headers say, instead of to a
 * second copy of the same numbers.
 */
export async function cFacts(
  includes: readonly string[],
  facts: Record<string, string>,
): Promise<Record<string, number>> {
  const dir = Deno.makeTempDirSync({ prefix: "criu-ts-cfacts-" });
  try {
    const lines = Object.entries(facts).map(([name, expr]) =>
      `\tprintf("%s %lld\\n", ${JSON.stringify(name)}, (long long)(${expr}));`
    );
    const source = [
      "#define _GNU_SOURCE",
      "#include <stdio.h>",
      "#include <stddef.h>",
      ...includes.map((h) => `#include <${h}>`),
      "int main(void)",
      "{",
      ...lines,
      "\treturn 0;",
      "}",
      "",
    ].join("\n");
    Deno.writeTextFileSync(`${dir}/facts.c`, source);
    const cc = await new Deno.Command("gcc", {
      args: ["-o", `${dir}/facts`, `${dir}/facts.c`],
      stderr: "piped",
    })
      .output();
    if (!cc.success) {
      throw new Error(`Compiling the header facts failed:\n${new TextDecoder().decode(cc.stderr)}`);
    }
    const run = await new Deno.Command(`${dir}/facts`, { stdout: "piped" }).output();
    if (!run.success) throw new Error(`The header facts program exited ${run.code}`);
    const out: Record<string, number> = {};
    for (const line of new TextDecoder().decode(run.stdout).trim().split("\n")) {
      const [name, value] = line.split(" ");
      out[name!] = Number(value);
    }
    return out;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}
