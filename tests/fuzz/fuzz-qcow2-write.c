/* tests/fuzz/fuzz-qcow2-write.c — libFuzzer target: open arbitrary bytes as
 * a writable qcow2 image, write, repair, write again (cow_fuzz_write_one in
 * fuzz-body.h). Built and run by `make fuzz` (not by make check). */
#include "tests/fuzz/fuzz-body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return cow_fuzz_write_one(data, size);
}
