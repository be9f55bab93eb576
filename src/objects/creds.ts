/**
 * Credentials of a thread: uid/gid sets, supplementary groups, capability sets, securebits and
 * no_new_privs. Restored last: once the puppet drops root, it could no longer restore the rest.
 */
import { create } from "@bufbuild/protobuf";
import { type creds_entry, creds_entrySchema } from "../images/gen/creds_pb.ts";
import { readStatus } from "../../ffi/proc.ts";
import { NR, PR } from "../../ffi/syscalls.ts";
import type { Agent, Query } from "../agent.ts";

const PR_CAPBSET_DROP = 24;
const PR_CAP_AMBIENT_RAISE = 2;
const CAPABILITY_VERSION_3 = 0x20080522;
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

/** The thread's credentials: /proc status, and the securebits only the thread can tell. */
export function credsQuery(agent: Agent, tid: number): Query<creds_entry> {
  const q = agent.resultQuery("prctl(PR_GET_SECUREBITS)", NR.prctl, PR.GET_SECUREBITS, 0, 0, 0, 0);
  return { calls: q.calls, answer: (r) => credsFrom(readStatus(tid), Number(q.answer(r))) };
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
    agent.call(`prctl(PR_CAPBSET_DROP, ${cap})`, NR.prctl, PR_CAPBSET_DROP, cap, 0, 0, 0);
  }
}

/** Does the thread have exactly these credentials already (a root task, most often)? */
function alreadyHas(agent: Agent, c: creds_entry): boolean {
  const [now] = agent.ask([credsQuery(agent, agent.tid)]);
  const same = (a: readonly number[], b: readonly number[]) =>
    a.length === b.length && a.every((x, i) => x === b[i]);
  return now.uid === c.uid && now.euid === c.euid && now.suid === c.suid && now.fsuid === c.fsuid &&
    now.gid === c.gid && now.egid === c.egid && now.sgid === c.sgid && now.fsgid === c.fsgid &&
    same(now.groups, c.groups) && same(now.capInh, c.capInh) && same(now.capPrm, c.capPrm) &&
    same(now.capEff, c.capEff) && same(now.capBnd, c.capBnd) && same(now.capAmb, c.capAmb) &&
    now.secbits === c.secbits && (now.noNewPrivs ?? 0) === (c.noNewPrivs ?? 0);
}

export function restoreCreds(agent: Agent, c: creds_entry): void {
  if (alreadyHas(agent, c)) return; // nothing to change: saves a dozen remote calls per thread
  restoreBoundingSet(agent, c);
  agent.call("prctl(PR_SET_SECUREBITS)", NR.prctl, PR.SET_SECUREBITS, c.secbits, 0, 0, 0);
  // Keep capabilities across the uid change; the dumped KEEP_CAPS bit is put back below.
  agent.call("prctl(PR_SET_KEEPCAPS)", NR.prctl, PR.SET_KEEPCAPS, 1, 0, 0, 0);
  agent.reset();
  const groups = agent.alloc(
    Math.max(4, c.groups.length * 4),
    new Uint8Array(new Uint32Array(c.groups).buffer),
  );
  agent.call("setgroups", NR.setgroups, c.groups.length, groups);
  agent.call("setresgid", NR.setresgid, c.gid, c.egid, c.sgid);
  agent.raw(NR.setfsgid, c.fsgid);
  agent.call("setresuid", NR.setresuid, c.uid, c.euid, c.suid);
  agent.raw(NR.setfsuid, c.fsuid);
  const header = new Uint32Array([CAPABILITY_VERSION_3, 0]);
  const data = new Uint32Array([
    c.capEff[0] ?? 0,
    c.capPrm[0] ?? 0,
    c.capInh[0] ?? 0,
    c.capEff[1] ?? 0,
    c.capPrm[1] ?? 0,
    c.capInh[1] ?? 0,
  ]);
  agent.reset();
  agent.call(
    "capset",
    NR.capset,
    agent.alloc(8, new Uint8Array(header.buffer)),
    agent.alloc(24, new Uint8Array(data.buffer)),
  );
  const amb = capBits(c.capAmb);
  for (let cap = 0; cap <= LAST_CAP; cap++) {
    if (amb & (1n << BigInt(cap))) {
      agent.call("prctl(PR_CAP_AMBIENT)", NR.prctl, PR.CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
    }
  }
  agent.call("prctl(PR_SET_KEEPCAPS)", NR.prctl, PR.SET_KEEPCAPS, c.secbits & 0x10 ? 1 : 0, 0, 0, 0);
  if (c.noNewPrivs) agent.call("prctl(PR_SET_NO_NEW_PRIVS)", NR.prctl, PR.SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}
