import assert from "node:assert/strict";
import { type ConfigEnvironment, configFileWords, GLOBAL_CONFIG_FILE } from "../src/cli/config.ts";
import { CRIU_VERSION, helpText, usageText, versionText } from "../src/cli/help.ts";
import { OPTION_TABLE } from "../src/cli/options.ts";
import { parseCommandLine, UsageError } from "../src/cli/parse.ts";

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
});

// Support levels.

Deno.test("parseCommandLine() refuses an option criu-ts does not implement", () => {
  assert.match(
    usageError(() => parse("restore", "-d", "--inherit-fd", "fd[3]:x")),
    /--inherit-fd is not supported/,
  );
  assert.match(usageError(() => parse("dump", "-t1", "--stream")), /--stream is not supported/);
});

Deno.test("parseCommandLine() accepts a refused option turned off", () => {
  assert.equal(parse("restore", "--no-restore-sibling").options.restoreSibling, false);
});

Deno.test("parseCommandLine() refuses the deprecated --ms", () => {
  assert.match(usageError(() => parse("check", "--ms")), /--ms is not supported.*deprecated/);
});

Deno.test("parseCommandLine() notes options accepted but not acted on", () => {
  const { notes } = parse("dump", "-t1", "--auto-dedup", "--evasive-devices", "-D", "/img");
  assert.deepEqual(notes, [
    "Option --auto-dedup is accepted but not acted on yet",
    "Option --evasive-devices is accepted but not acted on yet",
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
