/* The same perf event plugin through the old API: functions found by their names. */
#include "perf_common.h"
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
	int flags = 0, r = read_perf_event(fd, &flags);

	if (r)
		return r;
	trace("dump %d", id);
	pr_info("old perf plugin: saving perf event %d\n", id);
	return save_perf_event(criu_get_image_dir(), id, flags);
}

int cr_plugin_restore_file(int id)
{
	trace("restore %d", id);
	return load_perf_event(criu_get_image_dir(), id);
}

int cr_plugin_dump_unix_sk(int fd, int id)
{
	int r = save_unix_peer(criu_get_image_dir(), fd, id);

	if (r == 0)
		trace("dump unix %d", id);
	return r;
}

int cr_plugin_restore_unix_sk(int id)
{
	trace("restore unix %d", id);
	return connect_unix_peer(criu_get_image_dir(), id);
}
