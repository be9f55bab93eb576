import assert from "node:assert/strict";
import { regsFromThreadInfo, threadInfoFromCpu, xstateFromThreadInfo } from "./cpu.ts";
import { Regs } from "../../ffi/structs.ts";

/** A standard-format XSAVE area: legacy region, header at 512, AVX upper halves at 576. */
function xsaveArea(): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(832);
  const v = new DataView(b.buffer);
  v.setUint16(0, 0x37f, true); // fcw
  v.setUint32(24, 0x1f80, true); // mxcsr
  for (let i = 0; i < 64; i++) v.setUint32(160 + 4 * i, 0x1000 + i, true); // xmm0-15
  for (let i = 0; i < 64; i++) v.setUint32(576 + 4 * i, 0x2000 + i, true); // ymm0-15 high halves
  v.setBigUint64(512, 0x7n, true); // xstate_bv: x87, SSE, AVX
  return b;
}

Deno.test("threadInfoFromCpu() reads the XSAVE layout and xstateFromThreadInfo() writes it back", () => {
  const regs = new Regs();
  regs.set("ip", 0x401000n);
  regs.set("orig_ax", -1);
  regs.set("fs_base", 0x7f0000001000n);
  const area = xsaveArea();
  const ti = threadInfoFromCpu(regs, area, 0x1234n);
  assert.equal(ti.fpregs?.cwd, 0x37f);
  assert.equal(ti.fpregs?.mxcsr, 0x1f80);
  assert.equal(ti.fpregs?.xmmSpace[63], 0x1000 + 63);
  assert.equal(ti.fpregs?.xsave?.ymmhSpace[0], 0x2000);
  assert.equal(ti.clearTidAddr, 0x1234n);
  assert.deepEqual([...regsFromThreadInfo(ti).raw], [...regs.raw]);
  assert.deepEqual([...xstateFromThreadInfo(ti, new Uint8Array(832))], [...area]);
});

Deno.test("xstateFromThreadInfo() keeps only components the CPU's area has room for", () => {
  const ti = threadInfoFromCpu(new Regs(), xsaveArea(), 0n);
  const small = xstateFromThreadInfo(ti, new Uint8Array(576));
  assert.equal(small.byteLength, 576);
  assert.equal(new DataView(small.buffer).getBigUint64(512, true), 0x3n, "AVX dropped from xstate_bv");
});
