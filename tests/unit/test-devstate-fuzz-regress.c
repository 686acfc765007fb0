/* tests/unit/test-devstate-fuzz-regress.c — replay every fuzz-devstate and
 * fuzz-statefile input saved in tests/fuzz/regress/ (devstate-*, statefile-*:
 * crashes found by `make fuzz`, and seeds: records of devices in non-default
 * states, state files of a few machines) through the targets' bodies
 * (tests/fuzz/devstate-body.h, statefile-body.h) without libFuzzer. Each
 * input builds a VM without KVM, restores device records (or a state file's
 * records) into it and uses the devices; passing means no crash, no hang, no abort (a restore that fails without
 * a message naming its device, a restored state that does not save as it
 * was read), and under `make asan` no sanitizer report and no leak. An
 * input that cannot be read fails the test, and so does a corpus without
 * any of these inputs. */
#include "tests/fuzz/statefile-body.h"
#include "tests/unit/fuzz-replay.h"

static void replay_one(const char *name, const uint8_t *data, size_t len)
{
	if (!strncmp(name, "statefile-", 10))
		sf_fuzz_one(data, len);
	else
		ds_fuzz_one(data, len);
}

int main(void)
{
	static const char *const prefixes[] = { "devstate-", "statefile-", NULL };
	int n;

	ds_verbose = getenv("COWVM_FUZZ_VERBOSE") != NULL;
	n = fz_replay(prefixes, true, replay_one);
	ds_disk_remove();
	sf_disks_remove();
	if (n == FZ_NO_CORPUS)
		return 77;
	if (n < 0)
		return 1;
	if (!n) {
		printf("no devstate-* or statefile-* inputs in the corpus\n");
		return 1;
	}
	printf("replayed %d inputs\n", n);
	return 0;
}
