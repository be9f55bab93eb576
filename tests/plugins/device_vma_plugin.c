/*
 * A device plugin for the tests, as a GPU plugin would be shaped: it answers HANDLE_DEVICE_VMA for
 * any block or character device (checking that the struct stat it is given is the fd's own), and
 * at restore UPDATE_VMA_MAP opens the device itself, hands criu that fd to map from and keeps the
 * page offset. Every call goes to the trace file.
 */
#include "perf_common.h"
#include "criu-plugin.h"

#include <inttypes.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static int device_vma(int fd, const struct stat *st)
{
	struct stat own;

	if (!S_ISBLK(st->st_mode) && !S_ISCHR(st->st_mode))
		return -ENOTSUP;
	if (fstat(fd, &own) || own.st_rdev != st->st_rdev || own.st_ino != st->st_ino) {
		trace("handle: the stat given is not the fd's");
		return -EINVAL;
	}
	trace("handle %s %u:%u", S_ISBLK(st->st_mode) ? "block" : "char", major(st->st_rdev), minor(st->st_rdev));
	return 0;
}

static int update_vma_map(const char *path, const uint64_t addr, const uint64_t old_pgoff, uint64_t *new_pgoff,
			  int *plugin_fd)
{
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -errno;
	trace("update %s %" PRIx64 " %" PRIu64, path, addr, old_pgoff);
	*new_pgoff = old_pgoff;
	*plugin_fd = fd;
	return 1;
}

CR_PLUGIN_REGISTER_DUMMY("device_vma")
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__HANDLE_DEVICE_VMA, device_vma)
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__UPDATE_VMA_MAP, update_vma_map)
