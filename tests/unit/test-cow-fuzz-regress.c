/* tests/unit/test-cow-fuzz-regress.c — replay every input saved in
 * tests/fuzz/regress/ (crashes found by `make fuzz`, plus seeds; every file,
 * the device-state ones too: any bytes are an image to open) through both
 * fuzz bodies (read; write, repair, write); passing means no crash, no hang,
 * no abort (writes that damage a repaired image), no sanitizer report (under
 * `make asan`). An input that cannot be read is left out. */
#include "tests/fuzz/fuzz-body.h"
#include "tests/unit/fuzz-replay.h"

static void replay_one(const char *name, const uint8_t *data, size_t len)
{
	(void)name;
	cow_fuzz_one(data, len);
	cow_fuzz_write_one(data, len);
}

int main(void)
{
	int n = fz_replay(NULL, false, replay_one);

	if (n == FZ_NO_CORPUS)
		return 77;
	printf("replayed %d inputs\n", n);
	return 0;
}
