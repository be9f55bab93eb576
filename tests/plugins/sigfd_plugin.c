/*
 * A plugin of the new API (descriptor and hooks) that takes signalfds and unix stream sockets
 * connected outside the tree: see sigfd_common.h.
 */
#include "sigfd_common.h"
#include "criu-plugin.h"
#include "criu-log.h"

static int sigfd_init(int stage)
{
	trace("init %d", stage);
	pr_info("sigfd plugin: init at stage %d, images fd %d\n", stage, criu_get_image_dir());
	return mode_is("fail-init") ? -1 : 0;
}

static void sigfd_exit(int stage, int ret)
{
	trace("exit %d %d", stage, ret);
}

CR_PLUGIN_REGISTER("sigfd", sigfd_init, sigfd_exit)

static int sigfd_dump(int fd, int id)
{
	unsigned long long mask = 0;
	int flags = 0, r = read_signalfd(fd, &mask, &flags);

	if (r)
		return r;
	trace("dump %d", id);
	if (mode_is("fail-dump"))
		return -EIO;
	pr_info("sigfd plugin: saving signalfd %d with mask %llx\n", id, mask);
	return save_signalfd(criu_get_image_dir(), id, mask, flags);
}
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__DUMP_EXT_FILE, sigfd_dump)

static int sigfd_restore(int id, bool *retry_needed)
{
	*retry_needed = false;
	trace("restore %d", id);
	if (mode_is("fail-restore"))
		return -EIO;
	return load_signalfd(criu_get_image_dir(), id);
}
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__RESTORE_EXT_FILE, sigfd_restore)

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
