/* catalog/image.c — image rows: the lineage of disk files, and the probe hook
 * that reads what an image file says about itself. */
#include "catalog/db.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define QCOW2_MAGIC 0x514649fbu   /* "QFI\xfb" */

void cat_image_info_clear(struct cat_image_info *info)
{
	free(info->backing);
	memset(info, 0, sizeof(*info));
}

static int read_magic(int fd, uint8_t hdr[32], size_t *got)
{
	ssize_t r = pread(fd, hdr, 32, 0);

	if (r < 0)
		return -errno;
	*got = (size_t)r;
	return 0;
}

static const char *format_of(const uint8_t *hdr, size_t n)
{
	uint32_t magic;

	if (n < 4)
		return "raw";
	memcpy(&magic, hdr, 4);
	return be32toh(magic) == QCOW2_MAGIC ? "qcow2" : "raw";
}

/* Make @name (as stored in a qcow2 header) absolute, relative to the
 * directory of @image. */
static char *resolve_backing(const char *image, const char *name)
{
	const char *slash;
	char *out;

	if (name[0] == '/')
		return strdup(name);
	slash = strrchr(image, '/');
	if (asprintf(&out, "%.*s/%s", (int)(slash - image), image, name) < 0)
		return NULL;
	return out;
}

int cat_image_probe(const char *path, struct cat_image_info *info, struct ut_err *err)
{
	uint8_t hdr[32];
	char name[PATH_MAX];
	uint64_t off, vsize;
	uint32_t blen;
	size_t got = 0;
	off_t end;
	int fd, ret = 0;

	/* HOOK(cow): once cow/ provides get_info, use it here for qcow2
	 * (size, backing file and backing format from the header extensions). */
	memset(info, 0, sizeof(*info));
	info->virtual_size = -1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ut_errf_sys(err, -errno, "unable to open image '%s'", path);
	ret = read_magic(fd, hdr, &got);
	if (ret < 0) {
		ut_errf_sys(err, ret, "unable to read image '%s'", path);
		goto out;
	}
	snprintf(info->format, sizeof(info->format), "%s", format_of(hdr, got));
	if (!strcmp(info->format, "raw")) {
		end = lseek(fd, 0, SEEK_END);
		if (end < 0) {
			ret = ut_errf_sys(err, -errno, "unable to size image '%s'", path);
			goto out;
		}
		info->virtual_size = end;
		goto out;
	}
	if (got < 32) {
		ret = ut_errf(err, -EINVAL, "image '%s': qcow2 header too short", path);
		goto out;
	}
	memcpy(&vsize, hdr + 24, 8);
	memcpy(&off, hdr + 8, 8);
	memcpy(&blen, hdr + 16, 4);
	info->virtual_size = (int64_t)be64toh(vsize);
	off = be64toh(off);
	blen = be32toh(blen);
	if (!off)
		goto out;
	if (blen == 0 || blen >= sizeof(name) || pread(fd, name, blen, (off_t)off) != (ssize_t)blen) {
		ret = ut_errf(err, -EINVAL, "image '%s': unreadable backing file name", path);
		goto out;
	}
	name[blen] = '\0';
	info->backing = resolve_backing(path, name);
	if (!info->backing) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	{
		int bfd = open(info->backing, O_RDONLY | O_CLOEXEC);

		if (bfd >= 0) {
			if (read_magic(bfd, hdr, &got) == 0)
				snprintf(info->backing_format, sizeof(info->backing_format), "%s",
					 format_of(hdr, got));
			close(bfd);
		}
	}
out:
	close(fd);
	if (ret < 0)
		cat_image_info_clear(info);
	return ret;
}

/* Probe chain[n-1] and append what its file says about its parents (up to
 * CAT_CHAIN_MAX). Fills format/size of entries that lack them. A missing
 * file is not an error: its format defaults to raw, size unknown. */
int cat_image_complete_chain(struct cat_image **chainp, size_t *np, struct ut_err *err)
{
	struct cat_image_info info = { 0 };
	int ret = 0;

	for (size_t k = 0; k < *np; k++) {
		struct cat_image *im = &(*chainp)[k], *arr;
		int found = cat_image_probe(im->path, &info, NULL) == 0;

		if (!im->format && !(im->format = strdup(found ? info.format : "raw"))) {
			ret = -ENOMEM;
			goto out;
		}
		if (found && im->virtual_size < 0 && !strcmp(im->format, info.format))
			im->virtual_size = info.virtual_size;
		if (found && k == *np - 1 && info.backing && *np < CAT_CHAIN_MAX &&
		    !strcmp(im->format, "qcow2")) {
			for (size_t j = 0; j < *np; j++) {
				if (!strcmp((*chainp)[j].path, info.backing)) {
					ret = ut_errf(err, -ELOOP, "image '%s': backing chain loops "
						      "at '%s'", (*chainp)[0].path, info.backing);
					goto out;
				}
			}
			arr = realloc(*chainp, (*np + 1) * sizeof(*arr));
			if (!arr) {
				ret = -ENOMEM;
				goto out;
			}
			*chainp = arr;
			memset(&arr[*np], 0, sizeof(*arr));
			arr[*np].path = info.backing;
			arr[*np].virtual_size = -1;
			info.backing = NULL;
			(*np)++;
			if (info.backing_format[0] &&
			    !(arr[*np - 1].format = strdup(info.backing_format))) {
				ret = -ENOMEM;
				goto out;
			}
		}
		cat_image_info_clear(&info);
	}
out:
	cat_image_info_clear(&info);
	if (ret == -ENOMEM)
		ut_errf(err, ret, "out of memory");
	return ret;
}

static int step_done(sqlite3 *h, sqlite3_stmt *st, struct ut_err *err, const char *what)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return cat_sql_err(h, rc, err, what);
	return 0;
}

int cat_image_find(sqlite3 *h, const char *path, int64_t *id, char fmt[8], int64_t *parent,
		   struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret;

	ret = cat_prepare(h, "SELECT id, format, parent_id FROM images WHERE path = ?1", &st, err);
	if (ret < 0)
		return ret;
	cat_bind_text(st, 1, path);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(st, 0);
		snprintf(fmt, 8, "%s", (const char *)sqlite3_column_text(st, 1));
		*parent = sqlite3_column_int64(st, 2);
		ret = 1;
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		ret = cat_sql_err(h, rc, err, "unable to read image rows");
	}
	sqlite3_finalize(st);
	return ret;
}

static int image_path_of(sqlite3 *h, int64_t id, char **path)
{
	sqlite3_stmt *st = NULL;
	int oom = 0;

	*path = NULL;
	if (sqlite3_prepare_v2(h, "SELECT path FROM images WHERE id = ?1", -1, &st, NULL))
		return -EIO;
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) == SQLITE_ROW)
		*path = cat_col_strdup(st, 0, &oom);
	sqlite3_finalize(st);
	return oom ? -ENOMEM : 0;
}

int cat_image_store_chain_tx(struct cat_db *db, struct cat_image *chain, size_t n,
			     struct ut_err *err)
{
	sqlite3_stmt *ins = NULL, *upd = NULL;
	int ret = 0;

	ret = cat_prepare(db->h, "INSERT INTO images (path, format, virtual_size, parent_id, "
			  "created) VALUES (?1, ?2, ?3, ?4, ?5)", &ins, err);
	if (ret < 0)
		goto out;
	ret = cat_prepare(db->h, "UPDATE images SET parent_id = ?2 WHERE id = ?1", &upd, err);
	if (ret < 0)
		goto out;
	for (size_t k = n; k-- > 0;) {
		struct cat_image *im = &chain[k];
		int64_t parent = k + 1 < n ? chain[k + 1].id : 0, row_parent = 0;
		char fmt[8] = "";

		ret = cat_image_find(db->h, im->path, &im->id, fmt, &row_parent, err);
		if (ret < 0)
			goto out;
		if (ret == 1) {
			if (im->format && strcmp(im->format, fmt)) {
				ret = ut_errf(err, -EINVAL, "image '%s' is recorded as %s, not %s",
					      im->path, fmt, im->format);
				goto out;
			}
			if (row_parent && parent && row_parent != parent) {
				char *other = NULL;

				image_path_of(db->h, row_parent, &other);
				ret = ut_errf(err, -EINVAL, "image '%s' is recorded with backing "
					      "image '%s', not '%s'", im->path,
					      other ? other : "?", chain[k + 1].path);
				free(other);
				goto out;
			}
			if (!row_parent && parent) {   /* lineage learned now */
				sqlite3_reset(upd);
				sqlite3_bind_int64(upd, 1, im->id);
				sqlite3_bind_int64(upd, 2, parent);
				ret = step_done(db->h, upd, err, "unable to record image lineage");
				if (ret < 0)
					goto out;
			}
			continue;
		}
		sqlite3_reset(ins);
		cat_bind_text(ins, 1, im->path);
		cat_bind_text(ins, 2, im->format ? im->format : "raw");
		if (im->virtual_size >= 0)
			sqlite3_bind_int64(ins, 3, im->virtual_size);
		else
			sqlite3_bind_null(ins, 3);
		if (parent)
			sqlite3_bind_int64(ins, 4, parent);
		else
			sqlite3_bind_null(ins, 4);
		sqlite3_bind_int64(ins, 5, cat_now_ms());
		ret = step_done(db->h, ins, err, "unable to record image");
		if (ret < 0) {
			ut_err_prefix(err, "image '%s'", im->path);
			goto out;
		}
		im->id = sqlite3_last_insert_rowid(db->h);
	}
	ret = 0;
out:
	sqlite3_finalize(ins);
	sqlite3_finalize(upd);
	return ret;
}

void cat_image_chain_free(struct cat_image *chain, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cat_image_clear(&chain[i]);
	free(chain);
}

int cat_image_load_chain(struct cat_db *db, int64_t id, struct cat_image **chainp,
			 size_t *np, struct ut_err *err)
{
	struct cat_image *chain = NULL;
	sqlite3_stmt *st = NULL;
	size_t n = 0;
	int ret, rc, oom = 0;

	ret = cat_prepare(db->h, "SELECT path, format, virtual_size, parent_id FROM images "
			  "WHERE id = ?1", &st, err);
	if (ret < 0)
		goto out;
	while (id && n < CAT_CHAIN_MAX) {
		struct cat_image *arr = realloc(chain, (n + 1) * sizeof(*arr));

		if (!arr) {
			ret = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		chain = arr;
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, id);
		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW) {
			ret = rc == SQLITE_DONE ? ut_errf(err, -ENOENT, "image row %lld is missing",
							  (long long)id)
				: cat_sql_err(db->h, rc, err, "unable to read image rows");
			goto out;
		}
		memset(&chain[n], 0, sizeof(chain[n]));
		chain[n].id = id;
		chain[n].path = cat_col_strdup(st, 0, &oom);
		chain[n].format = cat_col_strdup(st, 1, &oom);
		chain[n].virtual_size = sqlite3_column_type(st, 2) == SQLITE_NULL ? -1 :
			sqlite3_column_int64(st, 2);
		id = sqlite3_column_int64(st, 3);
		n++;
		if (oom) {
			ret = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	*chainp = chain;
	*np = n;
	chain = NULL;
	ret = 0;
out:
	sqlite3_finalize(st);
	if (chain)
		cat_image_chain_free(chain, n);
	return ret;
}

static int resolve_path(const char *path, char **abs, struct ut_err *err)
{
	char *r = realpath(path, NULL);

	if (r) {
		*abs = r;
		return 0;
	}
	if (path[0] != '/')
		return ut_errf_sys(err, -errno, "unable to resolve image path '%s'", path);
	*abs = strdup(path);
	return *abs ? 0 : ut_errf(err, -ENOMEM, "out of memory");
}

int cat_image_register(struct cat_db *db, const char *path, const char *format,
		       int64_t *id, struct ut_err *err)
{
	struct cat_image *chain = calloc(1, sizeof(*chain));
	size_t n = 1;
	int ret;

	if (!chain)
		return ut_errf(err, -ENOMEM, "out of memory");
	chain[0].virtual_size = -1;
	ret = resolve_path(path, &chain[0].path, err);
	if (ret < 0)
		goto out;
	if (format && !(chain[0].format = strdup(format))) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cat_image_complete_chain(&chain, &n, err);
	if (ret < 0)
		goto out;
	ret = cat_tx_begin(db, err);
	if (ret < 0)
		goto out;
	ret = cat_image_store_chain_tx(db, chain, n, err);
	if (ret < 0)
		goto out;
	ret = cat_tx_commit(db, err);
	if (ret == 0 && id)
		*id = chain[0].id;
out:
	if (db->in_tx)
		cat_tx_rollback(db);
	cat_image_chain_free(chain, n);
	return ret;
}

int cat_image_chain(struct cat_db *db, const char *path, struct cat_image **chain,
		    size_t *n, struct ut_err *err)
{
	int64_t id = 0, parent = 0;
	char fmt[8];
	int ret = cat_image_find(db->h, path, &id, fmt, &parent, err);

	if (ret < 0)
		return ret;
	if (ret == 0)
		return ut_errf(err, -ENOENT, "image '%s' is not in the catalog", path);
	return cat_image_load_chain(db, id, chain, n, err);
}
