/* catalog/db.c — opening the catalog, transactions, SQLite error messages. */
#include "catalog/db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t cat_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void backoff(unsigned attempt)
{
	/* 1..16 ms plus jitter, so waiting processes do not move in step. */
	unsigned ms = 1u << (attempt < 4 ? attempt : 4);

	usleep((ms * 1000) + (unsigned)(rand() % 1000));
}

/* The calling thread's bound (cat_wait_limit): its length and deadline
 * (mono_ms), 0 for none. */
static __thread int64_t wait_limit_ms, wait_deadline_ms;

void cat_wait_limit(int64_t ms)
{
	wait_limit_ms = ms > 0 ? ms : 0;
	wait_deadline_ms = ms > 0 ? mono_ms() + ms : 0;
}

/* How long a command waits for the catalog lock before reporting it busy:
 * CAT_BUSY_TOTAL_MS, or $COWVM_CATALOG_WAIT_MS (tests use a short one),
 * at most what is left of the thread's bound (cat_wait_limit; >= 1). */
static int64_t wait_total_ms(void)
{
	const char *s = getenv("COWVM_CATALOG_WAIT_MS");
	long x = s ? strtol(s, NULL, 10) : 0;
	int64_t t = x > 0 ? x : CAT_BUSY_TOTAL_MS;

	if (wait_deadline_ms) {
		int64_t left = wait_deadline_ms - mono_ms();

		if (left < t)
			t = left > 0 ? left : 1;
	}
	return t;
}

/* The wait told in "the catalog is busy" messages. */
static int64_t wait_told_ms(void)
{
	const char *s = getenv("COWVM_CATALOG_WAIT_MS");
	long x = s ? strtol(s, NULL, 10) : 0;
	int64_t t = x > 0 ? x : CAT_BUSY_TOTAL_MS;

	return wait_limit_ms && wait_limit_ms < t ? wait_limit_ms : t;
}

static int is_busy(int rc)
{
	rc &= 0xff;
	return rc == SQLITE_BUSY || rc == SQLITE_LOCKED;
}

int cat_sql_err(sqlite3 *h, int rc, struct ut_err *err, const char *what)
{
	const char *msg = h ? sqlite3_errmsg(h) : sqlite3_errstr(rc);
	const char *p;
	int xrc = h ? sqlite3_extended_errcode(h) : rc;

	if (is_busy(rc))
		return ut_errf(err, -EBUSY, "the catalog is busy (another cowvm process "
			       "held it for more than %.1f s); try again",
			       (double)wait_told_ms() / 1000);
	switch (rc & 0xff) {
	case SQLITE_CONSTRAINT:
		if (xrc == SQLITE_CONSTRAINT_CHECK && (p = strstr(msg, "failed: ")))
			return ut_errf(err, -EINVAL, "%s: %s", what, p + 8);
		if (xrc == SQLITE_CONSTRAINT_UNIQUE || xrc == SQLITE_CONSTRAINT_PRIMARYKEY)
			return ut_errf(err, -EEXIST, "%s: already exists (%s)", what, msg);
		if (xrc == SQLITE_CONSTRAINT_FOREIGNKEY || strstr(msg, "FOREIGN KEY"))
			return ut_errf(err, -EBUSY, "%s: still referenced by another catalog row",
				       what);
		if (xrc == SQLITE_CONSTRAINT_NOTNULL && (p = strstr(msg, "failed: ")))
			return ut_errf(err, -EINVAL, "%s: %s is required", what, p + 8);
		return ut_errf(err, -EINVAL, "%s: %s", what, msg);
	case SQLITE_NOMEM:
		return ut_errf(err, -ENOMEM, "%s: out of memory", what);
	case SQLITE_FULL:
		return ut_errf(err, -ENOSPC, "%s: no space left for the catalog", what);
	case SQLITE_READONLY:
		return ut_errf(err, -EROFS, "%s: the catalog is read-only", what);
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return ut_errf(err, -EACCES, "%s: %s", what, msg);
	case SQLITE_CANTOPEN:
		return ut_errf(err, -ENOENT, "%s: cannot open the catalog file", what);
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return ut_errf(err, -EIO, "%s: the catalog file is damaged or not a catalog (%s)",
			       what, msg);
	default:
		return ut_errf(err, -EIO, "%s: %s", what, msg);
	}
}

int cat_prepare(sqlite3 *h, const char *sql, sqlite3_stmt **st, struct ut_err *err)
{
	int rc = sqlite3_prepare_v2(h, sql, -1, st, NULL);

	if (rc != SQLITE_OK)
		return cat_sql_err(h, rc, err, "unable to query the catalog");
	return 0;
}

int cat_exec(sqlite3 *h, const char *sql, struct ut_err *err)
{
	char *msg = NULL;
	int rc = sqlite3_exec(h, sql, NULL, NULL, &msg);

	sqlite3_free(msg);
	if (rc != SQLITE_OK)
		return cat_sql_err(h, rc, err, "unable to update the catalog");
	return 0;
}

int cat_bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (!s)
		return sqlite3_bind_null(st, i);
	return sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
}

char *cat_col_strdup(sqlite3_stmt *st, int i, int *oom)
{
	const unsigned char *s = sqlite3_column_text(st, i);
	char *d;

	if (!s)
		return NULL;
	d = strdup((const char *)s);
	if (!d)
		*oom = 1;
	return d;
}

/* Run one statement, retrying while another process holds a lock that the
 * busy handler could not wait for (e.g. while the first opener switches the
 * file to WAL). */
static int exec_retry(sqlite3 *h, const char *sql, struct ut_err *err, const char *what)
{
	int64_t deadline = mono_ms() + wait_total_ms();
	unsigned attempt = 0;
	int rc;

	for (;;) {
		rc = sqlite3_exec(h, sql, NULL, NULL, NULL);
		if (!is_busy(rc) || mono_ms() >= deadline)
			break;
		backoff(attempt++);
	}
	if (rc != SQLITE_OK)
		return cat_sql_err(h, rc, err, what);
	return 0;
}

int cat_tx_begin(struct cat_db *db, struct ut_err *err)
{
	int ret = exec_retry(db->h, "BEGIN IMMEDIATE", err, "unable to update the catalog");

	if (ret == 0)
		db->in_tx = 1;
	return ret;
}

int cat_tx_commit(struct cat_db *db, struct ut_err *err)
{
	int ret = exec_retry(db->h, "COMMIT", err, "unable to commit to the catalog");

	if (ret == 0)
		db->in_tx = 0;
	return ret;
}

int cat_read_begin(struct cat_db *db, struct ut_err *err)
{
	int ret = exec_retry(db->h, "BEGIN", err, "unable to read the catalog");

	if (ret == 0)
		db->in_tx = 1;
	return ret;
}

void cat_tx_rollback(struct cat_db *db)
{
	if (sqlite3_get_autocommit(db->h) == 0)
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
	db->in_tx = 0;
}

static int journal_is_wal(sqlite3 *h)
{
	sqlite3_stmt *st = NULL;
	int wal = 0;

	if (sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		wal = !strcmp((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	return wal;
}

/* After each commit: once the WAL has grown past CAT_WAL_FRAMES, copy it
 * into the database and truncate it, so that the next process to open the
 * catalog has little to recover. Best effort: a busy checkpoint is left to
 * a later commit. */
static int wal_hook(void *arg, sqlite3 *h, const char *name, int frames)
{
	(void)arg;
	if (frames >= CAT_WAL_FRAMES)
		sqlite3_wal_checkpoint_v2(h, name, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	return SQLITE_OK;
}

int cat_db_open_raw(const char *path, sqlite3 **out, struct ut_err *err)
{
	sqlite3 *h = NULL;
	int rc, ret;

	rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			     SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		ret = cat_sql_err(h, rc, err, "unable to open the catalog");
		ut_err_prefix(err, "%s", path);
		goto out;
	}
	sqlite3_extended_result_codes(h, 1);
	/* Every cowvm command is a short-lived process. By default the last
	 * connection to close checkpoints and deletes the WAL: several fsyncs
	 * per command. Instead the WAL stays, and writers truncate it once it
	 * holds CAT_WAL_FRAMES frames (wal_hook below). Not SQLite's own
	 * autocheckpoint: its PASSIVE checkpoints never shrink the WAL across
	 * processes (an opener that recovers the WAL forgets what was already
	 * checkpointed), so it would grow and every opener would read it all. */
	sqlite3_db_config(h, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	sqlite3_wal_hook(h, wal_hook, NULL);
	sqlite3_busy_timeout(h, (int)(wait_total_ms() < CAT_BUSY_TIMEOUT_MS ? wait_total_ms() :
				      CAT_BUSY_TIMEOUT_MS));
	ret = exec_retry(h, "PRAGMA foreign_keys = ON", err, "unable to open the catalog");
	if (ret < 0)
		goto out;
	if (!journal_is_wal(h)) {
		ret = exec_retry(h, "PRAGMA journal_mode = WAL", err,
				 "unable to switch the catalog to WAL");
		if (ret < 0)
			goto out;
	}
	/* WAL + NORMAL: a power loss may undo the last commits but never
	 * corrupts the file; each commit does not wait for fsync. */
	ret = exec_retry(h, "PRAGMA synchronous = NORMAL", err, "unable to open the catalog");
	if (ret < 0)
		goto out;
	/* Read pages through a mapping: `cowvm list` of 10,000 VMs is mostly
	 * page reads. 256 MiB of address space, only what is touched is paged. */
	ret = exec_retry(h, "PRAGMA mmap_size = 268435456", err, "unable to open the catalog");
	if (ret < 0)
		goto out;
	*out = h;
	h = NULL;
out:
	if (h)
		sqlite3_close(h);
	return ret;
}

static int mkdir_p(const char *path, struct ut_err *err)
{
	char *tmp = strdup(path);
	int ret = 0;

	if (!tmp)
		return ut_errf(err, -ENOMEM, "out of memory");
	for (char *p = tmp + 1; ; p++) {
		if (*p != '/' && *p)
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST) {
			ret = ut_errf_sys(err, -errno, "unable to create directory '%s'", tmp);
			goto out;
		}
		*p = c;
		if (!c)
			break;
	}
out:
	free(tmp);
	return ret;
}

int cat_open(struct cat_db **out, const char *home, struct ut_err *err)
{
	struct cat_db *db = calloc(1, sizeof(*db));
	int ret;

	if (!db)
		return ut_errf(err, -ENOMEM, "out of memory");
	srand((unsigned)getpid() ^ (unsigned)mono_ms());
	if (home)
		db->home = strdup(home);
	else if ((ret = cat_home_dir(&db->home, err)) < 0)
		goto out;
	if (!db->home) {
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = mkdir_p(db->home, err);
	if (ret < 0)
		goto out;
	ret = cat_run_dir(db->home, &db->run_dir, err);
	if (ret < 0)
		goto out;
	if (asprintf(&db->path, "%s/%s", db->home, CAT_DB_FILE) < 0) {
		db->path = NULL;
		ret = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = cat_db_open_raw(db->path, &db->h, err);
	if (ret < 0) {
		ut_err_prefix(err, "%s", db->path);
		goto out;
	}
	ret = cat_schema_migrate(db->h, CAT_SCHEMA_VERSION, err);
	if (ret < 0) {
		ut_err_prefix(err, "%s", db->path);
		goto out;
	}
	*out = db;
	db = NULL;
	ret = 0;
out:
	cat_close(db);
	return ret;
}

void cat_close(struct cat_db *db)
{
	if (!db)
		return;
	if (db->h) {
		if (db->in_tx)
			cat_tx_rollback(db);
		sqlite3_close(db->h);
	}
	free(db->home);
	free(db->run_dir);
	free(db->path);
	free(db);
}

const char *cat_db_home(const struct cat_db *db)
{
	return db->home;
}

const char *cat_db_run_dir(const struct cat_db *db)
{
	return db->run_dir;
}
