/* catalog/db.h — internals shared by the catalog's files (not for cli/).
 *
 * Transactions: cat_tx_begin() takes the write lock (BEGIN IMMEDIATE, retried
 * while another process holds it), cat_tx_commit() commits, cat_tx_rollback()
 * undoes. A write function does begin / statements / commit with a single
 * `goto out` that rolls back when anything failed.
 */
#ifndef CAT_DB_H
#define CAT_DB_H

#include <sqlite3.h>

#include "catalog/catalog.h"

#define CAT_DB_FILE "catalog.db"
#define CAT_BUSY_TIMEOUT_MS 5000     /* per attempt, inside SQLite */
#define CAT_BUSY_TOTAL_MS 60000      /* overall before "the catalog is busy" */
#define CAT_WAL_FRAMES 256           /* truncate the WAL past this many pages */
#define CAT_EVENTS_KEEP 100000       /* the event log keeps the last this many */

struct cat_db {
	sqlite3 *h;
	char *home;
	char *run_dir;
	char *path;
	int in_tx;
};

/* Open @path with the connection settings (busy timeout, foreign keys, WAL)
 * but without migrating: for cat_open and the schema tests. */
int cat_db_open_raw(const char *path, sqlite3 **out, struct ut_err *err);

int cat_tx_begin(struct cat_db *db, struct ut_err *err);
/* A read transaction (one consistent snapshot); end it with cat_tx_rollback. */
int cat_read_begin(struct cat_db *db, struct ut_err *err);
int cat_tx_commit(struct cat_db *db, struct ut_err *err);
void cat_tx_rollback(struct cat_db *db);

/* Set @err from the connection's last error: "what: sqlite message", turning
 * SQLITE_BUSY/LOCKED into "the catalog is busy ..." and constraint names into
 * plain words. Returns the negative errno chosen. */
int cat_sql_err(sqlite3 *h, int rc, struct ut_err *err, const char *what);

/* Prepare @sql, reporting errors. */
int cat_prepare(sqlite3 *h, const char *sql, sqlite3_stmt **st, struct ut_err *err);
/* Run a statement without results (or ignoring them) with printf-free
 * binding: step until DONE. */
int cat_exec(sqlite3 *h, const char *sql, struct ut_err *err);

/* Bind helpers: NULL strings bind as SQL NULL. */
int cat_bind_text(sqlite3_stmt *st, int i, const char *s);
/* strdup of a text column, NULL for SQL NULL. Sets *oom on allocation failure. */
char *cat_col_strdup(sqlite3_stmt *st, int i, int *oom);

int64_t cat_now_ms(void);

/* Log an event inside the caller's transaction. */
int cat_event_add_tx(struct cat_db *db, const char *vm, const char *action,
		     const char *result, struct ut_err *err);

/* Probe chain[n-1] (and so on) and append the parents its file names, fill
 * missing formats and sizes. Call before the transaction (file I/O). */
int cat_image_complete_chain(struct cat_image **chain, size_t *n, struct ut_err *err);
/* Image rows inside the caller's transaction (catalog/image.c). Records
 * chain[n-1] .. chain[0] (parents first), setting each id; existing rows are
 * reused (format must agree; a missing parent link is added). */
int cat_image_store_chain_tx(struct cat_db *db, struct cat_image *chain, size_t n,
			     struct ut_err *err);
/* The row of image @path (as recorded, compared to the letter): 1 with its
 * @id, @fmt ("qcow2" or "raw", NUL-terminated) and @parent (0 when none)
 * set; 0 when there is none (nothing set); or a negative errno with @err.
 * Inside the caller's transaction or read (catalog/image.c). */
int cat_image_find(sqlite3 *h, const char *path, int64_t *id, char fmt[8], int64_t *parent,
		   struct ut_err *err);
/* Load the chain of image @id (chain[0] = @id) inside the caller's read. */
int cat_image_load_chain(struct cat_db *db, int64_t id, struct cat_image **chain,
			 size_t *n, struct ut_err *err);

/* ---- schema (catalog/schema.c) ---- */

/* The version this cowvm writes (PRAGMA user_version). */
#define CAT_SCHEMA_VERSION 8

/* Bring the database on @h from its user_version up to @target (1..
 * CAT_SCHEMA_VERSION), one transaction per step. A database newer than
 * CAT_SCHEMA_VERSION is refused with -EPROTONOSUPPORT. */
int cat_schema_migrate(sqlite3 *h, int target, struct ut_err *err);
/* The user_version of @h, or negative errno. */
int cat_schema_version(sqlite3 *h, struct ut_err *err);

#endif
