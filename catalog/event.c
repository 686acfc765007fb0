/* catalog/event.c — the event log: one row per state change. */
#include "catalog/db.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int cat_event_add_tx(struct cat_db *db, const char *vm, const char *action,
		     const char *result, struct ut_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret;

	ret = cat_prepare(db->h, "INSERT INTO events (time, vm, action, result) "
			  "VALUES (?1, ?2, ?3, ?4)", &st, err);
	if (ret < 0)
		return ret;
	sqlite3_bind_int64(st, 1, cat_now_ms());
	cat_bind_text(st, 2, vm);
	cat_bind_text(st, 3, action);
	cat_bind_text(st, 4, result ? result : "ok");
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		ret = cat_sql_err(db->h, rc, err, "unable to log an event");
	sqlite3_finalize(st);
	st = NULL;
	/* keep the log bounded: every 1,000th event drops the oldest beyond
	 * CAT_EVENTS_KEEP (a range delete on the row id) */
	if (ret == 0 && sqlite3_last_insert_rowid(db->h) % 1000 == 0) {
		ret = cat_prepare(db->h, "DELETE FROM events WHERE id <= ?1", &st, err);
		if (ret == 0) {
			sqlite3_bind_int64(st, 1, sqlite3_last_insert_rowid(db->h) - CAT_EVENTS_KEEP);
			rc = sqlite3_step(st);
			if (rc != SQLITE_DONE)
				ret = cat_sql_err(db->h, rc, err, "unable to trim the event log");
		}
		sqlite3_finalize(st);
	}
	return ret;
}

int cat_event_log(struct cat_db *db, const char *vm, const char *action,
		  const char *result, struct ut_err *err)
{
	int ret = cat_tx_begin(db, err);

	if (ret < 0)
		return ret;
	ret = cat_event_add_tx(db, vm, action, result, err);
	if (ret == 0)
		ret = cat_tx_commit(db, err);
	if (db->in_tx)
		cat_tx_rollback(db);
	return ret;
}

void cat_events_free(struct cat_event *ev, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(ev[i].vm);
		free(ev[i].action);
		free(ev[i].result);
	}
	free(ev);
}

int cat_event_list(struct cat_db *db, const char *vm, size_t limit,
		   struct cat_event **out, size_t *n, struct ut_err *err)
{
	struct cat_event *ev = NULL;
	sqlite3_stmt *st = NULL;
	size_t cnt = 0, cap = 0;
	int rc, ret, oom = 0;

	ret = cat_prepare(db->h, "SELECT time, vm, action, result FROM ("
			  " SELECT id, time, vm, action, result FROM events"
			  " WHERE ?1 IS NULL OR vm = ?1 ORDER BY id DESC LIMIT ?2"
			  ") ORDER BY id", &st, err);
	if (ret < 0)
		goto out;
	cat_bind_text(st, 1, vm);
	sqlite3_bind_int64(st, 2, limit ? (int64_t)limit : -1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (cnt == cap) {
			struct cat_event *arr;

			cap = cap ? cap * 2 : 16;
			arr = realloc(ev, cap * sizeof(*arr));
			if (!arr) {
				ret = ut_errf(err, -ENOMEM, "out of memory");
				goto out;
			}
			ev = arr;
		}
		ev[cnt].time_ms = sqlite3_column_int64(st, 0);
		ev[cnt].vm = cat_col_strdup(st, 1, &oom);
		ev[cnt].action = cat_col_strdup(st, 2, &oom);
		ev[cnt].result = cat_col_strdup(st, 3, &oom);
		cnt++;
		if (oom) {
			ret = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	if (rc != SQLITE_DONE) {
		ret = cat_sql_err(db->h, rc, err, "unable to read the event log");
		goto out;
	}
	*out = ev;
	*n = cnt;
	ev = NULL;
	ret = 0;
out:
	sqlite3_finalize(st);
	if (ev)
		cat_events_free(ev, cnt);
	return ret;
}
