/* A plugin of the new API (descriptor and hooks) that takes perf event fds: see perf_common.h. */
#include "perf_common.h"
#include "criu-plugin.h"
#include "criu-log.h"

static int perf_init(int stage)
{
	trace("init %d", stage);
	pr_info("perf plugin: init at stage %d, images fd %d\n", stage, criu_get_image_dir());
	return mode_is("fail-init") ? -1 : 0;
}

static void perf_exit(int stage, int ret)
{
	trace("exit %d %d", stage, ret);
}

CR_PLUGIN_REGISTER("perf", perf_init, perf_exit)

static int perf_dump(int fd, int id)
{
	int flags = 0, r = read_perf_event(fd, &flags);

	if (r)
		return r;
	trace("dump %d", id);
	if (mode_is("fail-dump"))
		return -EIO;
	pr_info("perf plugin: saving perf event %d with flags %o\n", id, flags);
	return save_perf_event(criu_get_image_dir(), id, flags);
}
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__DUMP_EXT_FILE, perf_dump)

static int perf_restore(int id, bool *retry_needed)
{
	*retry_needed = false;
	trace("restore %d", id);
	if (mode_is("fail-restore"))
		return -EIO;
	return load_perf_event(criu_get_image_dir(), id);
}
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__RESTORE_EXT_FILE, perf_restore)

static int unix_dump(int fd, int id)
{
	int r = save_unix_peer(criu_get_image_dir(), fd, id);

	if (r == 0)
		trace("dump unix %d", id);
	return r;
}
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__DUMP_UNIX_SK, unix_dump)

static int unix_restore(int id)
{
	trace("restore unix %d", id);
	return connect_unix_peer(criu_get_image_dir(), id);
}
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__RESTORE_UNIX_SK, unix_restore)
