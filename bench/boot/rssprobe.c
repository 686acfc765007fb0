/* bench/boot/rssprobe.c — LD_PRELOAD probe that splits a VMM's resident
 * memory into guest RAM and everything else.
 *
 * Built as a shared object by run.sh and used only in the memory runs (the
 * timed runs do not load it).  It reads /proc/self/smaps
 *   - before every munmap() of 1 MiB or more made through the PLT (cowvm
 *     unmaps guest RAM on its way out, so the last look at it is here), and
 *   - from a destructor at exit() (QEMU exits with guest RAM still mapped).
 * A mapping is guest RAM when its name contains "/memfd:cowvm-ram" (cowvm) or
 * when it is anonymous and its size is RSSPROBE_MEM bytes to RSSPROBE_MEM +
 * 8 MiB (QEMU's RAM block).  At exit it writes one line to RSSPROBE_OUT:
 *   guest_kb=G other_kb=O other_anon_kb=A total_kb=T snapshots=N
 * G is the largest guest-RAM Rss seen (touched guest memory), O the largest
 * Rss outside guest RAM, A the anonymous part of that snapshot's O (what is
 * left once shared library text is set aside), T the largest total.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static unsigned long long mem_bytes;
static long long max_guest, max_other, max_other_anon, max_total;
static int snapshots;
static __thread int busy;

struct cur {
	int guest;
	long long rss, anon;
};

static long long field_kb(const char *line, const char *name)
{
	size_t n = strlen(name);

	if (strncmp(line, name, n))
		return -1;
	return strtoll(line + n, NULL, 10);
}

static void line_done(const char *line, struct cur *c, long long *g, long long *o,
		      long long *oa)
{
	unsigned long long lo, hi;
	long long v;
	int pos = 0;

	if (sscanf(line, "%llx-%llx %*s %*s %*s %*s %n", &lo, &hi, &pos) == 2 && pos > 0) {
		const char *name = line + pos;
		unsigned long long size = hi - lo;

		c->guest = strstr(name, "/memfd:cowvm-ram") != NULL ||
			   (!*name && mem_bytes && size >= mem_bytes &&
			    size <= mem_bytes + (8ULL << 20));
		return;
	}
	if ((v = field_kb(line, "Rss:")) >= 0) {
		if (c->guest)
			*g += v;
		else
			*o += v;
	} else if ((v = field_kb(line, "Anonymous:")) >= 0) {
		if (!c->guest)
			*oa += v;
	}
}

static void snapshot(void)
{
	static char buf[65536];
	char line[1024];
	size_t ll = 0;
	long long g = 0, o = 0, oa = 0;
	struct cur c = { 0, 0, 0 };
	ssize_t n;
	int fd;

	if (busy)
		return;
	busy = 1;
	fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		goto out;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				line[ll] = 0;
				line_done(line, &c, &g, &o, &oa);
				ll = 0;
			} else if (ll < sizeof(line) - 1) {
				line[ll++] = buf[i];
			}
		}
	}
	close(fd);
	snapshots++;
	if (g > max_guest)
		max_guest = g;
	if (o > max_other) {
		max_other = o;
		max_other_anon = oa;
	}
	if (g + o > max_total)
		max_total = g + o;
out:
	busy = 0;
}

int munmap(void *addr, size_t len)
{
	if (len >= (1u << 20))
		snapshot();
	return (int)syscall(SYS_munmap, addr, len);
}

__attribute__((constructor)) static void probe_init(void)
{
	const char *m = getenv("RSSPROBE_MEM");

	if (m)
		mem_bytes = strtoull(m, NULL, 0);
}

__attribute__((destructor)) static void probe_fini(void)
{
	const char *path = getenv("RSSPROBE_OUT");
	char out[256];
	int fd, len;

	snapshot();
	if (!path)
		return;
	len = snprintf(out, sizeof(out),
		       "guest_kb=%lld other_kb=%lld other_anon_kb=%lld total_kb=%lld snapshots=%d\n",
		       max_guest, max_other, max_other_anon, max_total, snapshots);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		if (write(fd, out, (size_t)len) < 0) {
			/* nothing useful to do */
		}
		close(fd);
	}
}
