/**
 * Credentials of a thread: uid/gid sets, supplementary groups, capability sets, securebits and
 * no_new_privs. Restored last: once the puppet drops root, it could no longer restore the rest.
 */
import { create } from "@bufbuild/protobuf";
import { type creds_entry, creds_entrySchema } from "../images/gen/creds_pb.ts";
import { readStatus } from "../../ffi/proc.ts";
import { NR, O, PR } from "../../ffi/syscalls.ts";
import { RestoreError } from "../errors.ts";
import type { Agent, BatchCall, Query } from "../agent.ts";
import { INVALID_ID, type TreeIds } from "./tree_ids.ts";
import { idsInUserNamespaceOf } from "./userns.ts";
import { CAP_DATA_SIZE, CAP_HEADER_SIZE, capData, capHeader } from "../../ffi/structs.ts";

const LAST_CAP = 63;

function ids(line: string | undefined): number[] {
  return (line ?? "").split(/\s+/).filter((s) => s).map(Number);
}

/** A 64-bit capability mask from /proc status ("000001ffffffffff") as two u32 words, low first. */
function capWords(hex: string | undefined): number[] {
  const v = BigInt("0x" + (hex ?? "0"));
  return [Number(v & 0xffffffffn), Number(v >> 32n)];
}

function capBits(words: readonly number[]): bigint {
  return BigInt(words[0] ?? 0) | (BigInt(words[1] ?? 0) << 32n);
}

/** The thread's credentials: its /proc status, and the securebits only the thread can tell. */
export function credsQuery(agent: Agent, status: Map<string, string>): Query<creds_entry> {
  const q = agent.resultQuery("prctl(PR_GET_SECUREBITS)", NR.prctl, PR.GET_SECUREBITS, 0, 0, 0, 0);
  return { calls: q.calls, answer: (r) => credsFrom(status, Number(q.answer(r))) };
}

function credsFrom(st: Map<string, string>, secbits: number): creds_entry {
  const [uid, euid, suid, fsuid] = ids(st.get("Uid"));
  const [gid, egid, sgid, fsgid] = ids(st.get("Gid"));
  return create(creds_entrySchema, {
    uid: uid!,
    euid: euid!,
    suid: suid!,
    fsuid: fsuid!,
    gid: gid!,
    egid: egid!,
    sgid: sgid!,
    fsgid: fsgid!,
    capInh: capWords(st.get("CapInh")),
    capPrm: capWords(st.get("CapPrm")),
    capEff: capWords(st.get("CapEff")),
    capBnd: capWords(st.get("CapBnd")),
    capAmb: capWords(st.get("CapAmb")),
    secbits,
    groups: ids(st.get("Groups")),
    noNewPrivs: Number(st.get("NoNewPrivs") ?? "0"),
  });
}

/**
 * Drops from the thread's bounding set what the image does not have. Threads inherit it at
 * creation, so doing this in the leader before its threads exist saves a call per cap per thread.
 */
export function restoreBoundingSet(agent: Agent, c: creds_entry): void {
  const want = capBits(c.capBnd);
  const have = capBits(capWords(readStatus(agent.tid).get("CapBnd")));
  for (let cap = 0; cap <= LAST_CAP; cap++) {
    const bit = 1n << BigInt(cap);
    if (!(have & bit) || want & bit) continue;
    agent.call(`prctl(PR_CAPBSET_DROP, ${cap})`, NR.prctl, PR.CAPBSET_DROP, cap, 0, 0, 0);
  }
}

export function sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Are two credential records the same (all but the bounding set, restored apart)? */
export function sameCreds(a: creds_entry, b: creds_entry): boolean {
  return a.uid === b.uid && a.euid === b.euid && a.suid === b.suid && a.fsuid === b.fsuid &&
    a.gid === b.gid && a.egid === b.egid && a.sgid === b.sgid && a.fsgid === b.fsgid &&
    sameIds(a.groups, b.groups) && sameIds(a.capInh, b.capInh) && sameIds(a.capPrm, b.capPrm) &&
    sameIds(a.capEff, b.capEff) && sameIds(a.capAmb, b.capAmb) && a.secbits === b.secbits &&
    (a.noNewPrivs ?? 0) === (b.noNewPrivs ?? 0);
}

/**
 * Does the thread have exactly these credentials already (a root task, most often)? /proc tells
 * all but the securebits, which the caller knows (see securebits()).
 */
export function alreadyHas(agent: Agent, c: creds_entry, secbits: number): boolean {
  const now = credsFrom(readStatus(agent.tid), secbits);
  return sameCreds(now, c) && sameIds(now.capBnd, c.capBnd);
}

/** The thread's securebits, which only the thread itself can tell. */
export function securebits(agent: Agent): number {
  return Number(agent.call("prctl(PR_GET_SECUREBITS)", NR.prctl, PR.GET_SECUREBITS, 0, 0, 0, 0));
}

/**
 * The calls that give the calling thread credentials `c` (its bounding set must be done already:
 * restoreBoundingSet). They go last in a thread's batch: once the puppet drops root, it could no
 * longer restore the rest. Scratch for their arguments is taken from `agent`.
 */
export function credsCalls(agent: Agent, c: creds_entry): BatchCall[] {
  const prctl = (name: string, ...args: number[]): BatchCall => ({ name, nr: NR.prctl, args });
  const calls: BatchCall[] = [
    prctl("prctl(PR_SET_SECUREBITS)", PR.SET_SECUREBITS, c.secbits, 0, 0, 0),
    // Keep capabilities across the uid change; the dumped KEEP_CAPS bit is put back below.
    prctl("prctl(PR_SET_KEEPCAPS)", PR.SET_KEEPCAPS, 1, 0, 0, 0),
  ];
  const groups = agent.alloc(
    Math.max(4, c.groups.length * 4),
    new Uint8Array(new Uint32Array(c.groups).buffer),
  );
  calls.push(
    { name: "setgroups", nr: NR.setgroups, args: [c.groups.length, groups] },
    { name: "setresgid", nr: NR.setresgid, args: [c.gid, c.egid, c.sgid] },
    // setfsgid and setfsuid answer with the previous id, never an error
    { name: "setfsgid", nr: NR.setfsgid, args: [c.fsgid] },
    { name: "setresuid", nr: NR.setresuid, args: [c.uid, c.euid, c.suid] },
    { name: "setfsuid", nr: NR.setfsuid, args: [c.fsuid] },
  );
  const data = capData({ effective: c.capEff, permitted: c.capPrm, inheritable: c.capInh });
  calls.push({
    name: "capset",
    nr: NR.capset,
    args: [agent.alloc(CAP_HEADER_SIZE, capHeader(0)), agent.alloc(CAP_DATA_SIZE, data)],
  });
  const amb = capBits(c.capAmb);
  for (let cap = 0; cap <= LAST_CAP; cap++) {
    if (amb & (1n << BigInt(cap))) {
      calls.push(prctl("prctl(PR_CAP_AMBIENT)", PR.CAP_AMBIENT, PR.CAP_AMBIENT_RAISE, cap, 0, 0));
    }
  }
  calls.push(prctl("prctl(PR_SET_KEEPCAPS)", PR.SET_KEEPCAPS, c.secbits & 0x10 ? 1 : 0, 0, 0, 0));
  if (c.noNewPrivs) calls.push(prctl("prctl(PR_SET_NO_NEW_PRIVS)", PR.SET_NO_NEW_PRIVS, 1, 0, 0, 0));
  return calls;
}

/** /proc/PID/loginuid: the audit login uid, 4294967295 when unset. */
export function readLoginuid(pid: number): number {
  return Number(Deno.readTextFileSync(`/proc/${pid}/loginuid`).trim());
}

/**
 * Gives the task its audit loginuid. A task can set only its own (/proc/self/loginuid, with
 * CAP_AUDIT_CONTROL once it is set), and its threads get it when they are cloned: so the leader
 * writes it before its threads exist and before it drops its credentials. A puppet has criu's.
 */
export function restoreLoginuid(
  agent: Agent,
  pid: number,
  saved: number | undefined,
  treeIds: TreeIds | undefined,
): void {
  if (saved === undefined) return;
  // The image holds it as the tree sees it; the kernel reads what the task writes as its own user
  // namespace sees it, which may be criu's still, or one nested below the tree's.
  const loginuid = treeIds ? treeIds.uidOutside(saved) : saved;
  if (readLoginuid(agent.pid) === loginuid) return;
  const written = loginuid === INVALID_ID
    ? loginuid
    : idsInUserNamespaceOf(agent.pid)?.uid(loginuid) ?? loginuid;
  agent.reset();
  const text = new TextEncoder().encode(String(written));
  const path = agent.string("/proc/self/loginuid");
  const value = agent.alloc(text.length, text);
  // Every call runs, so the file is closed even when the kernel refuses the value.
  const calls: BatchCall[] = [
    { name: "open(/proc/self/loginuid)", nr: NR.open, args: [path, O.WRONLY | O.CLOEXEC, 0] },
    { name: "write(loginuid)", nr: NR.write, args: [0, value, text.length], ref: { arg: 0, back: 1 } },
    { name: "close(loginuid)", nr: NR.close, args: [0], ref: { arg: 0, back: 2 } },
  ];
  const results = agent.batch(calls, true);
  const failed = agent.failureOf(calls[0]!, results[0]!) ?? agent.failureOf(calls[1]!, results[1]!);
  if (failed) {
    throw new RestoreError(
      `Cannot give process ${pid} its audit loginuid ${loginuid}: ${failed.message} (criu needs CAP_AUDIT_CONTROL, and the kernel must not hold loginuids immutable)`,
      failed.errno,
      { cause: failed },
    );
  }
}
