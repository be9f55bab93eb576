/** The errors of option parsing live with the options (src/options), shared with RPC. */
export { InvalidValue, isUsageError, UsageError } from "../options/errors.ts";
