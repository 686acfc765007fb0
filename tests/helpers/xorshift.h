/* tests/helpers/xorshift.h — the test programs' pseudo-random numbers:
 * xorshift64 (Marsaglia), deterministic for a seed so a failing run can be
 * replayed. Not for anything but tests. */
#ifndef TESTS_XORSHIFT_H
#define TESTS_XORSHIFT_H

#include <stdint.h>

/* Advance *@s (never 0) and return the new value. */
static inline uint64_t test_xorshift64(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

#endif
