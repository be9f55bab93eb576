/**
 * fanotify's constants (<linux/fanotify.h>, pinned by ffi/structs_test.ts). Groups and marks are
 * made by remote syscalls in the restored task (src/objects/fanotify.ts), so only the numbers live here.
 */

/** fanotify_init flags criu-ts sets itself (the rest come from the image as they are). */
export const FAN_NONBLOCK = 2;

/** fanotify_mark flags. */
export const FAN_MARK = { ADD: 0x1, MOUNT: 0x10, IGNORED_MASK: 0x20 } as const;
