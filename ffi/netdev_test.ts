import assert from "node:assert/strict";
import { routesWithoutKernelLocal, routesWithoutLinkState } from "./netdev.ts";

/** One saved route: nlmsghdr (16 bytes) then rtmsg (12 bytes), with `attrs` extra bytes after. */
function route(table: number, protocol: number, flags = 0, attrs = 0): Uint8Array {
  const len = 16 + 12 + attrs;
  const bytes = new Uint8Array((len + 3) & ~3);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, len, true);
  view.setUint16(4, 24, true); // RTM_NEWROUTE
  bytes[16] = 2; // AF_INET
  bytes[20] = table;
  bytes[21] = protocol;
  view.setUint32(24, flags, true);
  return bytes;
}

function dump(...routes: Uint8Array[]): Uint8Array {
  const magic = new Uint8Array(4);
  new DataView(magic.buffer).setUint32(0, 0x45311224, true);
  const out = new Uint8Array(4 + routes.reduce((n, r) => n + r.length, 0));
  out.set(magic);
  let at = 4;
  for (const r of routes) {
    out.set(r, at);
    at += r.length;
  }
  return out;
}

Deno.test("routesWithoutKernelLocal() drops the kernel's local-table routes and keeps every other", () => {
  const main = route(254, 2, 0, 2); // main, kernel, with an attribute that needs padding
  const policy = route(100, 3); // table 100, boot
  const localByHand = route(255, 3); // local, added by someone
  const localKernel = route(255, 2);
  assert.deepEqual(
    routesWithoutKernelLocal(dump(main, localKernel, policy, localKernel, localByHand)),
    dump(main, policy, localByHand),
  );
});

Deno.test("routesWithoutKernelLocal() leaves what is not an ip route dump, or its damaged tail, to ip", () => {
  const notADump = new Uint8Array([1, 2, 3, 4, 5, 6]);
  assert.deepEqual(routesWithoutKernelLocal(notADump), notADump);
  const damaged = dump(route(100, 3), new Uint8Array([9, 9]));
  assert.deepEqual(routesWithoutKernelLocal(damaged), damaged);
});

Deno.test("routesWithoutLinkState() clears the dead and linkdown flags only", () => {
  const out = routesWithoutLinkState(dump(route(254, 3, 0x1 | 0x10 | 0x4)));
  assert.equal(new DataView(out.buffer).getUint32(4 + 24, true), 0x4);
});
