/** The options and CRIU's option table live in the neutral options module, shared with RPC. */
export * from "../options/options.ts";
export * from "../options/table.ts";
