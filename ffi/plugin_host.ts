/**
 * The symbols a CRIU plugin calls back into criu: `criu_get_image_dir`, `print_on_level` (behind
 * pr_info, pr_err, ...), `log_get_loglevel` and `log_get_fd`. A plugin is a shared library built
 * against CRIU's headers; it leaves these undefined and the dynamic linker finds them in criu's
 * own executable. criu-ts is a Deno program, which exports none of them, so it makes them: this
 * module writes a small ELF shared object (in memory, no file on disk), loads it with
 * RTLD_GLOBAL so that every library loaded after it resolves the four names against it, and
 * points its slots at the image directory fd, the log level and a Deno callback.
 *
 * The object is one read-write-execute segment (no relocations: the code reaches its slots
 * RIP-relative), a dynamic section with a SysV hash table, a symbol table and a string table,
 * and a PT_GNU_STACK header saying the stack stays non-executable. Its code:
 *   criu_get_image_dir:  mov eax, [slot image_fd]; ret
 *   log_get_loglevel:    mov eax, [slot loglevel]; ret
 *   log_get_fd:          mov eax, [slot log_fd]; ret
 *   print_on_level:      a variadic function: it saves the argument registers in a register save
 *                        area, builds a va_list over it (the System V x86_64 ABI's layout), calls
 *                        vsnprintf(buffer, BUFFER_SIZE, format, va) and then the callback slot
 *                        with (level, buffer).
 */
import { cstr, libc } from "./libc.ts";

/** Where libc's dynamic loader lives (glibc 2.34 and later have it in libc.so.6). */
const loader = {
  dlopen: { parameters: ["buffer", "i32"], result: "pointer" }, // void *dlopen(const char *, int)
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer" }, // void *dlsym(void *, const char *)
  dlerror: { parameters: [], result: "pointer" }, // char *dlerror(void)
  dlclose: { parameters: ["pointer"], result: "i32" },
  vsnprintf: { parameters: ["pointer", "u64", "pointer", "pointer"], result: "i32" },
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

let dl: Deno.DynamicLibrary<typeof loader>["symbols"] | undefined;
function dlLib() {
  return dl ??= Deno.dlopen("libc.so.6", loader).symbols;
}

export const RTLD = { LAZY: 0x1, NOW: 0x2, GLOBAL: 0x100 } as const;

/** A failed dlopen/dlsym, with the loader's own words. */
export class LoaderError extends Error {
  override name = "LoaderError";
}

function dlerrorText(): string {
  const p = dlLib().dlerror();
  return p ? new Deno.UnsafePointerView(p).getCString() : "unknown error";
}

/** dlopen(path, flags); a failure says why, in the loader's words. */
export function dlopen(path: string, flags: number): Deno.PointerObject {
  const h = dlLib().dlopen(cstr(path), flags);
  if (!h) throw new LoaderError(dlerrorText());
  return h;
}

/** dlsym(handle, name), or null when the library has no such symbol. */
export function dlsym(handle: Deno.PointerObject, name: string): Deno.PointerObject | null {
  return dlLib().dlsym(handle, cstr(name));
}

export function dlclose(handle: Deno.PointerObject): void {
  dlLib().dlclose(handle);
}

// --- the ELF object ------------------------------------------------------------------------------

const BUFFER_SIZE = 4096;
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const PHDR_COUNT = 3;
const DYN_SIZE = 16;
const SYM_SIZE = 24;
const PT = { LOAD: 1, DYNAMIC: 2, GNU_STACK: 0x6474e551 } as const;
const PF = { X: 1, W: 2, R: 4 } as const;
const DT = { NULL: 0, HASH: 4, STRTAB: 5, SYMTAB: 6, STRSZ: 10, SYMENT: 11 } as const;
const STB_GLOBAL = 1;
const STT = { OBJECT: 1, FUNC: 2 } as const;
/** Any defined section index: the loader only tells SHN_UNDEF (0) and SHN_ABS apart. */
const DEFINED_SECTION = 1;

/** The data slots, 8 bytes each, in this order after the code. */
const SLOTS = ["image_fd", "loglevel", "log_fd", "vsnprintf", "callback"] as const;
type Slot = typeof SLOTS[number];

interface Layout {
  dynamic: number;
  hash: number;
  dynsym: number;
  dynstr: number;
  code: number;
  slots: number;
  buffer: number;
  size: number;
}

const FUNCTIONS = ["criu_get_image_dir", "log_get_loglevel", "log_get_fd", "print_on_level"] as const;
/** The data symbol through which criu finds the slots once the object is loaded. */
const SLOTS_SYMBOL = "criu_ts_plugin_slots";

const align = (n: number, to: number) => Math.ceil(n / to) * to;

/**
 * Little machine-code writer: bytes, and 32-bit RIP-relative displacements to targets in the
 * object (the displacement counts from the end of the instruction, `tail` bytes after it).
 */
class Code {
  readonly bytes: number[] = [];
  constructor(private readonly base: number) {}
  get at(): number {
    return this.base + this.bytes.length;
  }
  emit(...b: number[]): void {
    this.bytes.push(...b);
  }
  rel32(target: number, tail = 0): void {
    const next = this.at + 4 + tail;
    const d = target - next;
    this.emit(d & 0xff, (d >> 8) & 0xff, (d >> 16) & 0xff, (d >>> 24) & 0xff);
  }
  imm32(v: number): void {
    this.emit(v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff);
  }
}

/** The code of the four functions; returns each function's address and the bytes. */
function writeCode(l: Layout): { starts: number[]; bytes: number[] } {
  const c = new Code(l.code);
  const slot = (s: Slot) => l.slots + 8 * SLOTS.indexOf(s);
  const starts: number[] = [];
  // criu_get_image_dir, log_get_loglevel, log_get_fd: mov eax, [rip+slot]; ret
  for (const s of ["image_fd", "loglevel", "log_fd"] as const) {
    starts.push(c.at);
    c.emit(0x8b, 0x05);
    c.rel32(slot(s));
    c.emit(0xc3);
  }
  starts.push(c.at);
  // print_on_level(unsigned level, const char *fmt, ...)
  c.emit(0x55); // push rbp
  c.emit(0x48, 0x89, 0xe5); // mov rbp, rsp
  c.emit(0x48, 0x81, 0xec); // sub rsp, 208: save area [rsp, +176), va_list [+176, +200)
  c.imm32(208);
  // the six integer argument registers, at 0..40
  c.emit(0x48, 0x89, 0x3c, 0x24); // mov [rsp], rdi
  c.emit(0x48, 0x89, 0x74, 0x24, 0x08); // mov [rsp+8], rsi
  c.emit(0x48, 0x89, 0x54, 0x24, 0x10); // mov [rsp+16], rdx
  c.emit(0x48, 0x89, 0x4c, 0x24, 0x18); // mov [rsp+24], rcx
  c.emit(0x4c, 0x89, 0x44, 0x24, 0x20); // mov [rsp+32], r8
  c.emit(0x4c, 0x89, 0x4c, 0x24, 0x28); // mov [rsp+40], r9
  // the eight vector registers at 48..160, only when the caller says it passed some (al)
  c.emit(0x84, 0xc0); // test al, al
  const vectors = [
    [0x0f, 0x29, 0x44, 0x24, 0x30], // movaps [rsp+48], xmm0
    [0x0f, 0x29, 0x4c, 0x24, 0x40], // movaps [rsp+64], xmm1
    [0x0f, 0x29, 0x54, 0x24, 0x50], // movaps [rsp+80], xmm2
    [0x0f, 0x29, 0x5c, 0x24, 0x60], // movaps [rsp+96], xmm3
    [0x0f, 0x29, 0x64, 0x24, 0x70], // movaps [rsp+112], xmm4
    [0x0f, 0x29, 0xac, 0x24, 0x80, 0, 0, 0], // movaps [rsp+128], xmm5
    [0x0f, 0x29, 0xb4, 0x24, 0x90, 0, 0, 0], // movaps [rsp+144], xmm6
    [0x0f, 0x29, 0xbc, 0x24, 0xa0, 0, 0, 0], // movaps [rsp+160], xmm7
  ];
  c.emit(0x74, vectors.reduce((n, v) => n + v.length, 0)); // je past them
  for (const v of vectors) c.emit(...v);
  // va_list: gp_offset 16 (level and fmt were named), fp_offset 48, overflow area, save area
  c.emit(0xc7, 0x84, 0x24, 0xb0, 0, 0, 0); // mov dword [rsp+176], 16
  c.imm32(16);
  c.emit(0xc7, 0x84, 0x24, 0xb4, 0, 0, 0); // mov dword [rsp+180], 48
  c.imm32(48);
  c.emit(0x48, 0x8d, 0x45, 0x10); // lea rax, [rbp+16]: the arguments passed on the stack
  c.emit(0x48, 0x89, 0x84, 0x24, 0xb8, 0, 0, 0); // mov [rsp+184], rax
  c.emit(0x48, 0x89, 0xe0); // mov rax, rsp
  c.emit(0x48, 0x89, 0x84, 0x24, 0xc0, 0, 0, 0); // mov [rsp+192], rax
  // vsnprintf(buffer, BUFFER_SIZE, fmt, &va)
  c.emit(0x48, 0x8d, 0x3d); // lea rdi, [rip+buffer]
  c.rel32(l.buffer);
  c.emit(0xbe); // mov esi, BUFFER_SIZE
  c.imm32(BUFFER_SIZE);
  c.emit(0x48, 0x8b, 0x54, 0x24, 0x08); // mov rdx, [rsp+8]
  c.emit(0x48, 0x8d, 0x8c, 0x24, 0xb0, 0, 0, 0); // lea rcx, [rsp+176]
  c.emit(0xff, 0x15); // call [rip+vsnprintf]
  c.rel32(slot("vsnprintf"));
  // callback(level, buffer)
  c.emit(0x8b, 0x3c, 0x24); // mov edi, [rsp]
  c.emit(0x48, 0x8d, 0x35); // lea rsi, [rip+buffer]
  c.rel32(l.buffer);
  c.emit(0xff, 0x15); // call [rip+callback]
  c.rel32(slot("callback"));
  c.emit(0xc9, 0xc3); // leave; ret
  return { starts, bytes: c.bytes };
}

/** The names in .dynstr (offset 0 is the empty name). */
function stringTable(names: readonly string[]): { bytes: Uint8Array; offsets: number[] } {
  const enc = new TextEncoder();
  const parts = [new Uint8Array(1)];
  const offsets: number[] = [];
  let at = 1;
  for (const n of names) {
    offsets.push(at);
    const b = enc.encode(n + "\0");
    parts.push(b);
    at += b.length;
  }
  const bytes = new Uint8Array(at);
  let o = 0;
  for (const p of parts) {
    bytes.set(p, o);
    o += p.length;
  }
  return { bytes, offsets };
}

/** The whole shared object, ready to load. */
export function buildPluginHost(): Uint8Array<ArrayBuffer> {
  const names = [...FUNCTIONS, SLOTS_SYMBOL];
  const symbols = names.length + 1; // and the null symbol
  const strings = stringTable(names);
  const dynamic = EHDR_SIZE + PHDR_SIZE * PHDR_COUNT;
  const hash = dynamic + DYN_SIZE * 6;
  const dynsym = align(hash + 4 * (2 + 1 + symbols), 8);
  const dynstr = dynsym + SYM_SIZE * symbols;
  const code = align(dynstr + strings.bytes.length, 16);
  // The code is under 256 bytes; the slots follow it, then the formatting buffer.
  const slots = code + 256;
  const buffer = slots + 8 * SLOTS.length;
  const l: Layout = { dynamic, hash, dynsym, dynstr, code, slots, buffer, size: buffer + BUFFER_SIZE };
  const { starts, bytes: codeBytes } = writeCode(l);
  if (codeBytes.length > 256) throw new Error("plugin host code outgrew its room");

  const out = new Uint8Array(l.size);
  const v = new DataView(out.buffer);
  // ELF header
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]); // magic, 64-bit, little-endian, version 1, SysV
  v.setUint16(16, 3, true); // ET_DYN
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true); // EV_CURRENT
  v.setBigUint64(24, 0n, true); // no entry point
  v.setBigUint64(32, BigInt(EHDR_SIZE), true); // program headers right after
  v.setBigUint64(40, 0n, true); // no section headers
  v.setUint16(52, EHDR_SIZE, true);
  v.setUint16(54, PHDR_SIZE, true);
  v.setUint16(56, PHDR_COUNT, true);
  v.setUint16(58, 64, true); // e_shentsize, though there are none
  // Program headers: one segment for everything, the dynamic section, a non-executable stack.
  const phdr = (i: number, type: number, flags: number, offset: number, size: number, alignTo: number) => {
    const at = EHDR_SIZE + i * PHDR_SIZE;
    v.setUint32(at, type, true);
    v.setUint32(at + 4, flags, true);
    v.setBigUint64(at + 8, BigInt(offset), true);
    v.setBigUint64(at + 16, BigInt(offset), true);
    v.setBigUint64(at + 24, BigInt(offset), true);
    v.setBigUint64(at + 32, BigInt(size), true);
    v.setBigUint64(at + 40, BigInt(size), true);
    v.setBigUint64(at + 48, BigInt(alignTo), true);
  };
  phdr(0, PT.LOAD, PF.R | PF.W | PF.X, 0, l.size, 0x1000);
  phdr(1, PT.DYNAMIC, PF.R | PF.W, dynamic, DYN_SIZE * 6, 8);
  phdr(2, PT.GNU_STACK, PF.R | PF.W, 0, 0, 16);
  // .dynamic
  const dyn: [number, number][] = [
    [DT.HASH, hash],
    [DT.STRTAB, dynstr],
    [DT.SYMTAB, dynsym],
    [DT.STRSZ, strings.bytes.length],
    [DT.SYMENT, SYM_SIZE],
    [DT.NULL, 0],
  ];
  dyn.forEach(([tag, val], i) => {
    v.setBigInt64(dynamic + i * DYN_SIZE, BigInt(tag), true);
    v.setBigUint64(dynamic + i * DYN_SIZE + 8, BigInt(val), true);
  });
  // .hash: one bucket whose chain walks every symbol from the last down to the first.
  v.setUint32(hash, 1, true); // nbucket
  v.setUint32(hash + 4, symbols, true); // nchain
  v.setUint32(hash + 8, symbols - 1, true); // bucket[0]
  for (let i = 0; i < symbols; i++) v.setUint32(hash + 12 + 4 * i, i === 0 ? 0 : i - 1, true);
  // .dynsym
  const sym = (i: number, name: number, type: number, value: number, size: number) => {
    const at = dynsym + i * SYM_SIZE;
    v.setUint32(at, name, true);
    out[at + 4] = (STB_GLOBAL << 4) | type;
    v.setUint16(at + 6, DEFINED_SECTION, true);
    v.setBigUint64(at + 8, BigInt(value), true);
    v.setBigUint64(at + 16, BigInt(size), true);
  };
  FUNCTIONS.forEach((_, i) => sym(i + 1, strings.offsets[i]!, STT.FUNC, starts[i]!, 0));
  sym(FUNCTIONS.length + 1, strings.offsets[FUNCTIONS.length]!, STT.OBJECT, slots, 8 * SLOTS.length);
  out.set(strings.bytes, dynstr);
  out.set(codeBytes, code);
  return out;
}

/** The level and text of each message a plugin logs. */
export type PluginLogSink = (level: number, text: string) => void;

/**
 * The loaded host: its slots are set through this object. Loaded once per process; the callback
 * stays alive as long as the process.
 */
export class PluginHost {
  static #loaded: PluginHost | undefined;
  #slots: Deno.UnsafePointerView;
  #slotsAddress: bigint;
  #sink: PluginLogSink = () => {};

  private constructor(slotsAddress: Deno.PointerObject) {
    this.#slots = new Deno.UnsafePointerView(slotsAddress);
    this.#slotsAddress = BigInt(Deno.UnsafePointer.value(slotsAddress));
    const callback = new Deno.UnsafeCallback(
      { parameters: ["u32", "pointer"], result: "void" } as const,
      (level, text) => this.#sink(level, text ? new Deno.UnsafePointerView(text).getCString() : ""),
    );
    const vsnprintf = dlsym(dlopen("libc.so.6", RTLD.NOW), "vsnprintf");
    if (!vsnprintf) throw new LoaderError("libc.so.6 has no vsnprintf");
    this.#set("vsnprintf", BigInt(Deno.UnsafePointer.value(vsnprintf)));
    this.#set("callback", BigInt(Deno.UnsafePointer.value(callback.pointer)));
    this.#set("image_fd", -1n);
    this.#set("log_fd", 2n);
    this.#set("loglevel", 2n);
  }

  /** Loads the host (once): from then on every library dlopen'd finds criu's symbols. */
  static load(): PluginHost {
    if (PluginHost.#loaded) return PluginHost.#loaded;
    const image = buildPluginHost();
    const memfd = dlLib().memfd_create(cstr("criu-ts-plugin-host"), 1 /* MFD_CLOEXEC */);
    if (memfd < 0) throw new LoaderError("memfd_create failed for the plugin host");
    let written = 0;
    while (written < image.length) {
      const n = Number(libc.write(memfd, image.subarray(written), BigInt(image.length - written)));
      if (n <= 0) throw new LoaderError("Cannot write the plugin host");
      written += n;
    }
    try {
      const handle = dlopen(`/proc/self/fd/${memfd}`, RTLD.NOW | RTLD.GLOBAL);
      const slots = dlsym(handle, SLOTS_SYMBOL);
      if (!slots) throw new LoaderError(`The plugin host has no ${SLOTS_SYMBOL}`);
      PluginHost.#loaded = new PluginHost(slots);
    } finally {
      libc.close(memfd);
    }
    return PluginHost.#loaded;
  }

  /** Writes a slot: the host's segment is writable, and Deno gives a view over it. */
  #set(s: Slot, value: bigint): void {
    const at = Deno.UnsafePointer.create(this.#slotsAddress + BigInt(8 * SLOTS.indexOf(s)))!;
    new BigInt64Array(Deno.UnsafePointerView.getArrayBuffer(at, 8))[0] = value;
  }

  /** What criu_get_image_dir() answers: an fd on the images directory. */
  set imageDirFd(fd: number) {
    this.#set("image_fd", BigInt(fd));
  }

  /** What log_get_loglevel() answers, and the fd log_get_fd() answers. */
  setLog(level: number, fd: number, sink: PluginLogSink): void {
    this.#set("loglevel", BigInt(level));
    this.#set("log_fd", BigInt(fd));
    this.#sink = sink;
  }

  /** The current value of a slot (for tests). */
  slot(s: Slot): bigint {
    return this.#slots.getBigInt64(8 * SLOTS.indexOf(s));
  }
}
