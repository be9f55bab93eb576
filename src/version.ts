/** The CRIU release whose command line, images and RPC criu-ts follows. */
export const CRIU_VERSION = "4.2";
