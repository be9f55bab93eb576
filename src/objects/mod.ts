/**
 * Every kind of file and mapping backing criu-ts knows; importing this registers them all with the
 * files registry (files.ts) and the mapping registry (mappings.ts).
 */
import "./regfile.ts";
import "./tty.ts";
import "./pipe.ts";
import "./eventfd.ts";
import "./eventpoll.ts";
import "./mapping_regfile.ts";
import "./mapping_shmem.ts";
import "./mapping_hugetlb.ts";
import "./mapping_aio.ts";
