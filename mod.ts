/**
 * criu-ts as a library: the RPC client, which drives `criu swrk` (criu-ts's or CRIU's) or a running
 * `criu service`, and the protocol's message types.
 */
export {
  CriuClient,
  type CriuClientOptions,
  CriuConnection,
  CriuConnectionError,
  type CriuNotify,
  type CriuOptionsInit,
  type CriuRequestInit,
  CriuRpcError,
  defaultCriuPath,
} from "./src/rpc/client.ts";
export {
  criu_cg_mode,
  type criu_dump_resp,
  type criu_features,
  criu_network_lock_method,
  type criu_notify,
  type criu_opts,
  criu_optsSchema,
  criu_pre_dump_mode,
  type criu_req,
  criu_req_type,
  criu_reqSchema,
  type criu_resp,
  criu_respSchema,
  type criu_restore_resp,
  type criu_version,
} from "./src/images/gen/rpc_pb.ts";
export { CRIU_VERSION } from "./src/cli/help.ts";
// Plugins written in TypeScript: the interface a plugin module's default export implements.
export {
  type CriuPlugin,
  ENOTSUP,
  HOOK,
  type PluginContext,
  type PluginFd,
  type PluginImages,
  type PluginLog,
  type RestoredFile,
  STAGE,
  type Stage,
} from "./src/plugins/api.ts";
