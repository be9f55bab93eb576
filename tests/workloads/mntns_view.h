/*
 * The mount view of a mount namespace workload, as text that must not change across a restore:
 * one line per mount of /proc/self/mountinfo, with mount ids and peer group numbers (which a
 * restore renumbers) replaced by the mountpoints they name, sorted (the kernel's order of
 * siblings may differ).
 */
#ifndef MNTNS_VIEW_H
#define MNTNS_VIEW_H

#include "lib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXLINES 128
#define VIEW 16384

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

#endif
