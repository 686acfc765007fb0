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
int cli_image_measure(int argc, char **argv);
int cli_image_bench(int argc, char **argv);
int cli_image_compare(int argc, char **argv);
int cli_image_bitmap(int argc, char **argv);
int cli_image_snapshot(int argc, char **argv);

/* The rows of "Snapshot list:" (a header line, then one per snapshot), as
 * qemu-img info and qemu-img snapshot -l print them. */
void cli_image_print_snapshots(const struct cow_snapshot_info *s, uint32_t n);

/* The long options that shape a new qcow2 image (create, convert,
 * measure; resize takes --preallocation), and their parser: option @c
 * (one of the letters below) with @arg goes into @o (--extended-l2: *@extl2
 * = 1 or 0): 0; -1 when @c is none of them; else the exit status of the
 * usage error printed for @cmd (a cluster size that is no power of two from
 * 512 to 2M, a refcount width that is none from 1 to 64, an unknown
 * compression or preallocation mode). */
#define CLI_IMAGE_SHAPE_OPTIONS \
	{ "cluster-size", required_argument, NULL, 'C' }, \
	{ "compression", required_argument, NULL, 'z' }, \
	{ "refcount-bits", required_argument, NULL, 'r' }, \
	{ "extended-l2", optional_argument, NULL, 'x' }, \
	{ "preallocation", required_argument, NULL, 'P' }
int cli_image_shape_opt(const char *cmd, int c, const char *arg, struct cow_create_opts *o, int *extl2);
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
/* As QEMU's file-posix asks the file system where data lies (qemu-img map,
 * compare, measure): data whose host range is a hole (preallocation=metadata, a
 * sparse raw file) reads as zeros. The length of the run at @host of file
 * @fd (at most @len) that is all hole (*hole) or all data (cli/cmd-image.c). */
uint64_t cli_image_host_run(int fd, uint64_t host, uint64_t len, bool *hole);

/* Does @backing, relative to the directory of @file as a backing name is,
 * name @file itself (the same inode, or the same path when @file does not
 * exist yet)? */
bool cli_image_is_own_backing(const char *file, const char *backing);

/* ---- cli/image-reader.c: a source image read ahead on its own thread ---- */
struct cli_reader;
/* A chunk of the source, in order: [off, off + n) either reads as zeros
 * (CLI_RK_ZERO: zero clusters, past the chain or a hole in a raw layer's
 * file, whole @align units; not read), or is held by the layers below
 * those copied (CLI_RK_BACKING: only with @layers; not read), or is in buf
 * (CLI_RK_DATA; room for a chunk plus @align bytes). */
enum cli_rkind { CLI_RK_DATA, CLI_RK_ZERO, CLI_RK_BACKING };
struct cli_rchunk {
	uint64_t off, n;
	enum cli_rkind kind;
	uint8_t *buf;
};
/* Start reading @src (all of its virtual size) ahead in chunks of at most
 * @chunk bytes (a multiple of @align, a power of two: without @layers
 * every chunk starts @align-aligned) on a thread, up to 3 chunks ahead;
 * from now until cli_reader_stop only that thread touches @src. With
 * @layers (>= 1) the chunks describe only the top @layers layers of
 * @src's chain (cow_block_status_above; convert -B: 1, commit: those
 * above the base): the runs they leave to the layers below are
 * CLI_RK_BACKING, their zeros (zero clusters, and past the end of the
 * file below one of them) CLI_RK_ZERO, of any alignment, and only their
 * data is read; the layers below are never read. 0 with *@out, or -errno
 * with @err. */
int cli_reader_start(struct cow_img *src, uint64_t chunk, uint64_t align, unsigned layers,
		     struct cli_reader **out, struct ut_err *err);
/* The next chunk (waiting for it): 0 with *@c, to give back with
 * cli_reader_done before the next call; 1 after the last one; -errno with
 * @err when reading failed there. */
int cli_reader_next(struct cli_reader *r, struct cli_rchunk **c, struct ut_err *err);
void cli_reader_done(struct cli_reader *r);
/* Stop reading (at any point), wait for the thread, free everything. @r
 * may be NULL. */
void cli_reader_stop(struct cli_reader *r);

#endif
