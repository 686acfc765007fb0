/* cow/cache.c — a bounded LRU cache of cluster-sized metadata tables (L2
 * tables, refcount blocks), keyed by host offset. The cache only stores; the
 * callers decide when a dirty entry may be written (see cow.h, I1-I4). */
#include "cow/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static unsigned hash_off(const struct cow_cache *c, uint64_t off)
{
	uint64_t h = off * 0x9e3779b97f4a7c15ull;
	return (unsigned)(h >> 32) & (c->nbuckets - 1);
}

int cow_cache_init(struct cow_cache *c, size_t tsize, unsigned cap)
{
	memset(c, 0, sizeof(*c));
	c->tsize = tsize;
	c->cap = cap < 4 ? 4 : cap;
	c->nbuckets = 16;
	while (c->nbuckets < c->cap * 2)
		c->nbuckets <<= 1;
	c->hash = calloc(c->nbuckets, sizeof(*c->hash));
	return c->hash ? 0 : -ENOMEM;
}

void cow_cache_free(struct cow_cache *c)
{
	struct cow_cent *e = c->head, *n;

	while (e) {
		n = e->next;
		free(e->buf);
		free(e);
		e = n;
	}
	free(c->hash);
	memset(c, 0, sizeof(*c));
}

static void lru_unlink(struct cow_cache *c, struct cow_cent *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push(struct cow_cache *c, struct cow_cent *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
}

struct cow_cent *cow_cache_find(struct cow_cache *c, uint64_t off)
{
	struct cow_cent *e = c->hash[hash_off(c, off)];

	while (e && e->off != off)
		e = e->hnext;
	if (e && c->head != e) {
		lru_unlink(c, e);
		lru_push(c, e);
	}
	return e;
}

bool cow_cache_has(const struct cow_cache *c, uint64_t off)
{
	const struct cow_cent *e = c->hash[hash_off(c, off)];

	while (e && e->off != off)
		e = e->hnext;
	return e != NULL;
}

struct cow_cent *cow_cache_insert(struct cow_cache *c, uint64_t off)
{
	struct cow_cent *e = calloc(1, sizeof(*e));
	unsigned h = hash_off(c, off);

	if (!e)
		return NULL;
	if (posix_memalign((void **)&e->buf, 4096, c->tsize)) {
		free(e);
		return NULL;
	}
	e->off = off;
	e->hnext = c->hash[h];
	c->hash[h] = e;
	lru_push(c, e);
	c->n++;
	return e;
}

struct cow_cent *cow_cache_lru(struct cow_cache *c)
{
	return c->tail;
}

struct cow_cent *cow_cache_lru_clean(struct cow_cache *c)
{
	struct cow_cent *e = c->tail;

	while (e && e->dirty)
		e = e->prev;
	return e;
}

void cow_cache_remove(struct cow_cache *c, struct cow_cent *e)
{
	struct cow_cent **pp = &c->hash[hash_off(c, e->off)];

	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	lru_unlink(c, e);
	if (e->dirty)
		c->ndirty--;
	c->n--;
	free(e->buf);
	free(e);
}

void cow_cache_mark_dirty(struct cow_cache *c, struct cow_cent *e)
{
	if (!e->dirty) {
		e->dirty = true;
		c->ndirty++;
	}
}

void cow_cache_mark_clean(struct cow_cache *c, struct cow_cent *e)
{
	if (e->dirty) {
		e->dirty = false;
		c->ndirty--;
	}
}
