/*
 * mntns: the process lives in a mount namespace of its own, rooted at a bind mount of the host's
 * root filesystem (pivot_root), holding under BASE (RESULT_FILE.mnt):
 *   t       a tmpfs with files (a.txt, d/b.txt), our cwd (t/d) and an open fd (t/a.txt, offset 2)
 *   bfile   a bind mount of the file t/a.txt
 *   bdir    a bind mount of the directory src
 *   ro      a read-only bind mount of src
 *   sh, sl  a shared tmpfs and its slave (a bind made MS_SLAVE), with a tmpfs mounted at sh/inner
 *           that propagated to sl/inner
 *   over    src bound there, then src2 bound over it
 * and /proc. Its view (mountinfo with ids replaced by mountpoints, sorted) is recorded at start
 * and must be the same after restore, with the files' contents; propagation must still work (a
 * mount made under sh appears under sl, not the other way), ro must refuse writes.
 * With `exec`, once in its new root the program execs itself again (`exec-inside`) with its log
 * reopened there, as a container's init is: then its program, libraries and fds all live on
 * mounts of the namespace (CRIU refuses a mapping or fd on a mount outside it).
 *
 *   mntns RESULT_FILE [exec]
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAXLINES 128
#define VIEW 16384

static char base[512];

static const char *at(const char *rel)
{
	static char bufs[8][1024];
	static int next;
	char *b = bufs[next++ % 8];
	snprintf(b, sizeof(bufs[0]), "%s/%s", base, rel);
	return b;
}

static void put(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		wl_die("write %s", path);
	close(fd);
}

static void mnt(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	if (mount(src, dst, type, flags, data))
		wl_die("mount %s on %s", src ? src : "-", dst);
}

struct line {
	int id, parent;
	char mp[512], text[2048];
	int shared, master;
};

/* Mount ids and peer group numbers change across a restore: name them by mountpoints instead. */
static void view(char *out, size_t size)
{
	static char buf[65536];
	static struct line l[MAXLINES];
	char *lines[MAXLINES];
	int n = 0;
	if (wl_read_file("/proc/self/mountinfo", buf, sizeof(buf)) <= 0)
		wl_die("read mountinfo");
	for (char *s = strtok(buf, "\n"); s && n < MAXLINES; s = strtok(NULL, "\n"), n++) {
		char root[512], opts[256], rest[1024] = "", fs[64], src[256], sopts[512];
		char opt1[64] = "", opt2[64] = "";
		int off = 0;
		if (sscanf(s, "%d %d %*s %511s %511s %255s %n", &l[n].id, &l[n].parent, root, l[n].mp, opts, &off) != 5)
			wl_die("parse %s", s);
		char *dash = strstr(s + off, "- ");
		sscanf(dash + 2, "%63s %255s %511s", fs, src, sopts);
		sscanf(s + off, "%63s %63s", opt1, opt2);
		l[n].shared = l[n].master = 0;
		for (char *o = opt1; o; o = (o == opt1 ? opt2 : NULL)) {
			if (!strncmp(o, "shared:", 7))
				l[n].shared = atoi(o + 7);
			if (!strncmp(o, "master:", 7))
				l[n].master = atoi(o + 7);
		}
		snprintf(l[n].text, sizeof(l[n].text), "%s root=%s %s %s %s %s", l[n].mp, root, opts, fs, src, sopts);
		(void)rest;
	}
	for (int i = 0; i < n; i++) {
		char extra[1600] = "";
		const char *parent = "(outside)", *peer = "", *master = "";
		for (int j = 0; j < n; j++) {
			if (l[j].id == l[i].parent)
				parent = l[j].mp;
			if (l[i].shared && l[j].shared == l[i].shared && !*peer)
				peer = l[j].mp;
			if (l[i].master && l[j].shared == l[i].master && !*master)
				master = l[j].mp;
		}
		snprintf(extra, sizeof(extra), " parent=%s%s%s%s%s", parent, *peer ? " shared-with=" : "", peer,
			 l[i].master ? " slave-of=" : "", l[i].master ? (*master ? master : "(outside)") : "");
		strncat(l[i].text, extra, sizeof(l[i].text) - strlen(l[i].text) - 1);
		lines[i] = l[i].text;
	}
	/* sorted: the kernel's order of siblings may differ */
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && strcmp(lines[j - 1], lines[j]) > 0; j--) {
			char *t = lines[j];
			lines[j] = lines[j - 1];
			lines[j - 1] = t;
		}
	out[0] = 0;
	for (int i = 0; i < n; i++) {
		strncat(out, lines[i], size - strlen(out) - 2);
		strcat(out, "\n");
	}
}

static void expect_file(const char *rel, const char *text)
{
	char buf[256];
	ssize_t n = wl_read_file(at(rel), buf, sizeof(buf));
	WL_CHECK(n >= 0 && !strcmp(buf, text), "%s holds \"%s\", expected \"%s\"", rel, n >= 0 ? buf : "(unreadable)",
		 text);
}

static dev_t dev_of(const char *path)
{
	struct stat st;
	if (stat(path, &st))
		return (dev_t)-1;
	return st.st_dev;
}

/* The new root is a bind of the host's /: a host path names the same file there. */
static void exec_inside(char **argv, const char *exe, const char *log)
{
	int fd = open(log, O_WRONLY | O_APPEND);
	if (fd < 0 || dup2(fd, 1) != 1 || dup2(fd, 2) != 2 || close(fd))
		wl_die("reopen the log %s", log);
	execl(exe, argv[0], argv[1], "exec-inside", (char *)NULL);
	wl_die("exec %s", exe);
}

int main(int argc, char **argv)
{
	static char before[VIEW], after[VIEW];
	static char exe[1024], log[1024];
	int inside = argc > 2 && !strcmp(argv[2], "exec-inside");
	wl_init(argc, argv);
	closefrom(3); /* fds inherited from a shell would be outside the view */
	wl_path("mnt", base, sizeof(base));
	if (inside)
		goto in_new_root;
	if (readlink("/proc/self/exe", exe, sizeof(exe) - 1) < 0 || readlink("/proc/self/fd/1", log, sizeof(log) - 1) < 0)
		wl_die("readlink exe, log");
	const char *dirs[] = { "", "newroot", "t", "src", "src2", "bdir", "ro", "sh", "sl", "over" };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdir(at(dirs[i]), 0755) && errno != EEXIST)
			wl_die("mkdir %s", dirs[i]);
	put(at("src/f.txt"), "from src");
	put(at("src2/g.txt"), "from src2");
	put(at("bfile"), "");

	if (unshare(CLONE_NEWNS))
		wl_die("unshare(CLONE_NEWNS)");
	mnt(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	mnt("/", at("newroot"), NULL, MS_BIND, NULL);
	if (chdir(at("newroot")) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) || chdir("/"))
		wl_die("pivot_root");
	if (argc > 2 && !strcmp(argv[2], "exec"))
		exec_inside(argv, exe, log);
in_new_root:;
	/* stdin (the host's /dev/null) is outside this view: a file of the view takes its place */
	int in = open(at("src/f.txt"), O_RDONLY);
	if (in < 0 || dup2(in, 0) != 0 || close(in))
		wl_die("reopen stdin");
	mnt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mnt("tmpfs", at("t"), "tmpfs", MS_NOSUID, "size=1m,mode=755");
	put(at("t/a.txt"), "hello tmpfs");
	if (mkdir(at("t/d"), 0700))
		wl_die("mkdir t/d");
	put(at("t/d/b.txt"), "inner file");
	mnt(at("t/a.txt"), at("bfile"), NULL, MS_BIND, NULL);
	mnt(at("src"), at("bdir"), NULL, MS_BIND, NULL);
	mnt(at("src"), at("ro"), NULL, MS_BIND, NULL);
	mnt(NULL, at("ro"), NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL);
	mnt("shm", at("sh"), "tmpfs", 0, "size=1m");
	mnt(NULL, at("sh"), NULL, MS_SHARED, NULL);
	mnt(at("sh"), at("sl"), NULL, MS_BIND, NULL);
	mnt(NULL, at("sl"), NULL, MS_SLAVE, NULL);
	if (mkdir(at("sh/inner"), 0755) || mkdir(at("sh/later"), 0755))
		wl_die("mkdir sh/inner");
	mnt("inner", at("sh/inner"), "tmpfs", 0, "size=64k");
	put(at("sh/inner/i.txt"), "propagated");
	mnt(at("src"), at("over"), NULL, MS_BIND, NULL);
	mnt(at("src2"), at("over"), NULL, MS_BIND, NULL);

	int fd = open(at("t/a.txt"), O_RDONLY);
	char two[3] = "";
	if (fd < 0 || read(fd, two, 2) != 2 || chdir(at("t/d")))
		wl_die("open t/a.txt, chdir t/d");
	view(before, sizeof(before));
	wl_log("view:\n%s", before);
	wl_ready();
	wl_wait();

	view(after, sizeof(after));
	WL_CHECK(!strcmp(before, after), "the mount view changed:\n--- before\n%s--- after\n%s", before, after);
	expect_file("t/a.txt", "hello tmpfs");
	expect_file("t/d/b.txt", "inner file");
	expect_file("bfile", "hello tmpfs");
	expect_file("bdir/f.txt", "from src");
	expect_file("ro/f.txt", "from src");
	expect_file("over/g.txt", "from src2");
	expect_file("sh/inner/i.txt", "propagated");
	expect_file("sl/inner/i.txt", "propagated");
	WL_CHECK(dev_of(at("bfile")) == dev_of(at("t")), "bfile is not on the tmpfs t");
	WL_CHECK(dev_of(at("sl/inner")) == dev_of(at("sh/inner")), "sl/inner is not the mount sh/inner");
	WL_CHECK(open(at("ro/new"), O_WRONLY | O_CREAT, 0644) < 0 && errno == EROFS, "ro is writable");

	char rest[16] = "";
	struct stat st;
	WL_CHECK(read(fd, rest, sizeof(rest) - 1) == 9 && !strcmp(rest, "llo tmpfs"), "the fd read \"%s\"", rest);
	WL_CHECK(fstat(fd, &st) == 0 && st.st_dev == dev_of(at("t")), "the fd is not on the tmpfs t");
	char cwd[1024] = "";
	WL_CHECK(getcwd(cwd, sizeof(cwd)) && !strcmp(cwd, at("t/d")), "cwd is %s", cwd);
	WL_CHECK(dev_of(".") == dev_of(at("t")), "cwd is not on the tmpfs t");

	/* propagation still works: sh → sl, never back */
	mnt("later", at("sh/later"), "tmpfs", 0, "size=64k");
	WL_CHECK(dev_of(at("sl/later")) == dev_of(at("sh/later")), "a mount under sh did not reach sl");
	umount2(at("sh/later"), MNT_DETACH);
	mnt("back", at("sl/later"), "tmpfs", 0, "size=64k");
	WL_CHECK(dev_of(at("sh/later")) != dev_of(at("sl/later")), "a mount under sl reached sh");
	wl_finish();
}
