/*
 * A plugin that takes network links of one kind, "ifb" (criu-ts and CRIU make none themselves),
 * as external links, and leaves every other kind to the chain. It writes each question it gets
 * into IFB_LINK_TRACE when that is set, so the test sees the index, type and kind it was given.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "criu-plugin.h"

static int take_ifb_links(int index, int type, char *kind)
{
	const char *trace = getenv("IFB_LINK_TRACE");
	if (trace) {
		FILE *f = fopen(trace, "a");
		if (f) {
			fprintf(f, "link %d type %d kind %s\n", index, type, kind);
			fclose(f);
		}
	}
	return strcmp(kind, "ifb") == 0 ? 0 : -ENOTSUP;
}

CR_PLUGIN_REGISTER_DUMMY("ifb_link")
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__DUMP_EXT_LINK, take_ifb_links)
