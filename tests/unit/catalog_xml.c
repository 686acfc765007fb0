/* tests/unit/catalog_xml.c — libvirt domain XML import/export on the corpus
 * in tests/xml/ (see tests/xml/README).
 *
 * ok/: each document imports with nothing ignored; define -> dumpxml ->
 *   define (into a second catalog) gives identical catalog rows (every
 *   column of vms, disks, images with their parent, nics, except row ids
 *   and timestamps); dumpxml of the second catalog is byte-identical to the
 *   first (a fixpoint); redefining the dump in place changes no row; and
 *   selected values are what the document says (units, uuid forms, chain).
 * unsupported/: refused with -ENOTSUP naming exactly the "expect:" items;
 *   with CAT_XML_IGNORE_UNSUPPORTED accepted, the same items listed.
 * invalid/: refused (with or without the flag) with each "expect:" message.
 */
#include <dirent.h>
#include <errno.h>

#include "catalog/db.h"
#include "tests/unit/cat_test.h"

static const char *src_dir(void)
{
	const char *s = getenv("COWVM_SRC");

	return s && *s ? s : ".";
}

static char *slurp(const char *path, size_t *len)
{
	struct ut_buf b = UT_BUF_INIT;
	char chunk[4096];
	size_t n;
	FILE *f = fopen(path, "r");

	if (!f) {
		perror(path);
		exit(2);
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		ut_buf_add(&b, chunk, n);
	fclose(f);
	ut_buf_add(&b, "", 1);
	*len = b.len - 1;
	return (char *)b.data;
}

/* The "expect: TEXT" lines of a document. */
static size_t expects(const char *doc, char out[][256], size_t max)
{
	size_t n = 0;
	const char *p = doc;

	while (n < max && (p = strstr(p, "<!-- expect: "))) {
		const char *e = strstr(p, " -->");

		p += 13;
		if (!e)
			break;
		snprintf(out[n++], 256, "%.*s", (int)(e - p), p);
		p = e;
	}
	return n;
}

static int dump_cb(void *arg, int n, char **vals, char **cols)
{
	struct ut_buf *b = arg;

	(void)cols;
	for (int i = 0; i < n; i++)
		ut_buf_addf(b, "%s%s", i ? "|" : "", vals[i] ? vals[i] : "NULL");
	ut_buf_addf(b, "\n");
	return 0;
}

/* Every catalog row that a definition makes, without ids and timestamps. */
static char *dump_rows(struct cat_db *db)
{
	static const char *const q[] = {
		"SELECT name, uuid, genid, vcpus, memory, cur_memory, kernel, initrd, cmdline,"
		" on_poweroff, on_reboot, serial, state, pid, pid_start, ctl_socket"
		" FROM vms ORDER BY name",
		"SELECT v.name, d.idx, d.target, d.readonly, d.cache, d.aio, d.werror, d.rerror, i.path FROM disks d"
		" JOIN vms v ON v.id = d.vm_id JOIN images i ON i.id = d.image_id ORDER BY 1, 2",
		"SELECT i.path, i.format, i.virtual_size, p.path FROM images i"
		" LEFT JOIN images p ON p.id = i.parent_id ORDER BY 1",
		"SELECT v.name, n.idx, n.mac, n.type, n.tap, n.bridge FROM nics n"
		" JOIN vms v ON v.id = n.vm_id ORDER BY 1, 2",
	};
	struct ut_buf b = UT_BUF_INIT;

	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		ut_buf_addf(&b, "--\n");
		if (sqlite3_exec(db->h, q[i], dump_cb, &b, NULL) != SQLITE_OK)
			ut_buf_addf(&b, "ERROR %s\n", sqlite3_errmsg(db->h));
	}
	return (char *)b.data;
}

static char *export(struct cat_db *db, const char *name)
{
	struct ut_buf out = UT_BUF_INIT;
	struct cat_vm vm = { 0 };
	struct ut_err err;

	ut_err_clear(&err);
	CHECK_OK(cat_vm_get(db, name, &vm, &err), &err);
	CHECK_OK(cat_xml_write(&vm, &out, &err), &err);
	cat_vm_clear(&vm);
	return out.data ? (char *)out.data : strdup("");
}

static int import(struct cat_db *db, const char *doc, size_t len, const char *src,
		  unsigned flags, char *name, size_t name_len)
{
	struct cat_vm vm = { 0 };
	struct ut_err err;
	char **ign = NULL;
	size_t n_ign = 0;
	int ret;

	ut_err_clear(&err);
	ret = cat_xml_read(doc, len, src, 0, &vm, &ign, &n_ign, &err);
	if (ret == 0) {
		CHECK(n_ign == 0);
		ret = cat_vm_define(db, &vm, flags, "define", &err);
		snprintf(name, name_len, "%s", vm.name);
	}
	if (ret < 0)
		fprintf(stderr, "%s: %s\n", src, err.msg);
	cat_strv_free(ign, n_ign);
	cat_vm_clear(&vm);
	return ret;
}

static void check_values(struct cat_db *db)
{
	struct cat_vm vm = { 0 };
	struct ut_err err;

	ut_err_clear(&err);
	CHECK_OK(cat_vm_get(db, "full-1.web_a+b", &vm, &err), &err);
	CHECK(vm.memory == 2ULL << 30 && vm.cur_memory == 1536ULL << 20 && vm.vcpus == 4);
	CHECK(!strcmp(vm.genid, "43dc0cf8-809b-4adb-9bea-a9abb5f3d90d"));
	CHECK(!strcmp(vm.on_poweroff, "restart") && !strcmp(vm.on_reboot, "destroy"));
	CHECK(vm.initrd && !strcmp(vm.cmdline, "console=ttyS0 root=/dev/vda rw quiet"));
	CHECK(vm.n_disks == 3 && vm.n_nics == 2 && vm.serial == 1);
	if (vm.n_disks == 3) {
		CHECK(vm.disks[0].n_chain == 3);
		CHECK(vm.disks[0].n_chain == 3 && !strcmp(vm.disks[0].chain[1].format, "qcow2") &&
		      !strcmp(vm.disks[0].chain[2].format, "raw") &&
		      !strcmp(vm.disks[0].chain[2].path, "/var/lib/cowvm/images/debian-base.raw"));
		CHECK(!strcmp(vm.disks[1].target, "vdb") && vm.disks[1].n_chain == 1);
		CHECK(vm.disks[2].readonly && !vm.disks[0].readonly);
		CHECK(vm.disks[1].nocache && !vm.disks[0].nocache && !vm.disks[2].nocache);
		CHECK(vm.disks[1].threads && !vm.disks[0].threads && !vm.disks[2].threads);   /* io=native: io_uring */
		/* error_policy / rerror_policy; none given: enospc / report */
		CHECK(vm.disks[0].werror == CAT_WERROR_ENOSPC && !vm.disks[0].rerror_stop);
		CHECK(vm.disks[1].werror == CAT_WERROR_STOP && vm.disks[1].rerror_stop);
		CHECK(vm.disks[2].werror == CAT_WERROR_REPORT && !vm.disks[2].rerror_stop);
	}
	if (vm.n_nics == 2) {
		CHECK(!strcmp(vm.nics[1].mac, "52:54:00:ab:cd:ef"));
		CHECK(!strcmp(vm.nics[1].type, "bridge") && !strcmp(vm.nics[1].bridge, "br0"));
		CHECK(!strcmp(vm.nics[0].tap, "tap-full0") && !vm.nics[0].bridge);
	}
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_get(db, "units-decimal", &vm, &err), &err);
	CHECK(vm.memory == 2000000000ULL && vm.cur_memory == 976563ULL * 1024);
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_get(db, "units-bytes", &vm, &err), &err);
	CHECK(vm.memory == 512ULL << 20 && vm.cur_memory == 256ULL << 20);
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_get(db, "units-large", &vm, &err), &err);
	CHECK(vm.memory == 1ULL << 40 && vm.cur_memory == 64ULL << 30 && vm.vcpus == 255);
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_get(db, "uuid-forms", &vm, &err), &err);
	CHECK(!strcmp(vm.uuid, "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9"));
	CHECK(!strcmp(vm.genid, "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"));
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_get(db, "genid-empty", &vm, &err), &err);
	CHECK(strlen(vm.genid) == 36 && strlen(vm.uuid) == 36);
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_get(db, "minimal", &vm, &err), &err);
	CHECK(vm.memory == 128ULL << 20 && vm.cur_memory == 0 && vm.genid[0] == '\0');
	CHECK(vm.serial == 0 && vm.vcpus == 1 && !vm.initrd && !vm.cmdline);
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_get(db, "escaping", &vm, &err), &err);
	CHECK(!strcmp(vm.kernel, "/srv/vm kernels/vmlinuz & co"));
	CHECK(!strcmp(vm.cmdline, "console=ttyS0 init=/bin/sh -c \"echo <tick> 'x' && exit\""));
	CHECK(vm.n_disks == 1 &&
	      !strcmp(vm.disks[0].chain[0].path, "/srv/images/a \"quoted\" <disk>.raw"));
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_get(db, "serial-only", &vm, &err), &err);
	CHECK(vm.serial == 1);
	cat_vm_clear(&vm);
	CHECK_OK(cat_vm_get(db, "console-only", &vm, &err), &err);
	CHECK(vm.serial == 1 && vm.n_nics == 1 && !strcmp(vm.nics[0].type, "ethernet"));
	cat_vm_clear(&vm);
}

static void round_trips(void)
{
	char dir[512], path[1024], name[128];
	char *home_a = t_tmpdir(), *home_b = t_tmpdir(), *rows_a, *rows_b, *rows_a2;
	struct cat_db *a = NULL, *b = NULL;
	struct ut_err err;
	struct dirent *de;
	int count = 0;
	DIR *d;

	ut_err_clear(&err);
	CHECK_OK(cat_open(&a, home_a, &err), &err);
	CHECK_OK(cat_open(&b, home_b, &err), &err);
	if (!a || !b)
		goto out;
	snprintf(dir, sizeof(dir), "%s/tests/xml/ok", src_dir());
	d = opendir(dir);
	CHECK(d != NULL);
	while (d && (de = readdir(d))) {
		char *doc, *x1, *x2;
		size_t len;

		if (!strstr(de->d_name, ".xml"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		printf("round trip %s\n", de->d_name);
		doc = slurp(path, &len);
		CHECK(import(a, doc, len, path, 0, name, sizeof(name)) == 0);
		x1 = export(a, name);
		CHECK(import(b, x1, strlen(x1), "dumpxml", 0, name, sizeof(name)) == 0);
		x2 = export(b, name);
		CHECK(!strcmp(x1, x2));
		if (strcmp(x1, x2))
			fprintf(stderr, "first:\n%s\nsecond:\n%s\n", x1, x2);
		free(doc);
		free(x1);
		free(x2);
		count++;
	}
	if (d)
		closedir(d);
	CHECK(count >= 8);
	rows_a = dump_rows(a);
	rows_b = dump_rows(b);
	CHECK(!strcmp(rows_a, rows_b));
	if (strcmp(rows_a, rows_b))
		fprintf(stderr, "catalog A:\n%s\ncatalog B:\n%s\n", rows_a, rows_b);
	/* redefining each dump in place (libvirt's define) changes no row */
	{
		struct cat_vm_summary *rows = NULL;
		size_t n = 0;

		CHECK_OK(cat_vm_list(a, &rows, &n, &err), &err);
		for (size_t i = 0; i < n; i++) {
			char *x = export(a, rows[i].name);

			CHECK(import(a, x, strlen(x), "dumpxml", CAT_DEFINE_REPLACE, name,
				     sizeof(name)) == 0);
			free(x);
		}
		cat_vm_summaries_free(rows, n);
	}
	rows_a2 = dump_rows(a);
	CHECK(!strcmp(rows_a, rows_a2));
	check_values(a);
	free(rows_a);
	free(rows_a2);
	free(rows_b);
out:
	cat_close(a);
	cat_close(b);
	t_rmtree(home_a);
	t_rmtree(home_b);
	free(home_a);
	free(home_b);
}

static void refusals(const char *sub, int unsupported)
{
	char dir[512], path[1024], want[32][256];
	struct dirent *de;
	int count = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/tests/xml/%s", src_dir(), sub);
	d = opendir(dir);
	CHECK(d != NULL);
	while (d && (de = readdir(d))) {
		struct cat_vm vm = { 0 };
		struct ut_err err;
		char **ign = NULL, *doc;
		size_t n_ign = 0, n_want, len;
		int r;

		if (!strstr(de->d_name, ".xml"))
			continue;
		ut_err_clear(&err);
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		printf("%s %s\n", sub, de->d_name);
		doc = slurp(path, &len);
		n_want = expects(doc, want, 32);
		CHECK(n_want > 0);
		r = cat_xml_read(doc, len, de->d_name, 0, &vm, &ign, &n_ign, &err);
		CHECK(r == (unsupported ? -ENOTSUP : r) && r < 0);
		for (size_t i = 0; i < n_want; i++) {
			if (!strstr(err.msg, want[i])) {
				fprintf(stderr, "%s: message lacks \"%s\": %s\n", de->d_name, want[i],
					err.msg);
				t_failures++;
			}
		}
		if (unsupported) {
			CHECK(n_ign == n_want);   /* exactly the expected items */
			cat_strv_free(ign, n_ign);
			ign = NULL;
			n_ign = 0;
			r = cat_xml_read(doc, len, de->d_name, CAT_XML_IGNORE_UNSUPPORTED, &vm, &ign,
					 &n_ign, &err);
			CHECK(r == 0);
			CHECK(n_ign == n_want);
			for (size_t i = 0; i < n_want; i++) {
				int found = 0;

				for (size_t j = 0; j < n_ign; j++)
					found |= !strcmp(ign[j], want[i]);
				if (!found) {
					fprintf(stderr, "%s: \"%s\" not listed as ignored\n",
						de->d_name, want[i]);
					t_failures++;
				}
			}
		} else {
			CHECK(cat_xml_read(doc, len, de->d_name, CAT_XML_IGNORE_UNSUPPORTED, &vm,
					   NULL, NULL, NULL) < 0);
		}
		cat_strv_free(ign, n_ign);
		cat_vm_clear(&vm);
		free(doc);
		count++;
	}
	if (d)
		closedir(d);
	CHECK(count >= 5);
}

int main(void)
{
	round_trips();
	refusals("unsupported", 1);
	refusals("invalid", 0);
	return t_done("catalog_xml");
}
