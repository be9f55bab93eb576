/*
 * A plugin that takes one external mount: the one whose mountpoint ends in CRIU_TS_PLUGIN_MOUNT
 * (a suffix, since the tests' paths are temporary). At dump it records the mount's id in the
 * images directory (mount-plugin-ID, holding the mountpoint it was given); at restore it checks
 * that record and binds CRIU_TS_PLUGIN_MOUNT_SOURCE where criu asks. Every call is traced
 * (CRIU_TS_PLUGIN_TRACE); CRIU_TS_PLUGIN_MODE=fail-restore makes the restore fail.
 */
#include "perf_common.h"
#include "criu-plugin.h"
#include "criu-log.h"

#include <sys/mount.h>

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return m > 0 && n >= m && strcmp(s + n - m, suffix) == 0;
}

static int mount_plugin_dump(char *mountpoint, int id)
{
	const char *wanted = getenv("CRIU_TS_PLUGIN_MOUNT");
	char name[64];
	int fd;

	trace("dump-mount %s %d", mountpoint, id);
	if (!wanted || !ends_with(mountpoint, wanted))
		return -ENOTSUP;
	snprintf(name, sizeof(name), "mount-plugin-%d", id);
	fd = openat(criu_get_image_dir(), name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, mountpoint, strlen(mountpoint)) != (ssize_t)strlen(mountpoint)) {
		close(fd);
		return -EIO;
	}
	close(fd);
	pr_info("mount plugin: took mount %d at %s\n", id, mountpoint);
	return 0;
}

static int mount_plugin_restore(int id, char *mountpoint, char *old_root, int *is_file)
{
	const char *source = getenv("CRIU_TS_PLUGIN_MOUNT_SOURCE");
	char name[64], saved[512] = "";
	int fd;
	ssize_t n;

	trace("restore-mount %d %s %s %s", id, mountpoint, old_root, is_file ? "is_file" : "NULL");
	snprintf(name, sizeof(name), "mount-plugin-%d", id);
	fd = openat(criu_get_image_dir(), name, O_RDONLY);
	if (fd < 0)
		return -ENOTSUP;
	n = read(fd, saved, sizeof(saved) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	if (mode_is("fail-restore") || !source)
		return -EINVAL;
	if (mount(source, mountpoint, NULL, MS_BIND, NULL))
		return -errno;
	pr_info("mount plugin: mount %d (%s) bound from %s\n", id, saved, source);
	return 0;
}

CR_PLUGIN_REGISTER_DUMMY("mount")
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__DUMP_EXT_MOUNT, mount_plugin_dump)
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__RESTORE_EXT_MOUNT, mount_plugin_restore)
