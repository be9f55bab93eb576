import assert from "node:assert/strict";
import { cpuid, xstateComponentPlaces } from "./cpuid.ts";
import { cFacts } from "../tests/lib/cfacts.ts";

Deno.test("cpuid() answers leaf 0 and leaf 0xD as the compiler's __cpuid_count does", async () => {
  const f = await cFacts(["cpuid.h"], {
    maxLeaf: "({ unsigned a, b, c, d; __cpuid_count(0, 0, a, b, c, d); a; })",
    vendor0: "({ unsigned a, b, c, d; __cpuid_count(0, 0, a, b, c, d); b; })",
    xsaveSize: "({ unsigned a, b, c, d; __cpuid_count(0xd, 0, a, b, c, d); b; })",
    xfeatures: "({ unsigned a, b, c, d; __cpuid_count(0xd, 0, a, b, c, d); a; })",
  });
  const [leaf0, xstate] = cpuid([[0, 0], [0xd, 0]]);
  assert.equal(leaf0!.eax, f.maxLeaf);
  assert.equal(leaf0!.ebx, f.vendor0);
  assert.equal(xstate!.ebx, f.xsaveSize);
  assert.equal(xstate!.eax, f.xfeatures);
});

Deno.test("xstateComponentPlaces() lists the AVX upper halves at 576, as every x86-64 CPU with AVX", () => {
  const avx = xstateComponentPlaces().get(2);
  if (!avx) return; // a CPU without AVX: no extended component
  assert.deepEqual(avx, { offset: 576, size: 256 });
});
