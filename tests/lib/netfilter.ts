/** What the network lock leaves in netfilter, for tests that check no lock outlives its use. */

/** What netfilter holds now: iptables and ip6tables rules, and the nft ruleset. */
function netfilterRules(): string {
  const run = (cmd: string, args: string[]) =>
    new TextDecoder().decode(
      new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).outputSync().stdout,
    );
  return run("iptables-save", []) + run("ip6tables-save", []) + run("nft", ["list", "ruleset"]);
}

/** Netfilter rules or tables of a network lock (CRIU's mark, table inet CRIU), one per line. */
export function lockRules(): string[] {
  return netfilterRules().split("\n").filter((l) => /0xc114|table inet CRIU/i.test(l));
}
