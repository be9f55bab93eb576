/**
 * What the generated gen/*_pb.ts files import in place of "@bufbuild/protobuf/codegenv2" (see
 * rewrite_imports in buf.gen.yaml): the same functions, except that each descriptor is built the
 * first time something looks into it. Building all 69 files' descriptors when the program loads
 * cost every criu command about 40 ms, and a command needs a handful of them.
 *
 * A descriptor handed out here is a stand-in that forwards every access to the real one, built on
 * demand. protobuf-es matches messages to descriptors by type name, not by object identity, so a
 * stand-in and the real descriptor (which nested fields point to) are interchangeable.
 */
import * as codegen from "@bufbuild/protobuf/codegenv2";
import type { GenEnum, GenExtension, GenMessage } from "@bufbuild/protobuf/codegenv2";
import type { DescFile, JsonValue, Message } from "@bufbuild/protobuf";

export type * from "@bufbuild/protobuf/codegenv2";

/** How to get the real descriptor behind each stand-in. */
const realOf = new WeakMap<object, () => object>();
/** Stand-ins whose descriptor was built. */
const built = new WeakSet<object>();

function lazy<T extends object>(build: () => T): T {
  let descriptor: T | undefined;
  const get = () => {
    if (descriptor === undefined) {
      descriptor = build();
      built.add(standIn);
    }
    return descriptor;
  };
  const standIn: T = new Proxy({} as T, {
    get: (_, key) => Reflect.get(get(), key),
    has: (_, key) => Reflect.has(get(), key),
    ownKeys: () => Reflect.ownKeys(get()),
    getOwnPropertyDescriptor: (_, key) => {
      const d = Reflect.getOwnPropertyDescriptor(get(), key);
      // A stand-in may not claim a fixed property that its own (empty) target lacks.
      if (d) d.configurable = true;
      return d;
    },
    getPrototypeOf: () => Reflect.getPrototypeOf(get()),
    set: () => false,
    defineProperty: () => false,
    deleteProperty: () => false,
  });
  realOf.set(standIn, get);
  return standIn;
}

/** The real descriptor of a stand-in (building it now), or `d` itself. */
function real<T extends object>(d: T): T {
  const get = realOf.get(d);
  return get ? get() as T : d;
}

export function fileDesc(b64: string, imports?: DescFile[]): DescFile {
  return lazy(() => codegen.fileDesc(b64, imports?.map(real)));
}

export function messageDesc<
  Shape extends Message,
  Opt extends { jsonType?: unknown; validType?: unknown } = { jsonType: undefined; validType: undefined },
>(file: DescFile, path: number, ...paths: number[]): GenMessage<Shape, Opt> {
  return lazy(() => codegen.messageDesc<Shape, Opt>(real(file), path, ...paths));
}

export function enumDesc<Shape extends number, JsonType extends JsonValue = JsonValue>(
  file: DescFile,
  path: number,
  ...paths: number[]
): GenEnum<Shape, JsonType> {
  return lazy(() => codegen.enumDesc<Shape, JsonType>(real(file), path, ...paths));
}

export function extDesc<Extendee extends Message, Value>(
  file: DescFile,
  path: number,
  ...paths: number[]
): GenExtension<Extendee, Value> {
  return lazy(() => codegen.extDesc<Extendee, Value>(real(file), path, ...paths));
}

/** Whether `d` came from here and its descriptor has not been needed yet. */
export function isUnbuilt(d: object): boolean {
  return realOf.has(d) && !built.has(d);
}
