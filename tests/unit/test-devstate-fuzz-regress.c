/* tests/unit/test-devstate-fuzz-regress.c — replay every fuzz-devstate and
 * fuzz-statefile input saved in tests/fuzz/regress/ (devstate-*, statefile-*:
 * crashes found by `make fuzz`, and seeds: records of devices in non-default
 * states, state files of a few machines) through the targets' bodies
 * (tests/fuzz/devstate-body.h, statefile-body.h) without libFuzzer. Each
 * input builds a VM without KVM, restores device records (or a state file's
 * records) into it and uses the devices; passing means no crash, no hang, no abort (a restore that fails without
 * a message naming its device, a restored state that does not save as it
 * was read), and under `make asan` no sanitizer report and no leak. */
#include "tests/fuzz/statefile-body.h"

#include <dirent.h>

int main(void)
{
	const char *src = getenv("COWVM_SRC");
	char dir[4096], path[8192];
	struct dirent *de;
	DIR *d;
	int n = 0;

	ds_verbose = getenv("COWVM_FUZZ_VERBOSE") != NULL;
	snprintf(dir, sizeof(dir), "%s/tests/fuzz/regress", src ? src : ".");
	d = opendir(dir);
	if (!d) {
		printf("no regression corpus at %s\n", dir);
		return 77;
	}
	while ((de = readdir(d))) {
		FILE *f;
		uint8_t *data;
		long len;

		bool sf = !strncmp(de->d_name, "statefile-", 10);

		if (strncmp(de->d_name, "devstate-", 9) && !sf)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		f = fopen(path, "rb");
		if (!f) {
			fprintf(stderr, "%s: %s\n", path, strerror(errno));
			closedir(d);
			return 1;
		}
		fseek(f, 0, SEEK_END);
		len = ftell(f);
		fseek(f, 0, SEEK_SET);
		data = malloc(len > 0 ? (size_t)len : 1);
		if (!data || len < 0 || fread(data, 1, (size_t)len, f) != (size_t)len) {
			fprintf(stderr, "%s: unreadable\n", path);
			free(data);
			fclose(f);
			closedir(d);
			return 1;
		}
		fclose(f);
		printf("%s\n", de->d_name);
		fflush(stdout);
		if (sf)
			sf_fuzz_one(data, (size_t)len);
		else
			ds_fuzz_one(data, (size_t)len);
		free(data);
		n++;
	}
	closedir(d);
	ds_disk_remove();
	sf_disks_remove();
	if (!n) {
		printf("no devstate-* or statefile-* inputs in %s\n", dir);
		return 1;
	}
	printf("replayed %d inputs\n", n);
	return 0;
}
