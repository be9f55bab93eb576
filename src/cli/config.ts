/** Config files are read by the options module, for the command line and RPC alike. */
export {
  type ConfigEnvironment,
  type ConfigFile,
  configFiles,
  configFileWords,
  GLOBAL_CONFIG_FILE,
  systemConfigEnvironment,
  USER_CONFIG_FILE,
} from "../options/config.ts";
