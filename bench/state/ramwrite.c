/* bench/state/ramwrite.c — what writing guest RAM to a state file costs on
 * this host, one way at a time (used to explain cowvm's save time; see
 * README.md).  No KVM involved: the "guest RAM" is a memfd written by this
 * process, as cowvm's is written by the guest.
 *
 *   ramwrite [MIB] [ROUNDS] [DIR]        defaults: 512 6 /tmp
 *
 * Each round runs, in turn and each in a fresh child process:
 *   one      memfd RAM -> file with a single pwrite (what cowvm does for a
 *            guest whose RAM is all non-zero)
 *   2m       the same in 2 MiB pwrites
 *   128k     the same in 128 KiB pwrites
 *   pipe     memfd RAM -> pipe -> `cat > file` (what QEMU's exec:cat does)
 *   mapped   RAM is a MAP_SHARED mapping of the state file itself; "saving"
 *            is writing a 4 KiB header and a trailer and renaming
 * and prints, per way, the median and the range over the rounds of: the
 * fill (writing every 8-byte word), the save (to the file being renamed into
 * place; no fsync, as cowvm), the save's CPU time (user+sys of the process
 * and of its reaped children), and freeing the RAM (munmap + close).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { W_ONE, W_2M, W_128K, W_PIPE, W_MAPPED, W_N };
static const char *way_name[W_N] = { "one", "2m", "128k", "pipe", "mapped" };
enum { M_FILL, M_SAVE, M_CPU, M_FREE, M_N };
static const char *metric_name[M_N] = { "fill", "save", "save CPU", "free RAM" };

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double cpu_ms(void)
{
	struct rusage a, b;

	getrusage(RUSAGE_SELF, &a);
	getrusage(RUSAGE_CHILDREN, &b);
	return (a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) * 1e3 +
	       (a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec + b.ru_stime.tv_usec) / 1e3;
}

static int write_chunks(int fd, const uint8_t *p, size_t len, size_t chunk, off_t off)
{
	for (size_t o = 0; o < len;) {
		size_t n = len - o < chunk ? len - o : chunk;
		ssize_t w = pwrite(fd, p + o, n, off + (off_t)o);

		if (w <= 0)
			return -1;
		o += (size_t)w;
	}
	return 0;
}

/* One way, in this (child) process; writes 4 doubles to OUT. */
static int run_way(int way, size_t size, const char *dir, int out)
{
	char path[4096], tmp[4200];
	uint8_t hdr[4096] = "COWVMSTA";
	double m[M_N], t0, c0;
	uint8_t *ram;
	int fd = -1, rfd;

	snprintf(path, sizeof(path), "%s/ramwrite-%d.st", dir, (int)getpid());
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	t0 = now_ms();
	if (way == W_MAPPED) {
		rfd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (rfd < 0 || ftruncate(rfd, (off_t)(4096 + size + 64)) < 0)
			return 1;
		ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 4096);
	} else {
		rfd = memfd_create("ramwrite", MFD_CLOEXEC);
		if (rfd < 0 || ftruncate(rfd, (off_t)size) < 0)
			return 1;
		ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0);
	}
	if (ram == MAP_FAILED)
		return 1;
	for (size_t i = 0; i < size; i += 8)
		*(volatile uint64_t *)(ram + i) = (i * 0x9e3779b97f4a7c15ULL) | 1;
	m[M_FILL] = now_ms() - t0;

	c0 = cpu_ms();
	t0 = now_ms();
	switch (way) {
	case W_ONE:
	case W_2M:
	case W_128K:
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || pwrite(fd, hdr, sizeof(hdr), 0) != sizeof(hdr) ||
		    write_chunks(fd, ram, size, way == W_ONE ? size : way == W_2M ? 2u << 20 : 128u << 10,
				 4096) || close(fd) < 0)
			return 1;
		break;
	case W_PIPE: {
		int p[2];
		pid_t c;

		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || pipe(p) < 0)
			return 1;
		c = fork();
		if (c == 0) {
			dup2(p[0], 0);
			dup2(fd, 1);
			close(p[1]);
			execlp("cat", "cat", (char *)NULL);
			_exit(127);
		}
		close(p[0]);
		close(fd);
		for (size_t o = 0; o < size;) {
			ssize_t w = write(p[1], ram + o, size - o < (1u << 20) ? size - o : 1u << 20);

			if (w <= 0)
				return 1;
			o += (size_t)w;
		}
		close(p[1]);
		waitpid(c, NULL, 0);
		break;
	}
	case W_MAPPED:
		if (pwrite(rfd, hdr, sizeof(hdr), 0) != sizeof(hdr) ||
		    pwrite(rfd, hdr, 64, (off_t)(4096 + size)) != 64)
			return 1;
		break;
	}
	if (rename(tmp, path) < 0)
		return 1;
	m[M_SAVE] = now_ms() - t0;
	m[M_CPU] = cpu_ms() - c0;

	t0 = now_ms();
	munmap(ram, size);
	close(rfd);
	m[M_FREE] = now_ms() - t0;
	unlink(path);
	return write(out, m, sizeof(m)) == sizeof(m) ? 0 : 1;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 512;
	int rounds = argc > 2 ? atoi(argv[2]) : 6;
	const char *dir = argc > 3 ? argv[3] : "/tmp";
	double (*r)[M_N][64];

	if (!mib || rounds < 1 || rounds > 64) {
		fprintf(stderr, "usage: ramwrite [MIB] [ROUNDS 1-64] [DIR]\n");
		return 2;
	}
	r = calloc(W_N, sizeof(*r));
	if (!r)
		return 2;
	for (int i = 0; i < rounds; i++) {
		for (int w = 0; w < W_N; w++) {
			int p[2];
			pid_t c;
			double m[M_N];

			if (pipe(p) < 0)
				return 2;
			c = fork();
			if (c == 0) {
				close(p[0]);
				_exit(run_way(w, mib << 20, dir, p[1]));
			}
			close(p[1]);
			if (read(p[0], m, sizeof(m)) != sizeof(m)) {
				fprintf(stderr, "ramwrite: %s failed (disk space in %s?)\n", way_name[w], dir);
				return 1;
			}
			close(p[0]);
			waitpid(c, NULL, 0);
			for (int k = 0; k < M_N; k++)
				r[w][k][i] = m[k];
		}
	}
	printf("%zu MiB of RAM, %d rounds, files in %s: median (min-max) ms\n", mib, rounds, dir);
	printf("%-8s", "way");
	for (int k = 0; k < M_N; k++)
		printf(" %22s", metric_name[k]);
	printf("\n");
	for (int w = 0; w < W_N; w++) {
		printf("%-8s", way_name[w]);
		for (int k = 0; k < M_N; k++) {
			double *v = r[w][k];
			char s[64];

			qsort(v, (size_t)rounds, sizeof(double), cmp);
			snprintf(s, sizeof(s), "%.0f (%.0f-%.0f)",
				 rounds % 2 ? v[rounds / 2] : (v[rounds / 2 - 1] + v[rounds / 2]) / 2, v[0],
				 v[rounds - 1]);
			printf(" %22s", s);
		}
		printf("\n");
	}
	return 0;
}
