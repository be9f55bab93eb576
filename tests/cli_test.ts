import assert from "node:assert/strict";
import { type ConfigEnvironment, configFileWords, GLOBAL_CONFIG_FILE } from "../src/cli/config.ts";
import { CRIU_VERSION, helpText, usageText, versionText } from "../src/cli/help.ts";
import { OPTION_TABLE } from "../src/cli/options.ts";
import { parseCommandLine, UsageError } from "../src/cli/parse.ts";
import { dumpArguments, restoreArguments } from "../src/options/core.ts";
import { getoptLong } from "../src/options/getopt.ts";
import { Log } from "../src/log.ts";
import { ScriptHooks } from "../src/actions/scripts.ts";
import { criuOk, reap, tempDir, Workload } from "./lib/harness.ts";
import { debianCrit } from "./lib/tools.ts";

/** A config environment with the given files and no variables set unless asked. */
function fakeEnv(
  files: Record<string, string> = {},
  vars: { home?: string; configFileEnv?: string } = {},
): ConfigEnvironment {
  return { home: vars.home, configFileEnv: vars.configFileEnv, readFile: (path) => files[path] };
}

function parse(...argv: string[]) {
  return parseCommandLine(argv, fakeEnv());
}

/** The message of the UsageError that fn throws. */
function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof UsageError) return error.message;
    throw error;
  }
  assert.fail("Expected a UsageError, got none");
}

const USER_FILE = "/home/u/.criu/default.conf";

// Short options.

Deno.test("parseCommandLine() bundles short flags", () => {
  const { options } = parse("-Rj", "dump", "-t", "1");
  assert.equal(options.finalState, "running");
  assert.equal(options.shellJob, true);
});

Deno.test("parseCommandLine() takes a short option's argument attached", () => {
  assert.equal(parse("dump", "-t1234").options.tree, 1234);
});

Deno.test("parseCommandLine() takes a short option's argument from the next word", () => {
  assert.equal(parse("dump", "-t", "1234").options.tree, 1234);
});

Deno.test("parseCommandLine() ends a bundle at an option taking an argument", () => {
  const attached = parse("dump", "-Rjt77").options;
  const separate = parse("dump", "-Rjt", "77").options;
  for (const options of [attached, separate]) {
    assert.equal(options.tree, 77);
    assert.equal(options.finalState, "running");
  }
});

Deno.test("parseCommandLine() takes a required argument even when it starts with a dash", () => {
  assert.equal(parse("dump", "-t1", "-D", "-R").options.imagesDir, "-R");
});

Deno.test("parseCommandLine() counts repeated v in -vvvv", () => {
  assert.equal(parse("check", "-vvvv").options.verbosity, 6);
});

Deno.test("parseCommandLine() raises verbosity by one for a bare -v", () => {
  assert.equal(parse("check", "-v").options.verbosity, 3);
});

Deno.test("parseCommandLine() sets verbosity from -vN", () => {
  assert.equal(parse("check", "-v4").options.verbosity, 4);
});

Deno.test("parseCommandLine() keeps the default verbosity of 2", () => {
  assert.equal(parse("check").options.verbosity, 2);
});

Deno.test("parseCommandLine() does not take an optional argument from the next word", () => {
  assert.match(usageError(() => parse("check", "-v", "4")), /Unexpected argument for check: '4'/);
});

// Long options.

Deno.test("parseCommandLine() takes a long option's argument after =", () => {
  assert.equal(parse("dump", "--tree=42").options.tree, 42);
});

Deno.test("parseCommandLine() takes a long option's argument from the next word", () => {
  assert.equal(parse("dump", "--tree", "42", "--images-dir", "/img").options.imagesDir, "/img");
});

Deno.test("parseCommandLine() sets verbosity from --verbosity=N", () => {
  assert.equal(parse("check", "--verbosity=4").options.verbosity, 4);
  assert.equal(parse("check", "--verbosity").options.verbosity, 3);
});

Deno.test("parseCommandLine() reads an optional long argument only after =", () => {
  assert.equal(parse("restore", "--manage-cgroups=full").options.manageCgroups, "full");
  assert.equal(parse("restore", "--manage-cgroups").options.manageCgroups, "soft");
  assert.match(usageError(() => parse("--manage-cgroups", "full", "restore")), /Unknown command 'full'/);
});

Deno.test("parseCommandLine() negates a boolean option with --no-", () => {
  assert.equal(parse("restore", "--no-restore-detached").options.restoreDetached, false);
});

Deno.test("parseCommandLine() lets the last of --opt and --no-opt win", () => {
  assert.equal(parse("restore", "--no-shell-job", "--shell-job").options.shellJob, true);
  assert.equal(parse("restore", "-j", "--no-shell-job").options.shellJob, false);
});

Deno.test("parseCommandLine() accepts an unambiguous prefix of a long option", () => {
  assert.equal(parse("dump", "-t1", "--leave-run").options.finalState, "running");
});

Deno.test("parseCommandLine() refuses an ambiguous prefix of a long option", () => {
  assert.match(
    usageError(() => parse("dump", "--tls-c=x")),
    /Ambiguous option --tls-c: could be --tls-cacert/,
  );
});

Deno.test("parseCommandLine() treats --daemon as --restore-detached and -d", () => {
  assert.equal(parse("restore", "--daemon").options.restoreDetached, true);
  assert.equal(parse("restore", "-d").options.restoreDetached, true);
});

Deno.test("parseCommandLine() collects repeatable options in order", () => {
  const { options } = parse(
    "restore",
    "--action-script",
    "/a",
    "--action-script=/b",
    "--external",
    "dev[x]:/dev/y",
    "--external=veth[eth0]:v1",
  );
  assert.deepEqual(options.actionScripts, ["/a", "/b"]);
  assert.deepEqual(options.external, ["dev[x]:/dev/y", "veth[eth0]:v1"]);
});

// Commands and positionals.

Deno.test("parseCommandLine() finds the command among options (permutation)", () => {
  const { command, options } = parse("-D", "/img", "-t", "9", "dump", "-R", "-o", "dump.log");
  assert.equal(command, "dump");
  assert.equal(options.imagesDir, "/img");
  assert.equal(options.logFile, "dump.log");
});

Deno.test("parseCommandLine() keeps the words after the command", () => {
  const { command, positionals } = parse("swrk", "3");
  assert.equal(command, "swrk");
  assert.deepEqual(positionals, ["3"]);
});

Deno.test("parseCommandLine() stops reading options at --", () => {
  assert.match(usageError(() => parse("dump", "-t1", "--", "-R")), /Unexpected argument for dump: '-R'/);
});

Deno.test("parseCommandLine() treats a lone dash as a word", () => {
  assert.match(usageError(() => parse("dump", "-")), /Unexpected argument for dump: '-'/);
});

Deno.test("parseCommandLine() reads cpuinfo's action as part of the command", () => {
  assert.equal(parse("cpuinfo", "check").command, "cpuinfo check");
  assert.match(usageError(() => parse("cpuinfo")), /needs an action: dump or check/);
  assert.match(usageError(() => parse("cpuinfo", "show")), /Unknown cpuinfo action 'show'/);
});

Deno.test("parseCommandLine() requires a command", () => {
  assert.match(usageError(() => parse("-v4")), /A command is required/);
});

Deno.test("parseCommandLine() refuses an unknown command", () => {
  assert.match(usageError(() => parse("freeze")), /Unknown command 'freeze'/);
});

Deno.test("parseCommandLine() explains the retired exec and show commands", () => {
  assert.match(usageError(() => parse("show")), /crit decode/);
  assert.match(usageError(() => parse("exec")), /Compel/);
});

Deno.test("parseCommandLine() requires exactly one fd for swrk", () => {
  assert.match(usageError(() => parse("swrk")), /Usage: criu swrk FD/);
  assert.match(usageError(() => parse("swrk", "3", "4")), /Usage: criu swrk FD/);
  assert.match(usageError(() => parse("swrk", "x")), /Usage: criu swrk FD/);
});

// Errors.

Deno.test("parseCommandLine() names an unknown long option", () => {
  assert.match(usageError(() => parse("dump", "--frobnicate")), /Unknown option --frobnicate/);
});

Deno.test("parseCommandLine() names an unknown short option", () => {
  assert.match(usageError(() => parse("dump", "-Rq")), /Unknown option -q/);
});

Deno.test("parseCommandLine() names an option whose argument is missing", () => {
  assert.match(usageError(() => parse("dump", "-t")), /Option -t requires an argument/);
  assert.match(usageError(() => parse("dump", "--images-dir")), /Option --images-dir requires an argument/);
});

Deno.test("parseCommandLine() refuses an argument given to a flag", () => {
  assert.match(
    usageError(() => parse("dump", "--leave-running=yes")),
    /--leave-running does not take an argument/,
  );
});

Deno.test("parseCommandLine() requires numbers to be numbers", () => {
  assert.match(
    usageError(() => parse("dump", "--tree=12abc")),
    /Invalid argument for --tree: expected a positive integer, found '12abc'/,
  );
  assert.match(usageError(() => parse("dump", "-t0")), /Invalid argument for -t/);
  assert.match(
    usageError(() => parse("page-server", "--port", "70000")),
    /--port: expected an integer from 1 to 65535/,
  );
  assert.match(usageError(() => parse("dump", "-t1", "--timeout", "soon")), /--timeout/);
  assert.match(usageError(() => parse("check", "-vx")), /Invalid argument for -v/);
});

Deno.test("parseCommandLine() checks enumerated values", () => {
  assert.match(
    usageError(() => parse("restore", "--manage-cgroups=most")),
    /expected one of none, props, soft/,
  );
  assert.match(usageError(() => parse("dump", "-t1", "--network-lock", "pf")), /--network-lock/);
  assert.match(usageError(() => parse("pre-dump", "-t1", "--pre-dump-mode=copy")), /splice, read/);
  assert.match(usageError(() => parse("dump", "-t1", "--file-validation=md5")), /filesize, buildid/);
  assert.match(usageError(() => parse("restore", "--empty-ns=pid")), /--empty-ns: expected one of net/);
});

Deno.test("parseCommandLine() maps --network-lock none to skip", () => {
  assert.equal(parse("dump", "-t1", "--network-lock=none").options.networkLock, "skip");
});

Deno.test("parseCommandLine() reads --ghost-limit sizes with suffixes", () => {
  assert.equal(parse("dump", "-t1", "--ghost-limit", "64K").options.ghostLimit, 65536);
  assert.equal(parse("dump", "-t1", "--ghost-limit", "2M").options.ghostLimit, 2 << 20);
  assert.equal(parse("dump", "-t1").options.ghostLimit, 1 << 20);
});

Deno.test("parseCommandLine() reads --cpu-cap lists", () => {
  assert.deepEqual(parse("dump", "-t1", "--cpu-cap").options.cpuCaps, {
    fpu: true,
    cpu: true,
    ins: true,
    image: true,
  });
  assert.deepEqual(parse("dump", "-t1", "--cpu-cap=none").options.cpuCaps, {
    fpu: false,
    cpu: false,
    ins: false,
    image: false,
  });
  assert.deepEqual(parse("dump", "-t1", "--cpu-cap=^fpu,cpu").options.cpuCaps, {
    fpu: false,
    cpu: true,
    ins: true,
    image: true,
  });
  assert.match(usageError(() => parse("dump", "-t1", "--cpu-cap=gpu")), /--cpu-cap/);
});

Deno.test("parseCommandLine() reads ext-unix-sk with and without inodes", () => {
  assert.equal(parse("dump", "-t1", "-x").options.extUnixSk, true);
  assert.deepEqual(parse("dump", "-t1", "-x123,456").options.extUnixSkInodes, [123, 456]);
  assert.deepEqual(parse("dump", "-t1", "--ext-unix-sk=7").options.extUnixSkInodes, [7]);
});

Deno.test("parseCommandLine() splits --ext-mount-map, --veth-pair and --cgroup-root", () => {
  const { options } = parse(
    "restore",
    "-M",
    "auto",
    "--ext-mount-map",
    "/mnt:ext1",
    "--veth-pair",
    "eth0=veth9",
    "--cgroup-root",
    "cpu:/a",
    "--cgroup-root",
    "/b",
  );
  assert.equal(options.autoDetectExtMounts, true);
  assert.deepEqual(options.extMountMaps, [{ key: "/mnt", value: "ext1" }]);
  assert.deepEqual(options.vethPairs, [{ inside: "eth0", outside: "veth9" }]);
  assert.deepEqual(options.cgroupRoots, [{ controller: "cpu", path: "/a" }, { path: "/b" }]);
  assert.match(
    usageError(() => parse("restore", "--veth-pair", "eth0")),
    /--veth-pair: expected INSIDE=OUTSIDE/,
  );
  // An empty value, as CRIU takes it (LXC's restore passes `console:` without a console).
  assert.deepEqual(parse("restore", "-M", "console:").options.extMountMaps, [{ key: "console", value: "" }]);
  assert.match(usageError(() => parse("restore", "-M", ":x")), /-M: expected KEY:VALUE or auto, found .:x./);
});

// Support levels.

Deno.test("parseCommandLine() refuses an option criu-ts does not implement", () => {
  assert.match(usageError(() => parse("restore", "-d", "--exec-cmd")), /--exec-cmd is not supported/);
  assert.match(usageError(() => parse("dump", "-t1", "--stream")), /--stream is not supported/);
});

Deno.test("parseCommandLine() accepts a refused option turned off", () => {
  assert.equal(parse("restore", "--no-restore-sibling").options.restoreSibling, false);
});

Deno.test("parseCommandLine() refuses the deprecated --ms", () => {
  assert.match(usageError(() => parse("check", "--ms")), /--ms is not supported.*deprecated/);
});

Deno.test("parseCommandLine() notes options accepted but not acted on", () => {
  const { notes } = parse("dump", "-t1", "--auto-dedup", "--force-irmap", "-D", "/img");
  assert.deepEqual(notes, [
    "Option --auto-dedup is accepted but not acted on yet",
    "Option --force-irmap is accepted but not acted on yet",
  ]);
});

Deno.test("parseCommandLine() does not note an accepted option that was turned off", () => {
  assert.deepEqual(parse("dump", "-t1", "--auto-dedup", "--no-auto-dedup").notes, []);
});

// Help and version.

Deno.test("parseCommandLine() answers -h before anything else", () => {
  const env = fakeEnv({ [GLOBAL_CONFIG_FILE]: 'work-dir "broken' });
  const { command, options } = parseCommandLine(["--bogus", "-h"], env);
  assert.equal(command, undefined);
  assert.equal(options.help, true);
});

Deno.test("parseCommandLine() answers -V without a command", () => {
  const { command, options } = parse("-V");
  assert.equal(command, undefined);
  assert.equal(options.version, true);
});

Deno.test("parseCommandLine() stops at -V as getopt does", () => {
  assert.equal(parse("-V", "--bogus").options.version, true);
  assert.match(usageError(() => parse("--bogus", "-V")), /Unknown option --bogus/);
});

// Config files.

Deno.test("parseCommandLine() reads the default config files, user after global", () => {
  const env = fakeEnv({
    [GLOBAL_CONFIG_FILE]: "tcp-established\nwork-dir /global\nlog-file global.log\n",
    [USER_FILE]: "work-dir /user\n",
  }, { home: "/home/u" });
  const { options } = parseCommandLine(["dump", "-t1"], env);
  assert.equal(options.tcpEstablished, true);
  assert.equal(options.workDir, "/user");
  assert.equal(options.logFile, "global.log");
});

Deno.test("parseCommandLine() lets the command line override config files", () => {
  const env = fakeEnv({ [GLOBAL_CONFIG_FILE]: "shell-job\nimages-dir /conf\n" });
  const { options } = parseCommandLine(["dump", "-t1", "--no-shell-job", "-D", "/cli"], env);
  assert.equal(options.shellJob, false);
  assert.equal(options.imagesDir, "/cli");
});

Deno.test("parseCommandLine() reads CRIU_CONFIG_FILE after the default files", () => {
  const env = fakeEnv({
    [GLOBAL_CONFIG_FILE]: "work-dir /global\n",
    "/env.conf": "work-dir /env\n",
  }, { configFileEnv: "/env.conf" });
  assert.equal(parseCommandLine(["dump", "-t1"], env).options.workDir, "/env");
});

Deno.test("parseCommandLine() reads --config after CRIU_CONFIG_FILE and skips the defaults", () => {
  const env = fakeEnv({
    [GLOBAL_CONFIG_FILE]: "tcp-close\n",
    "/env.conf": "work-dir /env\nlog-file env.log\n",
    "/cli.conf": "work-dir /cli\n",
  }, { configFileEnv: "/env.conf" });
  const { options } = parseCommandLine(["dump", "-t1", "--config", "/cli.conf"], env);
  assert.equal(options.workDir, "/cli");
  assert.equal(options.logFile, "env.log");
  assert.equal(options.tcpClose, false);
  assert.equal(options.config, "/cli.conf");
});

Deno.test("parseCommandLine() skips the default config files with --no-default-config", () => {
  const env = fakeEnv({
    [GLOBAL_CONFIG_FILE]: "tcp-close\n",
    [USER_FILE]: "tcp-close\n",
    "/env.conf": "link-remap\n",
  }, { home: "/home/u", configFileEnv: "/env.conf" });
  const { options } = parseCommandLine(["dump", "-t1", "--no-default-config"], env);
  assert.equal(options.tcpClose, false);
  assert.equal(options.linkRemap, true);
});

Deno.test("parseCommandLine() skips the user config file when HOME is unset", () => {
  const env = fakeEnv({ [USER_FILE]: "tcp-close\n" });
  assert.equal(parseCommandLine(["dump", "-t1"], env).options.tcpClose, false);
});

Deno.test("parseCommandLine() notes a missing --config file", () => {
  const { notes } = parseCommandLine(["check", "--config=/nope.conf"], fakeEnv());
  assert.deepEqual(notes, ["Config file /nope.conf does not exist; ignored"]);
});

Deno.test("parseCommandLine() names the config file of a bad option", () => {
  const env = fakeEnv({ [GLOBAL_CONFIG_FILE]: "tree abc\n" });
  assert.match(
    usageError(() => parseCommandLine(["check"], env)),
    /Invalid argument for --tree: .* \(config file \/etc\/criu\/default\.conf\)/,
  );
});

Deno.test("parseCommandLine() ignores and notes a value given to an optional option in a config file", () => {
  const env = fakeEnv({ [GLOBAL_CONFIG_FILE]: "verbosity 4\n" });
  const { options, notes } = parseCommandLine(["check"], env);
  assert.equal(options.verbosity, 3);
  assert.match(notes[0] ?? "", /ignored '4'/);
});

Deno.test("parseCommandLine() lets the command line turn off a refused option a config file set", () => {
  const env = fakeEnv({ [GLOBAL_CONFIG_FILE]: "stream\n" });
  assert.equal(parseCommandLine(["dump", "-t1", "--no-stream"], env).options.stream, false);
  assert.match(usageError(() => parseCommandLine(["dump", "-t1"], env)), /--stream is not supported/);
});

Deno.test("configFileWords() turns lines into option words", () => {
  const text = [
    "# a comment",
    "",
    "   tcp-established",
    "no-restore-sibling   # a trailing comment",
    "verbosity=4",
    "work-dir /w # comment",
    "\tlog-file\tx.log",
  ].join("\n");
  assert.deepEqual(configFileWords(text, "f"), [
    "--tcp-established",
    "--no-restore-sibling",
    "--verbosity=4",
    "--work-dir",
    "/w",
    "--log-file",
    "x.log",
  ]);
});

Deno.test("configFileWords() reads quoted values with escaped quotes", () => {
  const text = 'work-dir "/home/u/my \\"work\\" dir"  # comment\nlsm-profile ""\nroot "a\\b"';
  assert.deepEqual(configFileWords(text, "f"), [
    "--work-dir",
    '/home/u/my "work" dir',
    "--lsm-profile",
    "",
    "--root",
    "a\\b",
  ]);
});

Deno.test("configFileWords() refuses an unterminated quote", () => {
  assert.match(
    usageError(() => configFileWords('\n\nwork-dir "/w', "/c.conf")),
    /^Config file \/c\.conf, line 3: /,
  );
  assert.match(usageError(() => configFileWords('work-dir "', "/c.conf")), /unterminated/);
});

Deno.test("configFileWords() refuses two values on a line", () => {
  assert.match(
    usageError(() => configFileWords("work-dir /a /b", "f")),
    /expected one value after --work-dir/,
  );
  assert.match(usageError(() => configFileWords('work-dir "/a" /b', "f")), /unexpected '\/b'/);
});

// Exactly as glibc's getopt_long reads CRIU's table.

Deno.test("parseCommandLine() reads -verbosity=0 as -v with the argument 'erbosity=0', level 0 as in CRIU", () => {
  const { options, notes } = parse("check", "-verbosity=0", "--feature", "mnt_id");
  assert.equal(options.verbosity, 0);
  assert.deepEqual(options.features, ["mnt_id"]);
  assert.match(notes.join("\n"), /-verbosity=0 is -v with the argument 'erbosity=0'/);
});

Deno.test("parseCommandLine() reads -verbosity=4 as level 0, as CRIU's atoi does", () => {
  assert.equal(parse("check", "-verbosity=4").options.verbosity, 0);
});

Deno.test("parseCommandLine() adds one more than the length of a -v argument starting with v", () => {
  assert.equal(parse("check", "-vvx").options.verbosity, 5);
});

Deno.test("parseCommandLine() counts -v given several times", () => {
  // 2, then one for each -v, and two for -vv (the argument "v" counts one more than its length).
  assert.equal(parse("check", "-v", "-v", "-vv").options.verbosity, 6);
});

Deno.test("parseCommandLine() takes -v's optional argument inside a bundle", () => {
  const { options } = parse("dump", "-t1", "-Rv4");
  assert.equal(options.finalState, "running");
  assert.equal(options.verbosity, 4);
});

Deno.test("parseCommandLine() does not take a long option's optional argument from the next word", () => {
  assert.match(usageError(() => parse("check", "--verbosity", "4")), /Unexpected argument for check: '4'/);
});

Deno.test("parseCommandLine() takes -- as a required argument, as getopt does", () => {
  assert.equal(parse("dump", "-t1", "-D", "--").options.imagesDir, "--");
  assert.equal(parse("dump", "-t1", "--images-dir", "--").options.imagesDir, "--");
});

Deno.test("parseCommandLine() takes an empty value after =", () => {
  assert.equal(parse("dump", "-t1", "--log-file=").options.logFile, "");
});

Deno.test("parseCommandLine() accepts a prefix of a --no- form", () => {
  assert.equal(parse("dump", "-t1", "-j", "--no-shell").options.shellJob, false);
});

Deno.test("parseCommandLine() accepts a prefix that only one option starts with", () => {
  assert.equal(parse("dump", "-t1", "--tcp-e").options.tcpEstablished, true);
  assert.equal(parse("restore", "--restore-s").options.restoreSibling, true);
});

Deno.test("parseCommandLine() refuses a prefix several options start with, naming them", () => {
  assert.match(
    usageError(() => parse("dump", "-t1", "--tcp")),
    /Ambiguous option --tcp: could be --tcp-established, --tcp-close$/,
  );
  assert.match(
    usageError(() => parse("dump", "-t1", "--ext")),
    /could be --external, --ext-unix-sk, --ext-mount-map, --extra$/,
  );
});

Deno.test("parseCommandLine() reads options after the command and its words (GNU permutation)", () => {
  const { command, positionals, options } = parse("swrk", "3", "-v4");
  assert.equal(command, "swrk");
  assert.deepEqual(positionals, ["3"]);
  assert.equal(options.verbosity, 4);
});

Deno.test("parseCommandLine() stops at the first word with POSIXLY_CORRECT, as glibc does", () => {
  const env = { ...fakeEnv(), posixlyCorrect: true };
  assert.match(
    usageError(() => parseCommandLine(["dump", "-t1"], env)),
    /Unexpected argument for dump: '-t1'/,
  );
  assert.equal(parseCommandLine(["-t1", "dump"], env).options.tree, 1);
});

Deno.test("parseCommandLine() answers -h even after -- or as a value, as CRIU's pre-parse does", () => {
  assert.equal(parse("restore", "--", "-h").options.help, true);
  assert.equal(parse("dump", "-D", "-h").options.help, true);
});

Deno.test("parseCommandLine() agrees with CRIU's short option string", () => {
  // criu/config.c: "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:"
  const criu = "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:";
  const expected = new Map<string, string>();
  for (const m of criu.matchAll(/([A-Za-z])(:{0,2})/g)) {
    expected.set(m[1]!, ["none", "required", "optional"][m[2]!.length]!);
  }
  const ours = new Map(OPTION_TABLE.filter((s) => s.short !== "").map((s) => [s.short, s.arg]));
  assert.deepEqual(ours, expected);
});

/**
 * glibc's own getopt_long, built with CRIU's short option string and our long options, as an
 * independent reader: one line per option (`-t=5`, `--leave-running`), then `word W` for each
 * word left, or `error` at the first malformed word (where CRIU stops).
 */
async function buildGlibcGetopt(dir: string): Promise<string> {
  const c = (text: string) => JSON.stringify(text);
  const longs = OPTION_TABLE.flatMap((s) =>
    s.arg === "none" && s.negatable ? [[s.long, s.arg], [`no-${s.long}`, s.arg]] : [[s.long, s.arg]]
  );
  const rows = longs.map(([name, arg]) =>
    `{ ${c(name!)}, ${
      { none: "no_argument", required: "required_argument", optional: "optional_argument" }[arg!]
    }, 0, 0 }`
  );
  const source = `#include <getopt.h>
#include <stdio.h>
static struct option longs[] = { ${rows.join(",\n")}, { 0, 0, 0, 0 } };
int main(int argc, char **argv) {
	int idx, c, i;
	opterr = 0;
	for (i = 0; longs[i].name; i++) longs[i].val = 1000 + i;
	while ((c = getopt_long(argc, argv, "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:", longs, &idx)) != -1) {
		if (c == '?' || c == ':') { printf("error\\n"); return 0; }
		if (c >= 1000) printf("--%s", longs[c - 1000].name); else printf("-%c", c);
		if (optarg) printf("=%s", optarg);
		printf("\\n");
	}
	for (i = optind; i < argc; i++) printf("word %s\\n", argv[i]);
	return 0;
}
`;
  Deno.writeTextFileSync(`${dir}/getopt.c`, source);
  const out = await new Deno.Command("gcc", {
    args: ["-o", `${dir}/getopt`, `${dir}/getopt.c`],
    stderr: "piped",
  })
    .output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return `${dir}/getopt`;
}

function ourTrace(words: string[], posixlyCorrect: boolean): string {
  const scan = getoptLong(words, { posixlyCorrect });
  const lines = scan.occurrences.map((o) => o.display + (o.value === undefined ? "" : `=${o.value}`));
  if (scan.error !== undefined) return [...lines, "error"].join("\n") + "\n";
  return [...lines, ...scan.positionals.map((w) => `word ${w}`)].map((l) => `${l}\n`).join("");
}

Deno.test("getoptLong() reads words exactly as glibc's getopt_long does with CRIU's table", async () => {
  const dir = tempDir();
  try {
    const glibc = await buildGlibcGetopt(dir);
    const cases: [string[], boolean][] = [
      ["-Rjt5 dump", "dump -t 5 -v", "-vvv check", "-verbosity=0 check --feature x", "-v 4", "--verbosity 4"],
      ["--verbosity=4", "--leave-r", "--tcp", "--ext", "--no-shell", "--no-tcp-e", "--tls-c=x", "-D --"],
      ["--images-dir -- x", "-- -R", "- -R", "-t", "--tree", "--leave-running=1", "-q", "--bogus", "-Rq"],
      ["-x5 -x 6", "--ext-unix-sk=7", "--cpu-cap x", "--cpu-cap=", "swrk 3 -v4", "--tree= x", "--d", "--da"],
      ["--no-d", "--no-da", "-dSsR", "--lazy", "--l", "-o -v", "restore --exec-cmd -- ls -l", "--help=x"],
      ["--daemon --no-daemon", "--manage-cgroups full", "--feature=x --feature y", "-hV", "--config"],
      ["--no-default-config=x", "--enable-ext", "--enable-external-s", "--tls-no", "--al", "-W", "-Wx -L y"],
    ].flat().map((line) => [line.split(" "), false]);
    cases.push([["dump", "-t1"], true], [["-t1", "dump", "-R"], true]);
    for (const [words, posixly] of cases) {
      const env = posixly ? { POSIXLY_CORRECT: "1" } : {};
      const out = await new Deno.Command(glibc, { args: words, env, clearEnv: true, stdout: "piped" })
        .output();
      assert.equal(ourTrace(words, posixly), new TextDecoder().decode(out.stdout), words.join(" "));
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("OPTION_TABLE has CRIU's long options, each once, with CRIU's argument kinds", () => {
  // criu/config.c, parse_options(): long_opts; "bool" are its BOOL_OPT pairs (NAME and no-NAME).
  const criu: Record<string, string[]> = {
    bool: [
      "restore-detached",
      "restore-sibling",
      "daemon",
      "tcp-established",
      "log-pid",
      "evasive-devices",
      "link-remap",
      "shell-job",
      "file-locks",
      "page-server",
      "track-mem",
      "auto-dedup",
      "force-irmap",
      "extra",
      "experimental",
      "skip-in-flight",
      "deprecated",
      "display-stats",
      "weak-sysctls",
      "tcp-close",
      "stream",
      "tls",
      "skip-file-rwx-check",
      "mntns-compat-mode",
      "unprivileged",
      "ghost-fiemap",
      "allow-uprobes",
    ],
    no: [
      "leave-stopped",
      "leave-running",
      "help",
      "version",
      "ms",
      "exec-cmd",
      "enable-external-sharing",
      "enable-external-masters",
      "lazy-pages",
      "all",
      "no-default-config",
      "tls-no-cn-verify",
    ],
    required: [
      "tree",
      "images-dir",
      "work-dir",
      "log-file",
      "join-ns",
      "root",
      "close",
      "pidfile",
      "veth-pair",
      "action-script",
      "address",
      "port",
      "prev-images-dir",
      "libdir",
      "ext-mount-map",
      "cgroup-root",
      "inherit-fd",
      "feature",
      "skip-mnt",
      "enable-fs",
      "freeze-cgroup",
      "ghost-limit",
      "irmap-scan-path",
      "lsm-profile",
      "timeout",
      "external",
      "empty-ns",
      "cgroup-props",
      "cgroup-props-file",
      "cgroup-dump-controller",
      "status-fd",
      "ps-socket",
      "config",
      "tls-cacert",
      "tls-cacrl",
      "tls-cert",
      "tls-key",
      "cgroup-yard",
      "pre-dump-mode",
      "file-validation",
      "lsm-mount-context",
      "network-lock",
    ],
    optional: [
      "ext-unix-sk",
      "cpu-cap",
      "manage-cgroups",
      "verbosity",
    ],
  };
  const kind = (s: (typeof OPTION_TABLE)[number]) => s.arg === "none" ? (s.negatable ? "bool" : "no") : s.arg;
  const ours = OPTION_TABLE.map((s) => `${s.long} ${kind(s)}`).sort();
  const theirs = Object.entries(criu).flatMap(([k, names]) => names.map((n) => `${n} ${k}`)).sort();
  assert.deepEqual(ours, theirs);
});

Deno.test("parseCommandLine() notes an option that does nothing for the command, and does not refuse it", () => {
  const { notes } = parse("dump", "-t1", "--root", "/r", "--restore-detached");
  assert.deepEqual(notes, [
    "Option --root does nothing for dump; ignored",
    "Option --restore-detached does nothing for dump; ignored",
  ]);
});

Deno.test("parseCommandLine() refuses -s for a restore, which cannot leave the tasks stopped yet", () => {
  assert.equal(parse("dump", "-t1", "-s").options.finalState, "stopped");
  assert.match(
    usageError(() => parse("restore", "-s")),
    /Option -s is not supported by criu-ts yet for restore/,
  );
});

Deno.test("parseCommandLine() refuses --track-mem for a dump by its table row", () => {
  assert.match(
    usageError(() => parse("dump", "-t1", "--track-mem")),
    /Option --track-mem is not supported by criu-ts yet \(iterative migration\)/,
  );
});

Deno.test("parseCommandLine() reads the options of the coming issues into the options object", () => {
  const { options, notes } = parse(
    "dump",
    "-t1",
    "--tcp-established",
    "--ext-unix-sk=5",
    "--tcp-close",
    "--skip-in-flight",
    "--network-lock=nftables",
    "--link-remap",
    "--evasive-devices",
    "--file-locks",
    "--ghost-limit=2M",
    "--external=dev[1/2]:x",
    "-L",
    "/plugins",
    "--manage-cgroups=full",
  );
  assert.deepEqual(
    [options.tcpEstablished, options.extUnixSkInodes, options.tcpClose, options.skipInFlight],
    [true, [5], true, true],
  );
  assert.deepEqual(
    [options.networkLock, options.linkRemap, options.evasiveDevices, options.fileLocks, options.ghostLimit],
    ["nftables", true, true, true, 2 << 20],
  );
  assert.deepEqual([options.external, options.libdir, options.manageCgroups], [
    ["dev[1/2]:x"],
    "/plugins",
    "full",
  ]);
  // Every option of this command line is acted on now: none is noted as accepted only.
  assert.deepEqual(
    notes.map((n) => /--([a-z-]+)/.exec(n)?.[1]).sort(),
    [],
    notes.join("\n"),
  );
  assert.ok(notes.every((n) => n.endsWith("is accepted but not acted on yet")), notes.join("\n"));
  const restore = parse("restore", "--veth-pair", "a=b", "--cgroup-root", "/c").options;
  assert.deepEqual([restore.vethPairs, restore.cgroupRoots], [[{ inside: "a", outside: "b" }], [{
    path: "/c",
  }]]);
  assert.deepEqual(parse("restore", "--inherit-fd", "fd[3]:x").options.inheritFds, [
    { fd: 3, resource: "x", debug: false },
  ]);
  // --root is acted on since mount namespaces are restored.
  assert.equal(parse("restore", "--root", "/r").options.root, "/r");
});

Deno.test("parseCommandLine() reads a config file with the same table: prefixes and all", () => {
  const env = fakeEnv({ "/c.conf": "leave-r\ntcp-e\n" });
  const { options } = parseCommandLine(["dump", "-t1", "--config=/c.conf"], env);
  assert.equal(options.finalState, "running");
  assert.equal(options.tcpEstablished, true);
  assert.match(
    usageError(() =>
      parseCommandLine(["dump", "-t1", "--config", "/c.conf"], fakeEnv({ "/c.conf": "tcp\n" }))
    ),
    /Ambiguous option --tcp: .* \(config file \/c\.conf\)/,
  );
});

Deno.test("parseCommandLine() reads no config file from a shortened --config, as CRIU", () => {
  const env = fakeEnv({ "/c.conf": "tcp-close\n" });
  const { options, notes } = parseCommandLine(["dump", "-t1", "--conf=/c.conf"], env);
  assert.equal(options.tcpClose, false);
  assert.match(notes.join("\n"), /--config was shortened/);
});

Deno.test("dumpArguments() hands the core one frozen copy of the options", () => {
  const { options } = parse("dump", "-t", "42", "-D", "/img", "-j", "--action-script", "/s");
  const log = new Log(0, false);
  const args = dumpArguments(options, { log, hooks: new ScriptHooks([], "/img", log) });
  assert.deepEqual([args.pid, args.imagesDir, args.options.shellJob], [42, "/img", true]);
  assert.ok(Object.isFrozen(args.options) && Object.isFrozen(args.options.actionScripts));
  options.shellJob = false;
  assert.equal(args.options.shellJob, true);
});

Deno.test("restoreArguments() takes -d, -S, -j and --pidfile from the options", () => {
  const { options } = parse("restore", "-dSj", "--pidfile", "/p");
  const log = new Log(0, false);
  const args = restoreArguments(options, { log, hooks: new ScriptHooks([], ".", log) });
  const o = args.options;
  assert.deepEqual([args.imagesDir, o.restoreDetached, o.restoreSibling, o.shellJob, o.pidfile], [
    ".",
    true,
    true,
    true,
    "/p",
  ]);
});

Deno.test("src/rpc imports nothing from src/cli", () => {
  const dir = new URL("../src/rpc/", import.meta.url).pathname;
  for (const entry of Deno.readDirSync(dir)) {
    const text = Deno.readTextFileSync(`${dir}${entry.name}`);
    assert.doesNotMatch(text, /from "\.\.\/cli\//, `${entry.name} imports src/cli`);
  }
});

// Stats, as runtimes read them.

async function debianCritEntries(path: string): Promise<Record<string, Record<string, unknown>>> {
  const out = await new Deno.Command(debianCrit(), { args: ["decode", "-i", path], stdout: "piped" })
    .output();
  assert.equal(out.code, 0, `crit decode ${path}`);
  return JSON.parse(new TextDecoder().decode(out.stdout)).entries[0];
}

Deno.test("stats-dump and stats-restore hold every field CRIU writes, as Debian's crit shows", async () => {
  const w = await Workload.start("mmap_zoo");
  const images = tempDir();
  try {
    const dumped = await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "--display-stats"]);
    await reap(w.pid);
    const restored = await criuOk(["restore", "-D", images, "-d", "--display-stats"]);
    assert.equal(await w.finish(), "PASS");

    const d = (await debianCritEntries(`${images}/stats-dump`)).dump!;
    for (const field of ["freezing_time", "frozen_time", "memdump_time", "memwrite_time", "irmap_resolve"]) {
      assert.equal(typeof d[field], "number", field);
    }
    // mmap_zoo fills 8 pages of one shared anonymous area; nothing comes from a parent or lazily.
    assert.deepEqual(
      [d.shpages_scanned, d.shpages_written, d.shpages_skipped_parent, d.pages_skipped_parent, d.pages_lazy],
      [8, 8, 0, 0, 0],
    );
    assert.equal(d.irmap_resolve, 0);
    assert.ok((d.pages_written as number) > 0 && (d.pages_scanned as number) >= (d.pages_written as number));
    // One transfer for the task's pages and one for the shared object, each of one run or more.
    assert.equal(d.page_pipes, 2);
    assert.ok((d.page_pipe_bufs as number) >= 2);
    assert.match(dumped.stdout, new RegExp(`Memory pages written: ${d.pages_written} \\(0x`));

    const r = (await debianCritEntries(`${images}/stats-restore`)).restore!;
    for (const field of ["pages_compared", "pages_skipped_cow", "forking_time", "restore_time"]) {
      assert.equal(typeof r[field], "number", field);
    }
    assert.ok(
      (r.pages_restored as number) > 0 && (r.pages_restored as number) <= (d.pages_written as number),
    );
    assert.match(restored.stdout, new RegExp(`Pages restored: ${r.pages_restored} \\(0x`));
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
  }
});

Deno.test("stats-dump and stats-restore go to the work dir (-W), where CRIU writes them", async () => {
  const w = await Workload.start("mmap_zoo");
  const images = tempDir();
  const work = tempDir();
  try {
    await criuOk(["dump", "-t", `${w.pid}`, "-D", images, "-W", work]);
    await reap(w.pid);
    await criuOk(["restore", "-D", images, "-W", work, "-d"]);
    assert.equal(await w.finish(), "PASS");
    assert.deepEqual(
      [...Deno.readDirSync(work)].map((e) => e.name).sort(),
      ["stats-dump", "stats-restore"],
    );
    assert.ok(![...Deno.readDirSync(images)].some((e) => e.name.startsWith("stats-")));
    assert.ok((await debianCritEntries(`${work}/stats-dump`)).dump);
  } finally {
    await w.kill();
    w.cleanup();
    Deno.removeSync(images, { recursive: true });
    Deno.removeSync(work, { recursive: true });
  }
});

// Help and version texts.

Deno.test("versionText() prints the version line LXC and go-criu parse", () => {
  assert.equal(CRIU_VERSION, "4.2");
  assert.equal(versionText(), "Version: 4.2\n");
  assert.equal(versionText("v4.2-3-gabc"), "Version: 4.2\nGitID: v4.2-3-gabc\n");
});

Deno.test("helpText() lists every option and command", () => {
  const text = helpText();
  for (const spec of OPTION_TABLE) {
    assert.match(text, new RegExp(`--${spec.long}(?![a-z-])`), `--${spec.long} is missing from the help`);
    if (spec.short !== "") {
      assert.ok(text.includes(`-${spec.short}, --${spec.long}`), `-${spec.short} is missing`);
    }
  }
  for (const command of ["dump", "pre-dump", "restore", "swrk", "service", "page-server", "cpuinfo check"]) {
    assert.ok(text.includes(command), `${command} is missing from the help`);
  }
});

Deno.test("helpText() marks refused options", () => {
  assert.match(
    helpText(),
    /--stream\s+.*\[not supported yet\]/,
  );
});

Deno.test("usageText() lists the commands and points to --help", () => {
  assert.match(usageText(), /restore\s+start the process tree again/);
  assert.match(usageText(), /--help/);
});
