/* The same signalfd plugin through the old API: functions found by their names. */
#include "sigfd_common.h"
#include "criu-plugin.h"
#include "criu-log.h"

int cr_plugin_init(void)
{
	trace("init");
	return mode_is("fail-init") ? -1 : 0;
}

void cr_plugin_fini(void)
{
	trace("fini");
}

int cr_plugin_dump_file(int fd, int id)
{
	unsigned long long mask = 0;
	int flags = 0, r = read_signalfd(fd, &mask, &flags);

	if (r)
		return r;
	trace("dump %d", id);
	pr_info("old sigfd plugin: saving signalfd %d\n", id);
	return save_signalfd(criu_get_image_dir(), id, mask, flags);
}

int cr_plugin_restore_file(int id)
{
	trace("restore %d", id);
	return load_signalfd(criu_get_image_dir(), id);
}
