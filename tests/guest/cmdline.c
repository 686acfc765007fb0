/* tests/guest/cmdline.c — the kernel command line: space-separated tokens,
 * each "key=value" or a bare "key".  Later duplicates win. */
#include "guest.h"

#define CMDLINE_MAX 4096
#define TOKENS_MAX  64

static char raw[CMDLINE_MAX];
static char buf[CMDLINE_MAX];
static const char *keys[TOKENS_MAX], *vals[TOKENS_MAX];
static uint32_t ntok;

/* Copies at most CMDLINE_MAX-1 bytes of the NUL-terminated string at PADDR
 * (0 = none; must be below 4 GiB) and tokenizes the copy. */
void cmdline_init(uint64_t paddr)
{
	size_t n = 0;
	ntok = 0;
	raw[0] = 0;
	if (paddr == 0 || paddr >= 4 * GIB - CMDLINE_MAX)
		return;
	const volatile char *s = (const volatile char *)(uintptr_t)paddr;
	while (n < CMDLINE_MAX - 1 && s[n])
		n++;
	memcpy(raw, (const void *)(uintptr_t)paddr, n);
	raw[n] = 0;
	memcpy(buf, raw, n + 1);

	char *p = buf;
	while (*p && ntok < TOKENS_MAX) {
		while (*p == ' ' || *p == '\t' || *p == '\n')
			*p++ = 0;
		if (!*p)
			break;
		keys[ntok] = p;
		vals[ntok] = "";
		bool has_eq = false;
		while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
			if (*p == '=' && !has_eq) {
				has_eq = true;
				*p = 0;
				vals[ntok] = p + 1;
			}
			p++;
		}
		ntok++;
	}
}

const char *cmdline_raw(void)
{
	return raw;
}

/* Value of the last token named KEY, "" for a bare key, NULL if absent. */
const char *cmdline_get(const char *key)
{
	for (uint32_t i = ntok; i-- > 0;)
		if (strcmp(keys[i], key) == 0)
			return vals[i];
	return NULL;
}

/* Parses decimal or 0x-hex VALUE into *OUT; false on junk or overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	unsigned base = 10;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned d;
		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (unsigned)(*s - 'A' + 10);
		else
			return false;
		if (v > (UINT64_MAX - d) / base)
			return false;
		v = v * base + d;
	}
	*out = v;
	return true;
}

/* Reads KEY as a number: false if absent, dies (ST_BAD_ARG) if malformed. */
bool cmdline_u64(const char *key, uint64_t *out)
{
	const char *v = cmdline_get(key);
	if (!v)
		return false;
	if (!parse_u64(v, out))
		die(ST_BAD_ARG, "bad value for %s: '%s' (want a decimal or 0x number)", key, v);
	return true;
}
