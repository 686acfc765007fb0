/* tests/fuzz/fuzz-qcow2.c — libFuzzer target: open and read arbitrary bytes
 * as a qcow2 image. Built and run by `make fuzz` (not by make check). */
#include "tests/fuzz/fuzz-body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return cow_fuzz_one(data, size);
}
