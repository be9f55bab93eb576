/**
 * The network tools CRIU runs inside a network namespace (`ip`, `nft`, `iptables-save`...), run
 * the same way: `nsenter --net=/proc/PID/ns/net` puts the tool in the namespace of PID, with the
 * image's bytes on its stdin or its stdout kept for the image. Like CRIU, CR_IP_TOOL names
 * another `ip`.
 */

export class NetToolError extends Error {
  override name = "NetToolError";
}

/** The argv of `ip` (CRIU's CR_IP_TOOL may name another one). */
export function ipTool(...args: string[]): string[] {
  return [Deno.env.get("CR_IP_TOOL") || "ip", ...args];
}

/**
 * Runs `argv` inside the network namespace of `pid` and returns its stdout. `input` goes to its
 * stdin (through a temporary file: the dump and the restore are synchronous code, ptrace stays on
 * one thread, so a pipe to the child could not be fed while it runs). A tool that fails throws a
 * NetToolError with what it said on stderr.
 */
export function runInNetns(pid: number, argv: readonly string[], input?: Uint8Array): Uint8Array {
  const inputFile = input ? Deno.makeTempFileSync({ prefix: "criu-ts-net-" }) : undefined;
  try {
    let args = [`--net=/proc/${pid}/ns/net`, "--", ...argv];
    if (inputFile) {
      Deno.writeFileSync(inputFile, input!);
      args = [
        `--net=/proc/${pid}/ns/net`,
        "--",
        "/bin/sh",
        "-c",
        'f=$1; shift; exec "$@" < "$f"',
        "sh",
        inputFile,
        ...argv,
      ];
    }
    let out: Deno.CommandOutput;
    try {
      out = new Deno.Command("nsenter", { args, stdin: "null", stdout: "piped", stderr: "piped" })
        .outputSync();
    } catch (e) {
      throw new NetToolError(`Cannot run ${argv.join(" ")}: ${(e as Error).message}`);
    }
    if (!out.success) {
      const said = new TextDecoder().decode(out.stderr).trim();
      throw new NetToolError(`${argv.join(" ")} failed (status ${out.code})${said ? `: ${said}` : ""}`);
    }
    return out.stdout;
  } finally {
    if (inputFile) Deno.removeSync(inputFile);
  }
}

/** Like runInNetns, for a tool that only prints: its output as text. */
export function textInNetns(pid: number, argv: readonly string[]): string {
  return new TextDecoder().decode(runInNetns(pid, argv));
}

/** `word` quoted for /bin/sh. */
function shellWord(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * Runs each of `argvs` in turn inside the network namespace of `pid`, each with `input` on its
 * stdin, through one nsenter and one shell, stopping at the first that fails. For the network
 * lock's small firewall edits, starting a process costs more than the edit: one start for all the
 * tools keeps them off a runtime's restore time.
 */
export function runEachInNetns(pid: number, argvs: readonly (readonly string[])[], input: Uint8Array): void {
  const inputFile = Deno.makeTempFileSync({ prefix: "criu-ts-net-" });
  try {
    Deno.writeFileSync(inputFile, input);
    const script = argvs.map((argv) => `${argv.map(shellWord).join(" ")} < "$1"`).join(" && ");
    runInNetns(pid, ["/bin/sh", "-c", script, "sh", inputFile]);
  } finally {
    Deno.removeSync(inputFile);
  }
}
