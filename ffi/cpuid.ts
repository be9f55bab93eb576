/**
 * CPUID, asked from our own process. Neither Deno nor libc exposes the instruction, so a few bytes
 * of machine code we write ourselves run it: they go into a page of ours, which is then made
 * read+execute (never writable and executable at once) and called through Deno.UnsafeFnPointer
 * with the System V arguments (edi = leaf, esi = sub-leaf, rdx = where the four registers go).
 * The page is unmapped after each use: CPUID is asked a handful of times per run, and the answers
 * that matter are kept by their callers.
 */
import { callAddr, callBig, libc } from "./libc.ts";
import { MAP, NR, PROT } from "./syscalls.ts";

/**
 * cpuid(leaf, subleaf, out): out[0..3] = eax, ebx, ecx, edx. rbx is callee-saved in the System V
 * ABI and cpuid overwrites it, hence the push/pop. One instruction per line, with its encoding.
 */
export const CPUID_CODE = Uint8Array.from(
  [
    "53", //         push rbx
    "4989d0", //     mov r8,rdx          ; out
    "89f8", //       mov eax,edi         ; leaf
    "89f1", //       mov ecx,esi         ; sub-leaf
    "0fa2", //       cpuid
    "418900", //     mov [r8],eax
    "41895804", //   mov [r8+4],ebx
    "41894808", //   mov [r8+8],ecx
    "4189500c", //   mov [r8+12],edx
    "5b", //         pop rbx
    "c3", //         ret
  ].join("").match(/../g)!,
  (h) => parseInt(h, 16),
);

const PAGE = 4096;
const CPUID_FN = { parameters: ["u32", "u32", "buffer"], result: "void" } as const;

export interface CpuidRegs {
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** The answers of CPUID to each [leaf, sub-leaf] of `queries`, in their order. */
export function cpuid(queries: readonly (readonly [number, number])[]): CpuidRegs[] {
  const page = callAddr(
    "mmap(cpuid page)",
    libc.syscall(
      BigInt(NR.mmap),
      0n,
      BigInt(PAGE),
      BigInt(PROT.READ | PROT.WRITE),
      BigInt(MAP.PRIVATE | MAP.ANONYMOUS),
      -1n,
      0n,
    ),
  );
  try {
    const ptr = Deno.UnsafePointer.create(page)!;
    new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, CPUID_CODE.length)).set(CPUID_CODE);
    callBig(
      "mprotect(cpuid page)",
      libc.syscall(BigInt(NR.mprotect), page, BigInt(PAGE), BigInt(PROT.READ | PROT.EXEC), 0n, 0n, 0n),
    );
    const fn = new Deno.UnsafeFnPointer(ptr as Deno.PointerObject<typeof CPUID_FN>, CPUID_FN);
    const out = new Uint32Array(4);
    return queries.map(([leaf, subleaf]) => {
      fn.call(leaf, subleaf, out);
      return { eax: out[0]!, ebx: out[1]!, ecx: out[2]!, edx: out[3]! };
    });
  } finally {
    libc.syscall(BigInt(NR.munmap), page, BigInt(PAGE), 0n, 0n, 0n, 0n);
  }
}

/** Leaf 0xD: processor extended state enumeration (XSAVE). */
const XSTATE_LEAF = 0xd;

/** Where one XSAVE component sits in the standard (non-compacted) format, as CPUID leaf 0xD says. */
export interface XstateComponentPlace {
  offset: number;
  size: number;
}

let places: Map<number, XstateComponentPlace> | undefined;

/**
 * The offset and size of each extended XSAVE component (2 and up) this CPU has, by component
 * number: sub-leaf N of leaf 0xD answers EBX = offset, EAX = size (0 for a component it lacks).
 * Asked once per process.
 */
export function xstateComponentPlaces(): ReadonlyMap<number, XstateComponentPlace> {
  if (places) return places;
  const numbers = Array.from({ length: 62 }, (_, i) => i + 2);
  const answers = cpuid(numbers.map((n) => [XSTATE_LEAF, n] as const));
  places = new Map();
  numbers.forEach((n, i) => {
    const { eax: size, ebx: offset } = answers[i]!;
    if (size > 0) places!.set(n, { offset, size });
  });
  return places;
}
