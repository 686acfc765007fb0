/* tests/unit/test-cow-fuzz-regress.c — replay every input saved in
 * tests/fuzz/regress/ (crashes found by `make fuzz`, plus seeds) through both
 * fuzz bodies (read; write, repair, write); passing means no crash, no hang,
 * no abort (writes that damage a repaired image), no sanitizer report (under
 * `make asan`). */
#include "tests/fuzz/fuzz-body.h"

#include <dirent.h>
#include <string.h>

int main(void)
{
	const char *src = getenv("COWVM_SRC");
	char dir[4096], path[8192];
	struct dirent *de;
	DIR *d;
	int n = 0;

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
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		f = fopen(path, "rb");
		if (!f)
			continue;
		fseek(f, 0, SEEK_END);
		len = ftell(f);
		fseek(f, 0, SEEK_SET);
		data = malloc(len > 0 ? (size_t)len : 1);
		if (data && fread(data, 1, (size_t)len, f) == (size_t)len) {
			cow_fuzz_one(data, (size_t)len);
			cow_fuzz_write_one(data, (size_t)len);
		}
		free(data);
		fclose(f);
		n++;
	}
	closedir(d);
	printf("replayed %d inputs\n", n);
	return 0;
}
