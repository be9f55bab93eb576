/**
 * `--lsm-profile TYPE:NAME` (RPC `lsm_profile`), checked before a dump or a restore touches a
 * process, as CRIU's lsm_check_opts does: TYPE must be the Linux security module the host runs, or
 * `none`, which asks for no profile at all. CRIU finds the host's module as its kerndat does:
 * AppArmor when /sys/kernel/security/apparmor exists, SELinux when selinuxfs is mounted and this
 * process has a label; on a host running neither (this machine: its LSMs are lockdown, capability,
 * landlock and bpf), it refuses `apparmor:` and `selinux:` and takes `none:`. LXC passes
 * `apparmor:PROFILE` when its config names one. Putting the restored tasks under a label (CRIU
 * writes /proc/PID/attr/current from its restorer) is not done yet: on a host that runs AppArmor
 * or SELinux a profile of that module is refused as not supported.
 */

/** The security module whose labels CRIU handles, or "none". */
export type HostLsm = "apparmor" | "selinux" | "none";

/** The types --lsm-profile takes. */
const LSM_TYPES = ["apparmor", "selinux", "none"] as const;

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** This process's SELinux label, when the kernel gives one that looks like a label. */
function selinuxLabel(): string | undefined {
  try {
    const label = Deno.readTextFileSync("/proc/self/attr/current").replace(/\0.*$/s, "").trim();
    return label.includes(":") ? label : undefined;
  } catch {
    return undefined; // EINVAL where no module keeps labels
  }
}

/** The host's security module, found as CRIU's kerndat_lsm finds it. */
export function hostLsm(): HostLsm {
  if (exists("/sys/kernel/security/apparmor")) return "apparmor";
  if (exists("/sys/fs/selinux/enforce") && selinuxLabel() !== undefined) return "selinux";
  return "none";
}

/**
 * What is wrong with the --lsm-profile value for this host, or undefined when it can be taken
 * (no value, or `none:`). The messages end with CRIU's own words, which scripts grep for.
 */
export function lsmProfileProblem(value: string | undefined, host: HostLsm = hostLsm()): string | undefined {
  if (value === undefined) return undefined;
  const colon = value.indexOf(":");
  if (colon < 0) {
    return `--lsm-profile ${value}: expected TYPE:NAME, TYPE one of ${LSM_TYPES.join(", ")} ` +
      `(CRIU: invalid argument ${value} for --lsm-profile)`;
  }
  const type = value.slice(0, colon);
  if (type === "none") return undefined;
  if (type !== "apparmor" && type !== "selinux") {
    return `--lsm-profile ${value}: expected TYPE one of ${LSM_TYPES.join(", ")}, found ${type} ` +
      `(CRIU: unknown lsm ${type})`;
  }
  if (host !== type) {
    return `--lsm-profile ${value} names ${type}, which this host does not run ` +
      `(CRIU: ${type} LSM specified but ${type} not supported by kernel)`;
  }
  return `--lsm-profile ${value}: restoring under a ${type} profile is not supported by criu-ts yet`;
}
