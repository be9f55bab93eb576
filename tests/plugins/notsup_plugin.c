/* A plugin that is asked first (its name sorts first) and takes nothing: the chain goes on. */
#include "perf_common.h"
#include "criu-plugin.h"

static int notsup_dump(int fd, int id)
{
	(void)fd;
	trace("notsup dump %d", id);
	return -ENOTSUP;
}

static int notsup_restore(int id, bool *retry_needed)
{
	*retry_needed = false;
	trace("notsup restore %d", id);
	return -ENOTSUP;
}

CR_PLUGIN_REGISTER_DUMMY("notsup")
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__DUMP_EXT_FILE, notsup_dump)
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__RESTORE_EXT_FILE, notsup_restore)
