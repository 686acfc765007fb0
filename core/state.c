/* core/state.c — the VM state file; format in state.h and man/cowvm-state.5.
 *
 * Save:  running ──vmm_vm_pause──> paused ──device saves (I/O drained)──>
 *        records + RAM written to FILE.tmp ──rename──> FILE   (vCPUs stay paused)
 * Load:  vmm_state_open (checks) ──vmm_state_map_ram──> VM created on that RAM
 *        ──devices created as saved──> vmm_state_apply ──> ready to run
 */
#include "core/state.h"
#include "core/machine.h"
#include "storage/engine.h"
#include "util/io.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#define ST_MAGIC        "COWVMSTA"
#define ST_END_MAGIC    "COWVMEND"
#define ST_VERSION      1
#define ST_HDR_LEN      64
#define ST_TRAILER_LEN  64
#define ST_PAGE         4096u
#define ST_CHUNK        (1u << 20)       /* zstd chunk */
#define ST_WRITE_CHUNK  (2u << 20)       /* largest single RAM write */
#define ST_MAX_META     (64u << 20)

#define MACH_F_RNG     (1u << 0)
#define MACH_F_NO_PIT  (1u << 1)

enum {
	SEC_MACHINE = 1, SEC_VCPU, SEC_IRQCHIP, SEC_PIT, SEC_CLOCK, SEC_DEVICE,
};

struct st_section {
	uint32_t type;
	const uint8_t *p;
	uint64_t len;
};

struct vmm_state_file {
	char *path;
	int fd;
	uint32_t flags;
	uint64_t ram_size, ram_off, ram_len, ram_hash;
	uint8_t *meta;               /* [0, ram_off) */
	struct st_section *secs;
	uint32_t nsecs;
	/* machine section, parsed */
	uint32_t ncpus, mflags, ndisks;
	char *disks[VMM_MAX_DISKS];
};

/* ---- helpers ---- */

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int add_str(struct ut_buf *b, const char *s)
{
	size_t n = strlen(s);
	int r = ut_buf_add_le32(b, (uint32_t)n);

	return r ? r : ut_buf_add(b, s, n);
}

/* Begin a section: type, 0, length placeholder. Returns the offset to patch. */
static size_t sec_begin(struct ut_buf *b, uint32_t type, int *r)
{
	size_t at = b->len;

	if (!*r)
		*r = ut_buf_add_le32(b, type);
	if (!*r)
		*r = ut_buf_add_le32(b, 0);
	if (!*r)
		*r = ut_buf_add_le64(b, 0);
	return at;
}

static void sec_end(struct ut_buf *b, size_t at, int r)
{
	if (!r)
		put_le(b->data + at + 8, b->len - at - 16, 8);
}

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;

	for (unsigned i = 0; i < ST_PAGE / 8; i += 4)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
			return false;
	return true;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- save ---- */

static int save_meta(struct vmm_machine *m, struct ut_buf *b, struct ut_err *err)
{
	struct vmm_vm *vm = &m->vm;
	struct kvm_clock_data clk;
	size_t at;
	int r = 0;

	/* the guest's clock first: it stopped for the guest when the vCPUs did,
	 * and must not run on while the records below are written */
	memset(&clk, 0, sizeof(clk));
	if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &clk) < 0)
		return ut_errf_sys(err, -errno, "unable to read the KVM clock");

	at = sec_begin(b, SEC_MACHINE, &r);
	r = r ? r : ut_buf_add_le64(b, vm->mem.ram_size);
	r = r ? r : ut_buf_add_le32(b, (uint32_t)vm->ncpus);
	r = r ? r : ut_buf_add_le32(b, (m->cfg.rng ? MACH_F_RNG : 0) |
					  (vm->has_pit ? 0 : MACH_F_NO_PIT));
	r = r ? r : ut_buf_add_le32(b, (uint32_t)m->cfg.ndisks);
	for (int i = 0; !r && i < m->cfg.ndisks; i++)
		r = add_str(b, m->cfg.disks[i]);
	sec_end(b, at, r);
	for (int i = 0; !r && i < vm->ncpus; i++) {
		at = sec_begin(b, SEC_VCPU, &r);
		r = r ? r : ut_buf_add_le32(b, (uint32_t)i);
		if (!r && (r = vmm_vcpu_save(&vm->vcpus[i], b, err)))
			return r;
		sec_end(b, at, r);
	}
	for (uint32_t chip = 0; !r && chip < 3; chip++) {
		struct kvm_irqchip c = { .chip_id = chip };

		if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &c) < 0)
			return ut_errf_sys(err, -errno, "unable to read irqchip %u", chip);
		at = sec_begin(b, SEC_IRQCHIP, &r);
		r = r ? r : ut_buf_add(b, &c, sizeof(c));
		sec_end(b, at, r);
	}
	if (!r) {
		struct kvm_pit_state2 pit;

		if (vm->has_pit) {
			if (ioctl(vm->vm_fd, KVM_GET_PIT2, &pit) < 0)
				return ut_errf_sys(err, -errno, "unable to read the PIT");
			at = sec_begin(b, SEC_PIT, &r);
			r = r ? r : ut_buf_add(b, &pit, sizeof(pit));
			sec_end(b, at, r);
		}
		at = sec_begin(b, SEC_CLOCK, &r);
		r = r ? r : ut_buf_add(b, &clk, sizeof(clk));
		sec_end(b, at, r);
	}
	for (int i = 0; !r && i < vm->ndevs; i++) {
		struct vmm_device *d = vm->devs[i];

		at = sec_begin(b, SEC_DEVICE, &r);
		r = r ? r : add_str(b, d->id);
		r = r ? r : add_str(b, d->ops->type);
		if (!r && d->ops->save && (r = d->ops->save(d, b)))
			return ut_errf(err, r, "device '%s': unable to save its state (%s)", d->id,
				       strerror(-r));
		sec_end(b, at, r);
	}
	return r ? ut_errf(err, r, "out of memory building the state records") : 0;
}

/* Writes of the RAM image go through storage/'s I/O engine (io_uring, or
 * synchronous where it cannot be set up; short writes are completed there),
 * ST_WRITE_DEPTH in flight while the next pages are scanned and hashed. */
#define ST_WRITE_DEPTH 8

struct ram_writer {
	struct stg_engine *e;
	int fd;
	int err;                 /* first error */
};

static void rw_done(void *opaque, int result)
{
	struct ram_writer *w = opaque;

	if (result < 0 && !w->err)
		w->err = result;
}

static int rw_write(struct ram_writer *w, const uint8_t *p, uint64_t n, uint64_t off)
{
	struct iovec v = { .iov_base = (void *)p, .iov_len = n };
	int r;

	if (w->err)
		return w->err;
	r = stg_engine_queue_wait(w->e, STG_EOP_WRITEV, w->fd, &v, 1, off, n, 0, rw_done, w);
	return r < 0 ? r : stg_engine_flush(w->e);
}

/* Wait for every write in flight (before the file is synced and closed: a
 * write still in flight would leave a hole in the saved RAM). Returns the
 * first error of any write. */
static int rw_finish(struct ram_writer *w)
{
	int r = stg_engine_drain(w->e);

	if (r < 0 && !w->err)
		w->err = r;   /* cannot wait: never report a partial save as done */
	return w->err;
}

/* Raw RAM: write non-zero pages in place (holes stay holes), hash them. */
static int save_ram_raw(const struct vmm_mem *mem, int fd, uint64_t off, XXH3_state_t *h,
			uint64_t *written)
{
	struct ram_writer w = { .fd = fd };
	uint64_t size = mem->ram_size, pos = 0;
	int r = stg_engine_create(ST_WRITE_DEPTH, -1, STG_ENG_AUTO, &w.e, NULL);

	while (!r && pos < size) {
		uint64_t end = size, run;

		if (mem->fd >= 0) {   /* skip what the guest never touched */
			off_t d = lseek(mem->fd, (off_t)pos, SEEK_DATA);

			if (d < 0)
				break;   /* ENXIO: no data after pos */
			pos = (uint64_t)d & ~(uint64_t)(ST_PAGE - 1);
			d = lseek(mem->fd, (off_t)pos, SEEK_HOLE);
			end = d < 0 ? size : (uint64_t)d;
		}
		while (!r && pos < end) {
			if (page_is_zero(mem->base + pos)) {
				pos += ST_PAGE;
				continue;
			}
			/* a run of non-zero pages, at most one write chunk long */
			for (run = pos; run < end && run - pos < ST_WRITE_CHUNK &&
			     !page_is_zero(mem->base + run); run += ST_PAGE) {
				uint8_t o[8];

				put_le(o, run, 8);
				XXH3_64bits_update(h, o, 8);
				XXH3_64bits_update(h, mem->base + run, ST_PAGE);
			}
			r = rw_write(&w, mem->base + pos, run - pos, off + pos);
			*written += run - pos;
			pos = run;
		}
	}
	if (w.e) {
		int fr = rw_finish(&w);

		if (!r)
			r = fr;
		stg_engine_destroy(w.e);
	}
	return r;
}

/* zstd RAM: 1 MiB chunks, all-zero chunks left out. Returns the section length. */
static int save_ram_zstd(const struct vmm_mem *mem, int fd, uint64_t off, XXH3_state_t *h,
			 uint64_t *len)
{
	size_t cap = ZSTD_compressBound(ST_CHUNK);
	uint8_t *cbuf = malloc(16 + cap);
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	uint64_t pos = 0;
	int r = 0;

	*len = 0;
	if (!cbuf || !cctx) {
		r = -ENOMEM;
		goto out;
	}
	for (pos = 0; pos < mem->ram_size; pos += ST_CHUNK) {
		uint64_t n = mem->ram_size - pos < ST_CHUNK ? mem->ram_size - pos : ST_CHUNK;
		bool zero = true;
		size_t c;

		for (uint64_t p = pos; p < pos + n; p += ST_PAGE) {
			uint8_t o[8];

			if (page_is_zero(mem->base + p))
				continue;
			zero = false;
			put_le(o, p, 8);
			XXH3_64bits_update(h, o, 8);
			XXH3_64bits_update(h, mem->base + p, ST_PAGE);
		}
		if (zero)
			continue;
		c = ZSTD_compressCCtx(cctx, cbuf + 16, cap, mem->base + pos, n, 1);
		if (ZSTD_isError(c)) {
			r = -EIO;
			goto out;
		}
		put_le(cbuf, pos, 8);
		put_le(cbuf + 8, n, 4);
		put_le(cbuf + 12, c, 4);
		r = ut_pwrite_all(fd, cbuf, 16 + c, off + *len);
		if (r)
			goto out;
		*len += 16 + c;
	}
out:
	ZSTD_freeCCtx(cctx);
	free(cbuf);
	return r;
}

int vmm_state_save(struct vmm_machine *m, const char *path, unsigned flags,
		   struct vmm_state_stats *stats, struct ut_err *err)
{
	struct ut_buf meta = UT_BUF_INIT;
	uint8_t trailer[ST_TRAILER_LEN] = { 0 };
	XXH3_state_t *h = XXH3_createState();
	char tmp[4200];
	uint64_t ram_off, ram_len = 0, written = 0;
	double t0 = now_ms();
	int fd = -1, r;

	snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid());
	if (!h)
		return ut_errf(err, -ENOMEM, "out of memory");
	XXH3_64bits_reset(h);
	r = vmm_vm_pause(&m->vm);
	if (r) {
		r = ut_errf(err, r, "unable to pause the vCPUs");
		goto out;
	}
	/* header placeholder, then the records (devices drain their I/O here) */
	r = ut_buf_grow(&meta, ST_HDR_LEN) ? -ENOMEM : 0;
	if (!r) {
		memset(meta.data, 0, ST_HDR_LEN);
		meta.len = ST_HDR_LEN;
		r = save_meta(m, &meta, err);
	}
	if (r)
		goto out;
	ram_off = (meta.len + ST_PAGE - 1) & ~(uint64_t)(ST_PAGE - 1);
	memcpy(meta.data, ST_MAGIC, 8);
	put_le(meta.data + 8, ST_VERSION, 4);
	put_le(meta.data + 12, (flags & VMM_STATE_F_ZSTD) ? 1 : 0, 4);
	put_le(meta.data + 16, m->vm.mem.ram_size, 8);
	put_le(meta.data + 24, ram_off, 8);

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = ut_errf_sys(err, -errno, "unable to create '%s'", tmp);
		goto out;
	}
	if (flags & VMM_STATE_F_ZSTD) {
		r = save_ram_zstd(&m->vm.mem, fd, ram_off, h, &ram_len);
		written = ram_len;
	} else {
		/* RAM goes out with O_DIRECT where the file system allows it: no
		 * page-cache allocation and copy (about 3.5x faster here); guest
		 * RAM is page-aligned and so is ram_off */
		int dfd = open(tmp, O_WRONLY | O_DIRECT | O_CLOEXEC);

		ram_len = m->vm.mem.ram_size;
		r = ftruncate(fd, (off_t)(ram_off + ram_len)) < 0 ? -errno : 0;
		if (!r)
			r = save_ram_raw(&m->vm.mem, dfd >= 0 ? dfd : fd, ram_off, h, &written);
		if (r == -EINVAL && dfd >= 0) {   /* direct I/O refused after all */
			XXH3_64bits_reset(h);
			written = 0;
			r = save_ram_raw(&m->vm.mem, fd, ram_off, h, &written);
		}
		if (dfd >= 0)
			close(dfd);
	}
	if (r) {
		r = ut_errf_sys(err, r, "unable to write guest RAM to '%s'", tmp);
		goto out;
	}
	put_le(meta.data + 32, ram_len, 8);
	/* metadata + its padding, then the trailer */
	{
		uint8_t *padded = calloc(1, ram_off);

		if (!padded) {
			r = ut_errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		memcpy(padded, meta.data, meta.len);
		memcpy(trailer, ST_END_MAGIC, 8);
		put_le(trailer + 8, XXH3_64bits(padded, ram_off), 8);
		put_le(trailer + 16, XXH3_64bits_digest(h), 8);
		put_le(trailer + 24, ram_off + ram_len + ST_TRAILER_LEN, 8);
		r = ut_pwrite_all(fd, padded, ram_off, 0);
		free(padded);
	}
	if (!r)
		r = ut_pwrite_all(fd, trailer, sizeof(trailer), ram_off + ram_len);
	if (r) {
		r = ut_errf_sys(err, r, "unable to write '%s'", tmp);
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = ut_errf_sys(err, -errno, "unable to write '%s'", tmp);
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = ut_errf_sys(err, -errno, "unable to rename '%s' to '%s'", tmp, path);
		goto out;
	}
	if (stats) {
		stats->ram_bytes_written = written;
		stats->file_bytes = ram_off + ram_len + ST_TRAILER_LEN;
		stats->pause_ms = now_ms() - t0;
	}
out:
	if (fd >= 0)
		close(fd);
	if (r)
		unlink(tmp);
	XXH3_freeState(h);
	ut_buf_release(&meta);
	return r;
}

/* ---- load ---- */

void vmm_state_close(struct vmm_state_file *sf)
{
	if (!sf)
		return;
	if (sf->fd >= 0)
		close(sf->fd);
	for (uint32_t i = 0; i < sf->ndisks; i++)
		free(sf->disks[i]);
	free(sf->secs);
	free(sf->meta);
	free(sf->path);
	free(sf);
}

static int parse_machine(struct vmm_state_file *sf, const struct st_section *s)
{
	struct ut_rd rd;
	uint64_t ram;
	uint32_t ndisks;

	/* sf->ndisks counts the strings held (vmm_state_close frees them),
	 * never the file's count before it is checked */
	ut_rd_init(&rd, s->p, s->len);
	if (ut_rd_le64(&rd, &ram) || ut_rd_le32(&rd, &sf->ncpus) || ut_rd_le32(&rd, &sf->mflags) ||
	    ut_rd_le32(&rd, &ndisks) || ram != sf->ram_size || ndisks > VMM_MAX_DISKS ||
	    sf->ncpus < 1 || sf->ncpus > VMM_MAX_CPUS ||
	    (sf->mflags & ~(MACH_F_RNG | MACH_F_NO_PIT)))
		return -EBADMSG;
	for (uint32_t i = 0; i < ndisks; i++) {
		uint32_t n;

		if (ut_rd_le32(&rd, &n) || n > rd.len - rd.off || n > 4096)
			return -EBADMSG;
		sf->disks[i] = strndup((const char *)rd.p + rd.off, n);
		if (!sf->disks[i])
			return -ENOMEM;
		sf->ndisks = i + 1;
		rd.off += n;
	}
	return 0;
}

static int ram_hash(const uint8_t *base, uint64_t size, uint64_t *out)
{
	XXH3_state_t *h = XXH3_createState();

	if (!h)
		return -ENOMEM;
	XXH3_64bits_reset(h);
	for (uint64_t p = 0; p < size; p += ST_PAGE) {
		uint8_t o[8];

		if (page_is_zero(base + p))
			continue;
		put_le(o, p, 8);
		XXH3_64bits_update(h, o, 8);
		XXH3_64bits_update(h, base + p, ST_PAGE);
	}
	*out = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	return 0;
}

int vmm_state_open(const char *path, unsigned flags, struct vmm_state_file **out,
		   struct ut_err *err)
{
	struct vmm_state_file *sf = calloc(1, sizeof(*sf));
	uint8_t hdr[ST_HDR_LEN], tr[ST_TRAILER_LEN];
	struct stat st;
	uint64_t size, off;
	uint32_t version, nsecs_cap = 64;
	int r;

	*out = NULL;
	if (!sf)
		return ut_errf(err, -ENOMEM, "out of memory");
	sf->fd = -1;
	sf->path = strdup(path);
	if (!sf->path) {
		r = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	sf->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (sf->fd < 0) {
		r = ut_errf_sys(err, -errno, "unable to open state file '%s'", path);
		goto out;
	}
	if (fstat(sf->fd, &st) < 0) {
		r = ut_errf_sys(err, -errno, "unable to stat '%s'", path);
		goto out;
	}
	size = (uint64_t)st.st_size;
	if (size < ST_HDR_LEN + ST_TRAILER_LEN || pread(sf->fd, hdr, sizeof(hdr), 0) != sizeof(hdr)) {
		r = ut_errf(err, -EBADMSG, "'%s': not a cowvm state file (too short)", path);
		goto out;
	}
	if (memcmp(hdr, ST_MAGIC, 8)) {
		r = ut_errf(err, -EBADMSG, "'%s': not a cowvm state file (bad magic)", path);
		goto out;
	}
	version = (uint32_t)get_le(hdr + 8, 4);
	if (version != ST_VERSION) {
		r = ut_errf(err, -EPROTO, "'%s': state file version %u; this cowvm reads version %u",
			    path, version, ST_VERSION);
		goto out;
	}
	sf->flags = (uint32_t)get_le(hdr + 12, 4);
	if (sf->flags & ~1u) {
		r = ut_errf(err, -EPROTO, "'%s': unknown feature flags 0x%x", path, sf->flags & ~1u);
		goto out;
	}
	sf->ram_size = get_le(hdr + 16, 8);
	sf->ram_off = get_le(hdr + 24, 8);
	sf->ram_len = get_le(hdr + 32, 8);
	if (sf->ram_off < ST_HDR_LEN || sf->ram_off % ST_PAGE || sf->ram_off > ST_MAX_META ||
	    sf->ram_size == 0 || sf->ram_size % (2u << 20) ||
	    (!(sf->flags & 1) && sf->ram_len != sf->ram_size) ||
	    sf->ram_len > size || sf->ram_off > size - sf->ram_len ||
	    sf->ram_off + sf->ram_len + ST_TRAILER_LEN != size) {
		r = ut_errf(err, -EBADMSG, "'%s': truncated or corrupt (file is %llu bytes; the header "
			    "describes %llu)", path, (unsigned long long)size,
			    (unsigned long long)(sf->ram_off + sf->ram_len + ST_TRAILER_LEN));
		goto out;
	}
	if (pread(sf->fd, tr, sizeof(tr), (off_t)(size - ST_TRAILER_LEN)) != sizeof(tr) ||
	    memcmp(tr, ST_END_MAGIC, 8) || get_le(tr + 24, 8) != size) {
		r = ut_errf(err, -EBADMSG, "'%s': truncated or corrupt (no valid trailer)", path);
		goto out;
	}
	sf->ram_hash = get_le(tr + 16, 8);
	sf->meta = malloc(sf->ram_off);
	if (!sf->meta || pread(sf->fd, sf->meta, sf->ram_off, 0) != (ssize_t)sf->ram_off) {
		r = ut_errf(err, -EIO, "'%s': unable to read its records", path);
		goto out;
	}
	if (XXH3_64bits(sf->meta, sf->ram_off) != get_le(tr + 8, 8)) {
		r = ut_errf(err, -EBADMSG, "'%s': checksum mismatch in the state records (corrupt)", path);
		goto out;
	}
	/* sections */
	sf->secs = calloc(nsecs_cap, sizeof(*sf->secs));
	if (!sf->secs) {
		r = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (off = ST_HDR_LEN; off + 16 <= sf->ram_off;) {
		uint32_t type = (uint32_t)get_le(sf->meta + off, 4);
		uint64_t len = get_le(sf->meta + off + 8, 8);

		if (type == 0)
			break;   /* padding */
		if (len > sf->ram_off - off - 16) {
			r = ut_errf(err, -EBADMSG, "'%s': section at %llu overruns the records", path,
				    (unsigned long long)off);
			goto out;
		}
		if (sf->nsecs == nsecs_cap) {
			struct st_section *n = realloc(sf->secs, 2 * nsecs_cap * sizeof(*n));

			if (!n) {
				r = ut_errf(err, -ENOMEM, "out of memory");
				goto out;
			}
			sf->secs = n;
			nsecs_cap *= 2;
		}
		sf->secs[sf->nsecs++] = (struct st_section){ type, sf->meta + off + 16, len };
		off += 16 + len;
	}
	if (!sf->nsecs || sf->secs[0].type != SEC_MACHINE || parse_machine(sf, &sf->secs[0])) {
		r = ut_errf(err, -EBADMSG, "'%s': machine record missing or malformed", path);
		goto out;
	}
	(void)flags;
	*out = sf;
	return 0;
out:
	vmm_state_close(sf);
	return r;
}

int vmm_state_machine_cfg(const struct vmm_state_file *sf, struct vmm_machine_cfg *cfg)
{
	cfg->mem = sf->ram_size;
	cfg->cpus = (int)sf->ncpus;
	cfg->rng = sf->mflags & MACH_F_RNG;
	cfg->no_pit = sf->mflags & MACH_F_NO_PIT;
	cfg->ndisks = (int)sf->ndisks;
	for (uint32_t i = 0; i < sf->ndisks; i++)
		cfg->disks[i] = sf->disks[i];
	return 0;
}

int vmm_state_map_ram(const struct vmm_state_file *sf, uint8_t **base, int *memfd,
		      struct ut_err *err)
{
	ZSTD_DCtx *dctx = NULL;
	uint8_t *chunk = NULL, *ram;
	uint64_t off, h;
	int fd = -1, r = 0;

	*memfd = -1;
	if (!(sf->flags & 1)) {
		/* lazy: a private mapping of the file; pages come in on first touch */
		ram = mmap(NULL, sf->ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE,
			   sf->fd, (off_t)sf->ram_off);
		if (ram == MAP_FAILED)
			return ut_errf_sys(err, -errno, "'%s': unable to map guest RAM", sf->path);
		*base = ram;
		return 0;
	}
	fd = memfd_create("cowvm-ram", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)sf->ram_size) < 0)
		return ut_errf_sys(err, -errno, "unable to create guest RAM");
	ram = mmap(NULL, sf->ram_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (ram == MAP_FAILED) {
		r = ut_errf_sys(err, -errno, "unable to map guest RAM");
		close(fd);
		return r;
	}
	dctx = ZSTD_createDCtx();
	chunk = malloc(ZSTD_compressBound(ST_CHUNK));
	if (!dctx || !chunk) {
		r = ut_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (off = 0; off < sf->ram_len;) {
		uint8_t ch[16];
		uint64_t at;
		uint32_t ulen, clen;
		size_t got;

		if (sf->ram_len - off < 16 ||
		    pread(sf->fd, ch, 16, (off_t)(sf->ram_off + off)) != 16) {
			r = ut_errf(err, -EBADMSG, "'%s': RAM chunk header truncated", sf->path);
			goto out;
		}
		at = get_le(ch, 8);
		ulen = (uint32_t)get_le(ch + 8, 4);
		clen = (uint32_t)get_le(ch + 12, 4);
		if (at % ST_PAGE || ulen > ST_CHUNK || at > sf->ram_size || ulen > sf->ram_size - at ||
		    clen > ZSTD_compressBound(ST_CHUNK) || clen > sf->ram_len - off - 16 ||
		    pread(sf->fd, chunk, clen, (off_t)(sf->ram_off + off + 16)) != (ssize_t)clen) {
			r = ut_errf(err, -EBADMSG, "'%s': RAM chunk at %llu malformed", sf->path,
				    (unsigned long long)off);
			goto out;
		}
		got = ZSTD_decompressDCtx(dctx, ram + at, ulen, chunk, clen);
		if (ZSTD_isError(got) || got != ulen) {
			r = ut_errf(err, -EBADMSG, "'%s': RAM chunk at %llu does not decompress",
				    sf->path, (unsigned long long)off);
			goto out;
		}
		off += 16 + clen;
	}
	/* compressed RAM was read in full anyway: check it */
	r = ram_hash(ram, sf->ram_size, &h);
	if (!r && h != sf->ram_hash)
		r = ut_errf(err, -EBADMSG, "'%s': RAM checksum mismatch (corrupt)", sf->path);
out:
	ZSTD_freeDCtx(dctx);
	free(chunk);
	if (r) {
		munmap(ram, sf->ram_size);
		close(fd);
		return r;
	}
	*base = ram;
	*memfd = fd;
	return 0;
}

int vmm_state_verify_ram(const struct vmm_state_file *sf, const uint8_t *ram, struct ut_err *err)
{
	uint64_t h;
	int r = ram_hash(ram, sf->ram_size, &h);

	if (r)
		return ut_errf(err, r, "out of memory");
	if (h != sf->ram_hash)
		return ut_errf(err, -EBADMSG, "'%s': RAM checksum mismatch (corrupt)", sf->path);
	return 0;
}

/* Index in vm->devs of the device with id @id (@n bytes), or -1. */
static int find_device(struct vmm_vm *vm, const char *id, size_t n)
{
	for (int i = 0; i < vm->ndevs; i++)
		if (strlen(vm->devs[i]->id) == n && !strncmp(vm->devs[i]->id, id, n))
			return i;
	return -1;
}

/* DEVICE section @s: its device in @vm (index *@di) and the device's own
 * record (*@rec, *@len). Returns 0, or -EBADMSG (header malformed) or
 * -ENODEV (no device of that id and type). */
static int sec_device(const struct vmm_state_file *sf, const struct st_section *s,
		      struct vmm_vm *vm, int *di, const uint8_t **rec, size_t *len,
		      struct ut_err *err)
{
	struct ut_rd rd;
	uint32_t idn, tn;
	const char *id, *type;
	struct vmm_device *d;

	ut_rd_init(&rd, s->p, s->len);
	if (ut_rd_le32(&rd, &idn) || idn > rd.len - rd.off)
		return ut_errf(err, -EBADMSG, "'%s': device record malformed", sf->path);
	id = (const char *)rd.p + rd.off;
	rd.off += idn;
	if (ut_rd_le32(&rd, &tn) || tn > rd.len - rd.off)
		return ut_errf(err, -EBADMSG, "'%s': device record malformed", sf->path);
	type = (const char *)rd.p + rd.off;
	rd.off += tn;
	*di = find_device(vm, id, idn);
	d = *di >= 0 ? vm->devs[*di] : NULL;
	if (!d || strlen(d->ops->type) != tn || strncmp(d->ops->type, type, tn))
		return ut_errf(err, -ENODEV, "'%s': saved device '%.*s' (%.*s) has no "
			       "match in this machine", sf->path, (int)idn, id, (int)tn, type);
	*rec = rd.p + rd.off;
	*len = rd.len - rd.off;
	return 0;
}

/* Everything about the sections that needs no device: known types, the
 * sizes of the irqchip, PIT and clock records, exactly one VCPU record for
 * each vCPU of the machine (a second one would overwrite the first; a
 * vCPU without one would run from its reset state next to restored ones)
 * and none for another, one DEVICE record for each device of the machine
 * and none for another. Checked before any record is applied: a file
 * refused here changes nothing in @vm. Returns 0, -EBADMSG or -ENODEV. */
static int check_sections(const struct vmm_state_file *sf, struct vmm_vm *vm, struct ut_err *err)
{
	bool seen[VMM_MAX_DEVICES] = { false }, cpu_seen[VMM_MAX_CPUS] = { false };
	int ndev = 0;

	for (uint32_t i = 1; i < sf->nsecs; i++) {
		const struct st_section *s = &sf->secs[i];
		const uint8_t *rec;
		size_t len;
		uint32_t idx;
		int di, r;

		switch (s->type) {
		case SEC_VCPU:
			if (s->len < 4)
				return ut_errf(err, -EBADMSG, "'%s': vCPU record of %llu bytes", sf->path,
					       (unsigned long long)s->len);
			idx = (uint32_t)get_le(s->p, 4);
			if (idx >= (uint32_t)vm->ncpus)
				return ut_errf(err, -EBADMSG, "'%s': record for vCPU %u, which this machine "
					       "(%d vCPUs) does not have", sf->path, idx, vm->ncpus);
			if (cpu_seen[idx])
				return ut_errf(err, -EBADMSG, "'%s': two records for vCPU %u", sf->path, idx);
			cpu_seen[idx] = true;
			break;
		case SEC_IRQCHIP:
			if (s->len != sizeof(struct kvm_irqchip))
				return ut_errf(err, -EBADMSG, "'%s': irqchip record size %llu", sf->path,
					       (unsigned long long)s->len);
			break;
		case SEC_PIT:
			if (s->len != sizeof(struct kvm_pit_state2) || !vm->has_pit)
				return ut_errf(err, -EBADMSG, "'%s': PIT record size, or a PIT record "
					       "for a machine without one", sf->path);
			break;
		case SEC_CLOCK:
			if (s->len != sizeof(struct kvm_clock_data))
				return ut_errf(err, -EBADMSG, "'%s': clock record size", sf->path);
			break;
		case SEC_DEVICE:
			r = sec_device(sf, s, vm, &di, &rec, &len, err);
			if (r)
				return r;
			/* one record per device: a second one would stand in for
			 * a device left without any (the count below) */
			if (seen[di])
				return ut_errf(err, -EBADMSG, "'%s': two records for device '%s'",
					       sf->path, vm->devs[di]->id);
			seen[di] = true;
			ndev++;
			break;
		default:
			return ut_errf(err, -EBADMSG, "'%s': unknown section type %u", sf->path, s->type);
		}
	}
	for (int i = 0; i < vm->ncpus; i++)
		if (!cpu_seen[i])
			return ut_errf(err, -EBADMSG, "'%s': no record for vCPU %d (of %d)", sf->path, i,
				       vm->ncpus);
	if (ndev != vm->ndevs)
		return ut_errf(err, -ENODEV, "'%s': %d device records for %d devices", sf->path, ndev,
			       vm->ndevs);
	return 0;
}

/* The sections are checked first (check_sections); then applied in file
 * order. A device's own record is checked by its restore op as it is
 * applied: a record refused there leaves the records before it applied
 * (vCPUs, irqchip, clock, earlier devices) and this device part-restored.
 * The machine must then not run: vmm_machine_restore destroys it, as a
 * migration receiver must. */
int vmm_state_apply(const struct vmm_state_file *sf, struct vmm_machine *m, struct ut_err *err)
{
	struct vmm_vm *vm = &m->vm;
	int r = check_sections(sf, vm, err);

	for (uint32_t i = 1; i < sf->nsecs && !r; i++) {
		const struct st_section *s = &sf->secs[i];

		switch (s->type) {
		case SEC_VCPU: {
			uint32_t idx = (uint32_t)get_le(s->p, 4);

			r = vmm_vcpu_restore(&vm->vcpus[idx], s->p + 4, s->len - 4, err);
			break;
		}
		case SEC_IRQCHIP: {
			struct kvm_irqchip c;

			memcpy(&c, s->p, sizeof(c));
			if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &c) < 0)
				r = ut_errf_sys(err, -errno, "unable to restore irqchip %u", c.chip_id);
			break;
		}
		case SEC_PIT: {
			struct kvm_pit_state2 pit;

			memcpy(&pit, s->p, sizeof(pit));
			if (ioctl(vm->vm_fd, KVM_SET_PIT2, &pit) < 0)
				r = ut_errf_sys(err, -errno, "unable to restore the PIT");
			break;
		}
		case SEC_CLOCK: {
			struct kvm_clock_data clk, set;

			memcpy(&clk, s->p, sizeof(clk));
			memset(&set, 0, sizeof(set));
			set.clock = clk.clock;   /* guest time continues from the save */
			if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &set) < 0)
				r = ut_errf_sys(err, -errno, "unable to restore the KVM clock");
			break;
		}
		case SEC_DEVICE: {
			const uint8_t *rec;
			size_t len;
			int di;
			struct vmm_device *d;

			r = sec_device(sf, s, vm, &di, &rec, &len, err);   /* checked: 0 */
			d = r ? NULL : vm->devs[di];
			if (d && d->ops->restore)
				r = d->ops->restore(d, rec, len, err);
			break;
		}
		default:
			break;   /* check_sections refused it */
		}
	}
	return r;
}
