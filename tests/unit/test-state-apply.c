/* tests/unit/test-state-apply.c — vmm_state_apply checks a state file's
 * sections before it applies any (core/state.c check_sections): a file
 * whose serial0 record is good but which is refused for a later section
 * (too few device records, a record for a device the machine lacks, an
 * unknown section type, a second record for serial0, a second record for
 * vCPU 0, no record for vCPU 1 of two, no vCPU record at all) leaves
 * serial0 as it was; the same record in a complete file is applied.
 * Without KVM: the machine the state-file fuzz target builds
 * (tests/fuzz/statefile-body.h: no irqchip or clock records are given; its
 * vCPUs have no fd, so a complete file, its vCPU records last, is applied
 * up to the first vCPU record, which fails at its first ioctl).
 */
#include "tests/fuzz/statefile-body.h"

#include <sys/mman.h>

#define COM1_SCR (0x3F8 + 7)
#define TA_RAM   (2u << 20)

static uint8_t scr_read(struct vmm_vm *vm)
{
	return (uint8_t)tv_io_rd(&vm->pio, COM1_SCR, 1);
}

static void put_sec(struct ut_buf *b, uint32_t type, const void *p, size_t n)
{
	if (ut_buf_add_le32(b, type) || ut_buf_add_le32(b, 0) || ut_buf_add_le64(b, n) ||
	    ut_buf_add(b, p, n))
		tv_die("ut_buf_add");
}

/* A DEVICE section: id, type, then @rec. */
static void put_dev(struct ut_buf *b, const char *id, const char *type, const struct ut_buf *rec)
{
	struct ut_buf s = UT_BUF_INIT;

	if (ut_buf_add_le32(&s, (uint32_t)strlen(id)) || ut_buf_add(&s, id, strlen(id)) ||
	    ut_buf_add_le32(&s, (uint32_t)strlen(type)) || ut_buf_add(&s, type, strlen(type)) ||
	    ut_buf_add(&s, rec->data, rec->len))
		tv_die("ut_buf_add");
	put_sec(b, 6, s.data, s.len);
	ut_buf_release(&s);
}

/* The header and machine section of a 2 MiB machine of @ncpus vCPUs without
 * a PIT, with virtio-rng when @rng and @ndisks disks (ram_off is fixed by
 * sf_make_file; the disks' option strings are not used by the machine the
 * fuzz body builds). */
static void put_head_machine(struct ut_buf *b, uint32_t ncpus, bool rng, uint32_t ndisks)
{
	uint8_t hdr[64] = "COWVMSTA", mach[20] = { 0 };
	struct ut_buf m = UT_BUF_INIT;

	ut_buf_reset(b);
	sf_put_le(hdr + 8, 1, 4);
	sf_put_le(hdr + 16, TA_RAM, 8);
	sf_put_le(hdr + 32, TA_RAM, 8);
	if (ut_buf_add(b, hdr, sizeof(hdr)))
		tv_die("ut_buf_add");
	sf_put_le(mach, TA_RAM, 8);
	sf_put_le(mach + 8, ncpus, 4);
	sf_put_le(mach + 12, 2 | (rng ? 1 : 0), 4);   /* no PIT */
	sf_put_le(mach + 16, ndisks, 4);
	if (ut_buf_add(&m, mach, sizeof(mach)))
		tv_die("ut_buf_add");
	for (uint32_t i = 0; i < ndisks; i++)
		if (ut_buf_add_le32(&m, 6) || ut_buf_add(&m, "path=x", 6))
			tv_die("ut_buf_add");
	put_sec(b, 1, m.data, m.len);
	ut_buf_release(&m);
}

static void put_head_cpus(struct ut_buf *b, uint32_t ncpus)
{
	put_head_machine(b, ncpus, false, 0);
}

static void put_head(struct ut_buf *b)
{
	put_head_cpus(b, 1);
}

/* Open, map and apply the records @recs as a state file to a fresh
 * machine whose serial scratch register is 0x11 before the apply. Returns
 * the apply's result, its message in @err, the scratch register after it
 * in *@scr, and (the machine's records) every device's fresh record in
 * @fresh[] when @fresh is not NULL. */
static int apply(const struct ut_buf *recs, struct ut_err *err, uint8_t *scr,
		 struct ut_buf *fresh, int *ndevs)
{
	static struct vmm_machine m;
	struct vmm_state_file *sf = NULL;
	struct vmm_machine_cfg cfg;
	uint8_t *meta = NULL, *ram = NULL;
	size_t meta_len = 0;
	char path[64];
	int ram_fd = -1, r = -1;
	int fd = sf_make_file(recs->data, recs->len, path, sizeof(path), &meta, &meta_len);

	ut_err_clear(err);
	*scr = 0;
	if (fd < 0)
		tv_die("sf_make_file");
	r = vmm_state_open(path, 0, &sf, err);
	close(fd);
	CHECK(r == 0, "open: %s", err->msg);
	if (r)
		goto out;
	memset(&cfg, 0, sizeof(cfg));
	vmm_state_machine_cfg(sf, &cfg);
	r = vmm_state_map_ram(sf, &ram, &ram_fd, err);
	CHECK(r == 0, "map: %s", err->msg);
	if (r)
		goto out;
	if (sf_machine_build(&m, &cfg, ram, ram_fd)) {
		sf_machine_destroy(&m, ram, cfg.mem, ram_fd);
		tv_die("sf_machine_build");
	}
	m.vm.ncpus = cfg.cpus;
	for (int i = 0; i < cfg.cpus; i++)
		m.vm.vcpus[i] = (struct vmm_vcpu){ .vm = &m.vm, .id = i, .fd = -1 };
	if (fresh) {
		*ndevs = m.vm.ndevs;
		for (int i = 0; i < m.vm.ndevs && i < VMM_MAX_DEVICES; i++) {
			ut_buf_reset(&fresh[i]);
			if (m.vm.devs[i]->ops->save && m.vm.devs[i]->ops->save(m.vm.devs[i], &fresh[i]))
				tv_die("save");
		}
	}
	tv_io_wr(&m.vm.pio, COM1_SCR, 1, 0x11);
	r = vmm_state_apply(sf, &m, err);
	*scr = scr_read(&m.vm);
	m.vm.ncpus = 0;
	sf_machine_destroy(&m, ram, cfg.mem, ram_fd);
out:
	vmm_state_close(sf);
	free(meta);
	return r;
}

/* Apply @recs: refused with a message containing @msg, before anything was
 * applied (serial0's scratch register still 0x11). */
#define EXPECT_REFUSED(recs, msg) expect_refused(__LINE__, recs, msg)
static void expect_refused(int line, const struct ut_buf *recs, const char *msg)
{
	struct ut_err err;
	uint8_t scr;
	int r = apply(recs, &err, &scr, NULL, NULL);

	if (r >= 0 || !strstr(err.msg, msg) || scr != 0x11) {
		tv_failures++;
		fprintf(stderr, "FAIL %s:%d: expected a refusal naming '%s' with serial0 "
			"untouched: got %d '%s', scratch 0x%x\n", __FILE__, line, msg, r, err.msg, scr);
	}
}

/* @recs := @head (a header, machine section and device records). */
static void recs_from(struct ut_buf *recs, const struct ut_buf *head)
{
	ut_buf_reset(recs);
	if (ut_buf_add(recs, head->data, head->len))
		tv_die("ut_buf_add");
}

/* A state file whose second record, a device's, is refused by that
 * device's restore op (cut short at every length, so every early return of
 * every restore op is taken; none accepts a record cut short), after
 * serial0's was applied: vmm_state_apply
 * fails naming the device with serial0 already restored (the machine is
 * part-restored, as state.h says), and tearing the machine down then
 * leaves no fd open (checked here) and no leak or bad access (under ASan:
 * `make asan`, LeakSanitizer at exit). The records are those of a machine
 * with a disk and virtio-rng whose driver set both up (queue 0 enabled,
 * DRIVER_OK), serial0's with scratch 0x5a. */
static void test_second_record_refused(void)
{
	static struct vmm_machine m0;
	struct vmm_machine_cfg cfg = { .mem = TA_RAM, .cpus = 1, .no_pit = true, .rng = true,
				       .ndisks = 1 };
	struct ut_buf rec[VMM_MAX_DEVICES], recs = UT_BUF_INIT;
	const char *id[VMM_MAX_DEVICES], *type[VMM_MAX_DEVICES];
	uint8_t *ram = mmap(NULL, TA_RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int ndevs, serial_i = -1, tried = 0, refused = 0;
	struct ut_err err;
	uint8_t scr;

	if (ram == MAP_FAILED || sf_machine_build(&m0, &cfg, ram, -1))
		tv_die("machine");
	ndevs = m0.vm.ndevs;
	for (uint16_t devid = 0x1042; devid <= 0x1044; devid += 2) {
		struct tv_drv d;

		CHECK(tv_drv_open(&d, &m0.vm, devid, 0) == 0, "no PCI device 1af4:%04x", devid);
		CHECK(tv_drv_init(&d, 0, 16, 0x10000 + (devid - 0x1042) * 0x4000ull) == 0,
		      "driver set-up of 1af4:%04x", devid);
		CHECK_EQ(tv_status(&d), 0x0F);
	}
	tv_io_wr(&m0.vm.pio, COM1_SCR, 1, 0x5a);
	for (int i = 0; i < ndevs; i++) {
		struct vmm_device *dv = m0.vm.devs[i];

		rec[i] = (struct ut_buf)UT_BUF_INIT;
		id[i] = strdup(dv->id);
		type[i] = strdup(dv->ops->type);
		if (!id[i] || !type[i] || (dv->ops->save && dv->ops->save(dv, &rec[i])))
			tv_die("save");
		if (!strcmp(dv->id, "serial0"))
			serial_i = i;
	}
	sf_machine_destroy(&m0, ram, TA_RAM, -1);
	if (serial_i < 0)
		tv_die("no serial0");

	for (int bad = 0; bad < ndevs; bad++) {
		for (size_t cut = 0; bad != serial_i && cut < rec[bad].len; cut++) {
			struct ut_buf part = { rec[bad].data, cut, cut };
			int nfds = tf_nfds(), r;

			put_head_machine(&recs, 1, true, 1);
			put_dev(&recs, "serial0", "serial", &rec[serial_i]);
			put_dev(&recs, id[bad], type[bad], &part);
			for (int i = 0; i < ndevs; i++)
				if (i != serial_i && i != bad)
					put_dev(&recs, id[i], type[i], &rec[i]);
			sf_put_vcpu(&recs, 0);
			r = apply(&recs, &err, &scr, NULL, NULL);
			tried++;
			/* refused by the device (else the apply would stop at
			 * the vCPU record, EBADF without KVM) */
			if (r < 0 && err.code == r && strstr(err.msg, id[bad]))
				refused++;
			else
				CHECK(0, "%s's record cut at %zu: %d '%s'", id[bad], cut, r, err.msg);
			CHECK(scr == 0x5a, "%s's record cut at %zu: serial0 not restored first (0x%x)",
			      id[bad], cut, scr);
			CHECK(tf_nfds() == nfds, "%s's record cut at %zu: %d fds open before, %d after",
			      id[bad], cut, nfds, tf_nfds());
		}
	}
	printf("second record cut short: %d files, %d refused by the device\n", tried, refused);
	CHECK(tried > 0 && refused == tried, "%d of %d refused", refused, tried);
	for (int i = 0; i < ndevs; i++) {
		ut_buf_release(&rec[i]);
		free((void *)id[i]);
		free((void *)type[i]);
	}
	ut_buf_release(&recs);
}

int main(void)
{
	struct ut_buf recs = UT_BUF_INIT, serial = UT_BUF_INIT, devs = UT_BUF_INIT;
	struct ut_buf fresh[VMM_MAX_DEVICES];
	static struct vmm_machine m0;
	struct ut_err err;
	uint8_t scr;
	int ndevs = 0, serial_i = -1;

	(void)sf_fuzz_one;   /* the fuzz bodies: only their machine is used here */
	(void)ds_fuzz_one;
	for (int i = 0; i < VMM_MAX_DEVICES; i++)
		fresh[i] = (struct ut_buf)UT_BUF_INIT;
	/* every device's record as built, from a first apply (refused: no
	 * device records), then serial0's with its scratch register 0x5a */
	put_head(&recs);
	sf_put_vcpu(&recs, 0);
	CHECK(apply(&recs, &err, &scr, fresh, &ndevs) < 0, "a file without device records applied");
	CHECK_STR(err.msg, "0 device records for");
	CHECK(ndevs > 1, "%d devices", ndevs);
	{
		struct vmm_machine_cfg cfg = { .mem = TA_RAM, .cpus = 1, .no_pit = true };
		uint8_t *ram = mmap(NULL, TA_RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (ram == MAP_FAILED || sf_machine_build(&m0, &cfg, ram, -1))
			tv_die("machine");
		for (int i = 0; i < m0.vm.ndevs; i++)
			if (!strcmp(m0.vm.devs[i]->id, "serial0"))
				serial_i = i;
		if (serial_i < 0)
			tv_die("no serial0");
		tv_io_wr(&m0.vm.pio, COM1_SCR, 1, 0x5a);
		if (m0.vm.devs[serial_i]->ops->save(m0.vm.devs[serial_i], &serial))
			tv_die("save");
		sf_machine_destroy(&m0, ram, TA_RAM, -1);
	}

	/* the complete file (the other devices' ids and types from a
	 * machine built the same way): applied, scratch 0x5a */
	{
		static struct vmm_machine m1;
		struct vmm_machine_cfg cfg = { .mem = TA_RAM, .cpus = 1, .no_pit = true };
		uint8_t *ram = mmap(NULL, TA_RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (ram == MAP_FAILED || sf_machine_build(&m1, &cfg, ram, -1))
			tv_die("machine");
		put_head(&recs);
		put_dev(&recs, "serial0", "serial", &serial);
		for (int i = 0; i < m1.vm.ndevs; i++)
			if (i != serial_i)
				put_dev(&recs, m1.vm.devs[i]->id, m1.vm.devs[i]->ops->type, &fresh[i]);
		sf_machine_destroy(&m1, ram, TA_RAM, -1);
	}
	/* without a vCPU record: refused before anything is applied */
	EXPECT_REFUSED(&recs, "no record for vCPU 0");
	/* with it (last): the devices applied, then the vCPU's first ioctl fails */
	recs_from(&devs, &recs);
	sf_put_vcpu(&recs, 0);
	CHECK(apply(&recs, &err, &scr, NULL, NULL) == -EBADF, "the complete file: %s", err.msg);
	CHECK_STR(err.msg, "vCPU 0: unable to set its registers");
	CHECK_EQ(scr, 0x5a);

	/* vCPU 0's record twice, after serial0's: refused, serial0 untouched */
	recs_from(&recs, &devs);
	sf_put_vcpu(&recs, 0);
	sf_put_vcpu(&recs, 0);
	EXPECT_REFUSED(&recs, "two records for vCPU 0");

	/* a record for vCPU 1 in a one-vCPU machine, or one too short to say */
	recs_from(&recs, &devs);
	sf_put_vcpu(&recs, 0);
	sf_put_vcpu(&recs, 1);
	EXPECT_REFUSED(&recs, "record for vCPU 1, which this machine (1 vCPUs) does not have");
	recs_from(&recs, &devs);
	sf_put_vcpu(&recs, 0);
	put_sec(&recs, 2, "abc", 3);
	EXPECT_REFUSED(&recs, "vCPU record of 3 bytes");

	/* a two-vCPU machine with a record for vCPU 0 only, or for both */
	put_head_cpus(&recs, 2);   /* as long as put_head's: then devs' device records */
	if (ut_buf_add(&recs, devs.data + recs.len, devs.len - recs.len))
		tv_die("ut_buf_add");
	sf_put_vcpu(&recs, 0);
	EXPECT_REFUSED(&recs, "no record for vCPU 1");
	sf_put_vcpu(&recs, 1);
	CHECK(apply(&recs, &err, &scr, NULL, NULL) == -EBADF, "both vCPUs: %s", err.msg);
	CHECK_STR(err.msg, "vCPU 0: unable to set its registers");
	CHECK_EQ(scr, 0x5a);

	/* serial0's record first, then no other: refused by the count,
	 * serial0 untouched */
	put_head(&recs);
	put_dev(&recs, "serial0", "serial", &serial);
	sf_put_vcpu(&recs, 0);
	EXPECT_REFUSED(&recs, "1 device records for");

	/* then a record for a device this machine lacks */
	put_dev(&recs, "virtio-blk7", "virtio-blk", &serial);
	EXPECT_REFUSED(&recs, "saved device 'virtio-blk7' (virtio-blk) has no match in this machine");

	/* then an unknown section, or serial0's record again */
	put_head(&recs);
	put_dev(&recs, "serial0", "serial", &serial);
	put_sec(&recs, 99, "x", 1);
	EXPECT_REFUSED(&recs, "unknown section type 99");
	put_head(&recs);
	put_dev(&recs, "serial0", "serial", &serial);
	put_dev(&recs, "serial0", "serial", &serial);
	EXPECT_REFUSED(&recs, "two records for device 'serial0'");

	/* a clock record of the wrong size after it */
	put_head(&recs);
	put_dev(&recs, "serial0", "serial", &serial);
	put_sec(&recs, 5, "clock", 5);
	EXPECT_REFUSED(&recs, "clock record size");

	test_second_record_refused();

	for (int i = 0; i < VMM_MAX_DEVICES; i++)
		ut_buf_release(&fresh[i]);
	ut_buf_release(&recs);
	ut_buf_release(&devs);
	ut_buf_release(&serial);
	ds_disk_remove();
	sf_disks_remove();
	return tv_finish("test-state-apply");
}
