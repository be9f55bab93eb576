/*
 * criu-log.h for criu-ts: logging from a plugin into criu's log, at CRIU's levels. The messages
 * go to the log file (-o) at their level (-v); errors also to stderr, as criu's own.
 */
#ifndef CRIU_TS_LOG_H
#define CRIU_TS_LOG_H

#include <errno.h>
#include <string.h>

#define LOG_UNSET (-1)
#define LOG_MSG 0   /* always printed */
#define LOG_ERROR 1 /* errors */
#define LOG_WARN 2  /* warnings (the default level) */
#define LOG_INFO 3  /* information (-v3) */
#define LOG_DEBUG 4 /* debugging (-v4) */

extern void print_on_level(unsigned int loglevel, const char *format, ...) __attribute__((__format__(__printf__, 2, 3)));
extern unsigned int log_get_loglevel(void);
extern int log_get_fd(void);

#ifndef LOG_PREFIX
#define LOG_PREFIX
#endif

#define pr_msg(fmt, ...) print_on_level(LOG_MSG, fmt, ##__VA_ARGS__)
#define pr_info(fmt, ...) print_on_level(LOG_INFO, LOG_PREFIX fmt, ##__VA_ARGS__)
#define pr_err(fmt, ...) print_on_level(LOG_ERROR, "Error (%s:%d): " LOG_PREFIX fmt, __FILE__, __LINE__, ##__VA_ARGS__)
#define pr_warn(fmt, ...) print_on_level(LOG_WARN, "Warn  (%s:%d): " LOG_PREFIX fmt, __FILE__, __LINE__, ##__VA_ARGS__)
#define pr_debug(fmt, ...) print_on_level(LOG_DEBUG, LOG_PREFIX fmt, ##__VA_ARGS__)
#define pr_perror(fmt, ...) pr_err(fmt ": %s\n", ##__VA_ARGS__, strerror(errno))

static inline int pr_quelled(unsigned int loglevel)
{
	return log_get_loglevel() < loglevel && loglevel != LOG_MSG;
}

#endif
