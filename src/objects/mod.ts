/** Every kind of object criu-ts knows; importing this registers them all with their registries. */
// Before regular files: a memfd looks like an unlinked file ("/memfd:NAME (deleted)").
import "./memfd.ts";
// Before the regular files: a message queue's fd looks like one.
import "./mqueue.ts";
import "./regfile.ts";
// After regular files (which own type REG at restore), before FIFOs and terminals: any O_PATH fd.
import "./opath.ts";
import "./tty.ts";
import "./pipe.ts";
import "./fifo.ts";
import "./eventfd.ts";
import "./signalfd.ts";
import "./timerfd.ts";
import "./inotify.ts";
import "./fanotify.ts";
import "./pidfd.ts";
import "./eventpoll.ts";
import "./unix_socket.ts";
import "./inet_socket.ts";
import "./netlink_socket.ts";
import "./packet_socket.ts";
// What no file kind above takes goes to the plugins.
import "./ext_file.ts";

// Every backing of memory mappings: importing these registers them with the mappings registry.
import "./mapping_shmem.ts";
import "./mapping_hugetlb.ts";
import "./mapping_aio.ts";
import "./mapping_sysvshm.ts";
// Before regular files: a memfd's area looks like a removed file's ("/memfd:NAME (deleted)").
import "./mapping_memfd.ts";
// Last: any other file with a path, its name gone or not (the kernel's own objects are taken above).
import "./mapping_regfile.ts";

// Every kind of namespace: importing these registers them with the namespaces registry.
import "./pidns.ts";
import "./netns.ts";
import "./utsns.ts";
import "./timens.ts";
import "./ipcns.ts";
import "./mntns.ts";
import "./cgroupns.ts";
import "./userns.ts";
