/*
 * criu-plugin.h for criu-ts: what a plugin needs to be loaded by criu-ts (and by CRIU: the
 * descriptor, hook numbers, stages and hook signatures follow CRIU's plugin ABI, version 0.2.0).
 *
 * A plugin is a shared library. The new API: define the descriptor with CR_PLUGIN_REGISTER (or
 * CR_PLUGIN_REGISTER_DUMMY) and fill hooks with CR_PLUGIN_REGISTER_HOOK; the hooks are set by the
 * library's constructors when it is loaded. The old API (deprecated): functions named
 * cr_plugin_init, cr_plugin_fini, cr_plugin_dump_file, ... found by name.
 *
 * Hooks answer 0 (or an fd, for the restore hooks) when they took the object, -ENOTSUP when it
 * is not theirs (the next plugin is asked), or another negative errno to fail the operation.
 */
#ifndef CRIU_TS_PLUGIN_H
#define CRIU_TS_PLUGIN_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#define CRIU_PLUGIN_GEN_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + (c))
#define CRIU_PLUGIN_VERSION_MAJOR 0
#define CRIU_PLUGIN_VERSION_MINOR 2
#define CRIU_PLUGIN_VERSION_SUBLEVEL 0
#define CRIU_PLUGIN_VERSION_OLD CRIU_PLUGIN_GEN_VERSION(0, 1, 0)
#define CRIU_PLUGIN_VERSION \
	CRIU_PLUGIN_GEN_VERSION(CRIU_PLUGIN_VERSION_MAJOR, CRIU_PLUGIN_VERSION_MINOR, CRIU_PLUGIN_VERSION_SUBLEVEL)

/* Where each hook sits in the descriptor's table. */
enum {
	CR_PLUGIN_HOOK__DUMP_UNIX_SK = 0,
	CR_PLUGIN_HOOK__RESTORE_UNIX_SK = 1,
	CR_PLUGIN_HOOK__DUMP_EXT_FILE = 2,
	CR_PLUGIN_HOOK__RESTORE_EXT_FILE = 3,
	CR_PLUGIN_HOOK__DUMP_EXT_MOUNT = 4,
	CR_PLUGIN_HOOK__RESTORE_EXT_MOUNT = 5,
	CR_PLUGIN_HOOK__DUMP_EXT_LINK = 6,
	CR_PLUGIN_HOOK__HANDLE_DEVICE_VMA = 7,
	CR_PLUGIN_HOOK__UPDATE_VMA_MAP = 8,
	CR_PLUGIN_HOOK__RESUME_DEVICES_LATE = 9,
	CR_PLUGIN_HOOK__PAUSE_DEVICES = 10,
	CR_PLUGIN_HOOK__CHECKPOINT_DEVICES = 11,
	CR_PLUGIN_HOOK__POST_FORKING = 12,
	CR_PLUGIN_HOOK__RESTORE_INIT = 13,
	CR_PLUGIN_HOOK__DUMP_DEVICES_LATE = 14,
	CR_PLUGIN_HOOK__MAX
};

/* The type of each hook function, named after its number: CR_PLUGIN_HOOK__X_t. */
#define DECLARE_PLUGIN_HOOK_ARGS(__hook, ...) typedef int(__hook##_t)(__VA_ARGS__)

/* fd: the socket, in criu's process; id: its inode. */
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__DUMP_UNIX_SK, int fd, int id);
/* Returns an fd of criu's process, which the restored task gets a copy of. */
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__RESTORE_UNIX_SK, int id);
/* fd: the file, in criu's process; id: the file's id in the images. */
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__DUMP_EXT_FILE, int fd, int id);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__RESTORE_EXT_FILE, int id, bool *retry_needed);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__DUMP_EXT_MOUNT, char *mountpoint, int id);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__RESTORE_EXT_MOUNT, int id, char *mountpoint, char *old_root, int *is_file);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__DUMP_EXT_LINK, int index, int type, char *kind);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__HANDLE_DEVICE_VMA, int fd, const struct stat *stat);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__UPDATE_VMA_MAP, const char *path, const uint64_t addr,
			 const uint64_t old_pgoff, uint64_t *new_pgoff, int *plugin_fd);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__RESUME_DEVICES_LATE, int pid);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__PAUSE_DEVICES, int pid);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__CHECKPOINT_DEVICES, int pid);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__POST_FORKING, void);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__RESTORE_INIT, void);
DECLARE_PLUGIN_HOOK_ARGS(CR_PLUGIN_HOOK__DUMP_DEVICES_LATE, int id);

/* What init(stage) and exit(stage, ret) are told. */
enum {
	CR_PLUGIN_STAGE__DUMP,
	CR_PLUGIN_STAGE__PRE_DUMP,
	CR_PLUGIN_STAGE__RESTORE,
	CR_PLUGIN_STAGE_MAX
};

/* The descriptor criu looks for under the name CR_PLUGIN_DESC. */
typedef struct {
	const char *name;
	int (*init)(int stage);		  /* 0 to take part */
	void (*exit)(int stage, int ret); /* always called; ret != 0 when the operation failed */
	unsigned int version;
	unsigned int max_hooks;
	void *hooks[CR_PLUGIN_HOOK__MAX];
} cr_plugin_desc_t;

extern cr_plugin_desc_t CR_PLUGIN_DESC;

#define CR_PLUGIN_REGISTER(___name, ___init, ___exit) \
	cr_plugin_desc_t CR_PLUGIN_DESC = {           \
		.name = ___name,                      \
		.init = ___init,                      \
		.exit = ___exit,                      \
		.version = CRIU_PLUGIN_VERSION,       \
		.max_hooks = CR_PLUGIN_HOOK__MAX,     \
	};

static inline int cr_plugin_dummy_init(int stage)
{
	(void)stage;
	return 0;
}
static inline void cr_plugin_dummy_exit(int stage, int ret)
{
	(void)stage;
	(void)ret;
}

#define CR_PLUGIN_REGISTER_DUMMY(___name) CR_PLUGIN_REGISTER(___name, cr_plugin_dummy_init, cr_plugin_dummy_exit)

/* Fills one hook of the descriptor when the library is loaded. */
#define CR_PLUGIN_REGISTER_HOOK(__hook, __func)                                         \
	static void __attribute__((constructor)) cr_plugin_register_hook_##__func(void) \
	{                                                                               \
		CR_PLUGIN_DESC.hooks[__hook] = (void *)__func;                          \
	}

/* An fd on the images directory (it may have no path the plugin can reach). */
extern int criu_get_image_dir(void);

/* The old API, found by function names (deprecated, as in CRIU). */
typedef int(cr_plugin_init_t)(void);
typedef void(cr_plugin_fini_t)(void);
typedef int(cr_plugin_dump_unix_sk_t)(int fd, int id);
typedef int(cr_plugin_restore_unix_sk_t)(int id);
typedef int(cr_plugin_dump_file_t)(int fd, int id);
typedef int(cr_plugin_restore_file_t)(int id);
typedef int(cr_plugin_dump_ext_mount_t)(char *mountpoint, int id);
typedef int(cr_plugin_restore_ext_mount_t)(int id, char *mountpoint, char *old_root, int *is_file);
typedef int(cr_plugin_dump_ext_link_t)(int index, int type, char *kind);

#endif
