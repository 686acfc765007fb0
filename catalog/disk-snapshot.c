/* catalog/disk-snapshot.c — the catalog's record of an external disk
 * snapshot of a running VM (QMP's blockdev-snapshot-sync, served by the
 * VMM): the overlay becomes a new image row whose parent is the image the
 * disk used, and the disk row points at the overlay. Kept right, the next
 * `cowvm start` opens the overlay, never the image that is now its
 * read-only backing file (writing it would corrupt the overlay's view).
 *
 *   disk -> image I    ──cat_disk_snapshot──>       disk -> overlay O -> I
 *   disk -> O -> I     ──cat_disk_snapshot_undo──>  disk -> I (O's row gone)
 *   disk -> O -> I     ──cat_disk_snapshot(I, O)──> unchanged (recorded
 *                        already: a switch failed and its undo did too, O
 *                        kept; the VMM retries onto O with mode existing)
 */
#include "catalog/db.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The disk row at position @disk (in idx order, as cat_vm_get lists them)
 * of VM @vm: its id, its image's id and path (malloc'd). Returns 0 or
 * -ENOENT with @err. Inside the caller's transaction. */
static int disk_row(struct cat_db *db, const char *vm, size_t disk, int64_t *disk_id,
		    int64_t *image_id, char **image_path, char target[16], struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret, oom = 0;

	*image_path = NULL;
	ret = cat_prepare(db->h, "SELECT d.id, d.image_id, i.path, d.target FROM disks d "
			  "JOIN vms v ON v.id = d.vm_id JOIN images i ON i.id = d.image_id "
			  "WHERE v.name = ?1 ORDER BY d.idx LIMIT 1 OFFSET ?2", &st, err);
	if (ret < 0)
		return ret;
	cat_bind_text(st, 1, vm);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)disk);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*disk_id = sqlite3_column_int64(st, 0);
		*image_id = sqlite3_column_int64(st, 1);
		*image_path = cat_col_strdup(st, 2, &oom);
		snprintf(target, 16, "%s", (const char *)sqlite3_column_text(st, 3));
		ret = oom ? ut_errf(err, -ENOMEM, "out of memory") : 0;
	} else if (rc == SQLITE_DONE) {
		sqlite3_finalize(st);
		st = NULL;
		ret = cat_prepare(db->h, "SELECT 1 FROM vms WHERE name = ?1", &st, err);
		if (ret < 0)
			return ret;
		cat_bind_text(st, 1, vm);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			ret = ut_errf(err, -ENOENT, "VM '%s' has no disk %zu in the catalog", vm, disk);
		else if (rc == SQLITE_DONE)
			ret = ut_errf(err, -ENOENT, "no VM named '%s'", vm);
		else
			ret = cat_sql_err(db->h, rc, err, "unable to read the VMs");
	} else {
		ret = cat_sql_err(db->h, rc, err, "unable to read the VM's disks");
	}
	sqlite3_finalize(st);
	return ret;
}

/* Is the catalog's @recorded the file @path (absolute, resolved)? The
 * catalog keeps paths as given when they were recorded: compared
 * resolved too. */
static int same_file(const char *recorded, const char *path)
{
	char buf[PATH_MAX];

	if (!strcmp(recorded, path))
		return 1;
	return realpath(recorded, buf) && !strcmp(buf, path);
}

/* Run @sql binding ?1 and ?2 as integers. */
static int exec2(struct cat_db *db, const char *sql, int64_t a, int64_t b, const char *what,
		 struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret = cat_prepare(db->h, sql, &st, err);

	if (ret < 0)
		return ret;
	sqlite3_bind_int64(st, 1, a);
	sqlite3_bind_int64(st, 2, b);
	rc = sqlite3_step(st);
	ret = rc == SQLITE_DONE ? 0 : cat_sql_err(db->h, rc, err, what);
	sqlite3_finalize(st);
	return ret;
}

/* How many rows of @sql (one integer parameter ?1) there are. */
static int count_rows(struct cat_db *db, const char *sql, int64_t a, int64_t *n,
		      struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret = cat_prepare(db->h, sql, &st, err);

	if (ret < 0)
		return ret;
	sqlite3_bind_int64(st, 1, a);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*n = sqlite3_column_int64(st, 0);
	ret = rc == SQLITE_ROW ? 0 : cat_sql_err(db->h, rc, err, "unable to read the catalog");
	sqlite3_finalize(st);
	return ret;
}

/* Does the disk's image row @cur_id (its path @cur) record @overlay on
 * @image already: the snapshot recorded before, whose switch failed and
 * whose record could not be undone (core/snapshot.c kept the overlay)?
 * 1 yes, 0 no, or -errno with @err. */
static int recorded_already(struct cat_db *db, int64_t cur_id, const char *cur,
			    const char *image, const char *overlay, struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	char *parent = NULL;
	int rc, ret, oom = 0;

	if (!same_file(cur, overlay))
		return 0;
	ret = cat_prepare(db->h, "SELECT p.path FROM images i JOIN images p ON p.id = i.parent_id "
			  "WHERE i.id = ?1 AND i.format = 'qcow2'", &st, err);
	if (ret < 0)
		return ret;
	sqlite3_bind_int64(st, 1, cur_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		parent = cat_col_strdup(st, 0, &oom);
		ret = oom ? ut_errf(err, -ENOMEM, "out of memory") : parent && same_file(parent, image);
	} else {
		ret = rc == SQLITE_DONE ? 0 : cat_sql_err(db->h, rc, err, "unable to read the images");
	}
	sqlite3_finalize(st);
	free(parent);
	return ret;
}

int cat_disk_snapshot(struct cat_db *db, const char *vm, size_t disk, const char *image,
		      const char *overlay, int64_t virtual_size, struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int64_t disk_id = 0, image_id = 0, ov_id = 0, ov_parent = 0, users = 0;
	char *cur = NULL, target[16] = "", fmt[8] = "", result[2 * PATH_MAX];
	int ret, rc;

	if (overlay[0] != '/')
		return ut_errf(err, -EINVAL, "overlay '%s': the catalog records absolute paths", overlay);
	if (strchr(overlay, ','))
		return ut_errf(err, -EINVAL, "overlay '%s' contains a ',', which the VMM's --disk "
			       "option cannot take (the VM could not be started again)", overlay);
	ret = cat_tx_begin(db, err);
	if (ret < 0)
		return ret;
	ret = disk_row(db, vm, disk, &disk_id, &image_id, &cur, target, err);
	if (ret < 0)
		goto out;
	if (!same_file(cur, image)) {
		ret = recorded_already(db, image_id, cur, image, overlay, err);
		if (ret < 0)
			goto out;
		if (ret == 1) {
			/* taken as it is: the retry of a snapshot whose
			 * overlay was kept (mode existing) */
			snprintf(result, sizeof(result), "%s: %s recorded already", target, overlay);
			ret = cat_event_add_tx(db, vm, "disk-snapshot", result, err);
			if (ret == 0)
				ret = cat_tx_commit(db, err);
			goto out;
		}
		ret = ut_errf(err, -ESTALE, "VM '%s' disk %s: the catalog records image '%s', the "
			      "VMM writes '%s'", vm, target, cur, image);
		goto out;
	}
	ret = cat_image_find(db->h, overlay, &ov_id, fmt, &ov_parent, err);
	if (ret < 0)
		goto out;
	if (ret == 1) {
		/* recorded already (cowvm image create -b): taken when it is the
		 * same overlay of the same image, and no disk uses it */
		ret = count_rows(db, "SELECT count(*) FROM disks WHERE image_id = ?1", ov_id, &users,
				 err);
		if (ret < 0)
			goto out;
		if (strcmp(fmt, "qcow2") || ov_parent != image_id || users) {
			ret = ut_errf(err, -EEXIST, "image '%s' is in the catalog already, %s", overlay,
				      strcmp(fmt, "qcow2") ? "as a raw image" :
				      users ? "as the image of a disk" :
				      "with another backing image (or none)");
			goto out;
		}
	} else {
		ret = cat_prepare(db->h, "INSERT INTO images (path, format, virtual_size, parent_id, "
				  "created) VALUES (?1, 'qcow2', ?2, ?3, ?4)", &st, err);
		if (ret < 0)
			goto out;
		cat_bind_text(st, 1, overlay);
		if (virtual_size >= 0)
			sqlite3_bind_int64(st, 2, virtual_size);
		else
			sqlite3_bind_null(st, 2);
		sqlite3_bind_int64(st, 3, image_id);
		sqlite3_bind_int64(st, 4, cat_now_ms());
		rc = sqlite3_step(st);
		if (rc != SQLITE_DONE) {
			ret = cat_sql_err(db->h, rc, err, "unable to record the overlay");
			ut_err_prefix(err, "image '%s'", overlay);
			goto out;
		}
		ov_id = sqlite3_last_insert_rowid(db->h);
	}
	ret = exec2(db, "UPDATE disks SET image_id = ?2 WHERE id = ?1", disk_id, ov_id,
		    "unable to point the disk at the overlay", err);
	if (ret < 0)
		goto out;
	snprintf(result, sizeof(result), "%s: %s on %s", target, overlay, cur);
	ret = cat_event_add_tx(db, vm, "disk-snapshot", result, err);
	if (ret < 0)
		goto out;
	ret = cat_tx_commit(db, err);
out:
	if (db->in_tx)
		cat_tx_rollback(db);
	sqlite3_finalize(st);
	free(cur);
	return ret;
}

int cat_disk_snapshot_undo(struct cat_db *db, const char *vm, size_t disk, const char *overlay,
			   struct ut_err *err)
{
	int64_t disk_id = 0, cur_id = 0, ov_parent = 0, users = 0;
	char *cur = NULL, target[16] = "", fmt[8] = "";
	int ret;

	ret = cat_tx_begin(db, err);
	if (ret < 0)
		return ret;
	ret = disk_row(db, vm, disk, &disk_id, &cur_id, &cur, target, err);
	if (ret < 0)
		goto out;
	if (strcmp(cur, overlay)) {
		ret = ut_errf(err, -ESTALE, "VM '%s' disk %s: the catalog records image '%s', not "
			      "the overlay '%s'", vm, target, cur, overlay);
		goto out;
	}
	ret = cat_image_find(db->h, overlay, &cur_id, fmt, &ov_parent, err);
	if (ret == 1 && !ov_parent) {
		ret = ut_errf(err, -EINVAL, "image '%s' has no backing image in the catalog", overlay);
	} else if (ret == 1) {
		/* the overlay's parent is the image the disk used */
		ret = exec2(db, "UPDATE disks SET image_id = ?2 WHERE id = ?1", disk_id, ov_parent,
			    "unable to point the disk back at its image", err);
	} else if (ret == 0) {
		ret = ut_errf(err, -ENOENT, "image '%s' is not in the catalog", overlay);
	}
	if (ret < 0)
		goto out;
	/* the overlay's row goes when nothing uses it (the file is gone) */
	ret = count_rows(db, "SELECT (SELECT count(*) FROM disks WHERE image_id = ?1) + "
			 "(SELECT count(*) FROM images WHERE parent_id = ?1)", cur_id, &users, err);
	if (ret == 0 && !users)
		ret = exec2(db, "DELETE FROM images WHERE id = ?1 AND parent_id = ?2", cur_id, ov_parent,
			    "unable to forget the overlay", err);
	if (ret == 0)
		ret = cat_event_add_tx(db, vm, "disk-snapshot", "undone: the VMM could not switch",
				       err);
	if (ret == 0)
		ret = cat_tx_commit(db, err);
out:
	if (db->in_tx)
		cat_tx_rollback(db);
	free(cur);
	return ret;
}
