/* cli/image.h — the `cowvm image` subcommands (cli/cmd-image*.c). */
#ifndef CLI_IMAGE_H
#define CLI_IMAGE_H

#include "cow/cow.h"

int cli_image_create(int argc, char **argv);
int cli_image_resize(int argc, char **argv);
int cli_image_info(int argc, char **argv);
int cli_image_check(int argc, char **argv);
int cli_image_convert(int argc, char **argv);
int cli_image_rebase(int argc, char **argv);
int cli_image_commit(int argc, char **argv);
int cli_image_map(int argc, char **argv);
int cli_image_bench(int argc, char **argv);

/* "zlib"/"zstd" -> enum. 0 or -EINVAL. */
int cli_image_parse_comp(const char *s, enum cow_comp *out);
/* "off"/"metadata"/"falloc"/"full" (qemu-img's preallocation=) -> enum.
 * 0 or -EINVAL. */
int cli_image_parse_prealloc(const char *s, enum cow_prealloc_mode *out);
/* --output=json|human: *json set, 0; -1 (and *json unchanged) for anything
 * else. */
int cli_image_output_opt(const char *arg, bool *json);
/* Print @err like cli_error_err; when it is a lock conflict ("image is in
 * use", -EBUSY) of a command that reads only, add the -U hint. */
void cli_image_error(const struct ut_err *err, bool read_only);
/* Close @img (NULL: nothing; cow_close_msg) for a command whose exit
 * status so far is @ret, and return the status: CLI_EXIT_FAIL when the
 * close failed (the final flush, the store of persistent bitmaps, tracking
 * that ended), with its message printed; a problem that did not fail it
 * (damaged bitmaps left in use, clusters a store leaked) is printed as a
 * warning. */
int cli_image_close(struct cow_img *img, int ret);

#endif
