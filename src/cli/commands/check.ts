/**
 * `criu check`: probes the kernel features criu-ts relies on (src/check/probes.ts) and says whether
 * this machine can checkpoint and restore.
 *
 *   criu check                   the core features: "Looks good." and 0, or what is missing and 1
 *   criu check --extra           also the features only some process trees need (--all: everything)
 *   criu check --feature NAME    one feature (CRIU's names and ours): 0 when supported, 1 otherwise
 *   criu check --feature list    the names --feature takes
 *
 * Verdicts and per-feature lines go to stdout; every result, with how it was probed, goes to the log
 * (-v3 and up, or the -o file).
 */
import type { CommandContext } from "./context.ts";
import { type Checked, featureNames, featuresFor, findFeature, runProbes } from "../../check/probes.ts";
import { summarize } from "../../check/summary.ts";

export { summarize } from "../../check/summary.ts";

function say(line: string): void {
  console.log(line);
}

function logResults(ctx: CommandContext, checked: readonly Checked[]): void {
  for (const { feature, result, ms } of checked) {
    const verdict = result.supported ? "supported" : "NOT supported";
    ctx.log.info(`${feature.name} (${feature.category}): ${verdict}: ${result.detail}`);
    ctx.log.debug(`${feature.name}: probed by ${feature.how} in ${ms.toFixed(1)} ms`);
  }
}

function checkNamed(ctx: CommandContext, names: readonly string[]): number {
  if (names.includes("list")) {
    say(featureNames().join(" "));
    return 0;
  }
  const unknown = names.filter((n) => !findFeature(n));
  if (unknown.length) {
    ctx.log.error(`Unknown feature ${unknown.join(", ")}; the known ones are: ${featureNames().join(", ")}`);
    return 1;
  }
  const checked = runProbes(names.map((n) => findFeature(n)!));
  logResults(ctx, checked);
  for (const { feature, result } of checked) {
    say(
      result.supported
        ? `${feature.name} is supported`
        : `${feature.name} is NOT supported: ${result.detail}`,
    );
  }
  return checked.every((c) => c.result.supported) ? 0 : 1;
}

function checkCategories(ctx: CommandContext, extra: boolean, experimental: boolean): number {
  const checked = runProbes(featuresFor({ extra, experimental }));
  logResults(ctx, checked);
  const { lines, code } = summarize(checked);
  lines.forEach(say);
  return code;
}

export function checkCommand(ctx: CommandContext): number {
  const o = ctx.options;
  if (o.features.length) return checkNamed(ctx, o.features);
  return checkCategories(ctx, o.checkExtra, o.checkExperimental);
}
