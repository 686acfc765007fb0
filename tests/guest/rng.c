/* tests/guest/rng.c — read 64 bytes from virtio-rng (device 0x1044). */
#include "virtio.h"

#define RNG_BYTES   64
#define RNG_TRIES   64
#define RNG_WAIT_NS (10ULL * 1000000000ULL)

static uint8_t rng_buf[RNG_BYTES] __attribute__((aligned(64)));

void test_rng(void)
{
	static struct virtio_dev vd;
	static struct virtq vq;
	uint64_t index = 0;
	cmdline_u64("rng", &index);
	if (!virtio_open(&vd, VIRTIO_DEV_RNG, (uint32_t)index, 0)) {
		if (vd.pci.vendor == 0)
			die(ST_NO_DEVICE, "rng: no virtio-rng device (PCI 1af4:1044) found");
		die(ST_DEVICE_ERROR, "rng: virtio-rng could not be set up");
	}
	if (!virtio_queue(&vd, &vq, 0, 16, 1))
		die(ST_DEVICE_ERROR, "rng: virtio-rng queue setup failed");
	virtio_ready(&vd);

	uint32_t got = 0;
	for (uint32_t t = 0; t < RNG_TRIES && got < RNG_BYTES; t++) {
		struct vbuf b = { (uintptr_t)(rng_buf + got), RNG_BYTES - got, true };
		if (!virtq_add(&vq, &b, 1, 0))
			die(ST_DEVICE_ERROR, "rng: cannot queue a buffer");
		virtq_kick(&vq);
		uint64_t t0 = time_ns(), tok;
		uint32_t len;
		while (!virtq_get(&vq, &tok, &len)) {
			cpu_relax();
			if (time_ns() - t0 > RNG_WAIT_NS)
				die(ST_RNG_BAD, "rng: no data after 10 s (%u bytes so far)", got);
		}
		if (len > RNG_BYTES - got)
			die(ST_DEVICE_ERROR, "rng: device reports %u bytes for a %u-byte buffer",
			    len, RNG_BYTES - got);
		got += len;
	}
	if (got == 0)
		die(ST_RNG_BAD, "rng: no data");
	uint8_t any = 0;
	char hex[2 * RNG_BYTES + 1];
	for (uint32_t i = 0; i < got; i++) {
		any |= rng_buf[i];
		hex[2 * i] = "0123456789abcdef"[rng_buf[i] >> 4];
		hex[2 * i + 1] = "0123456789abcdef"[rng_buf[i] & 15];
	}
	hex[2 * got] = 0;
	if (!any)
		die(ST_RNG_BAD, "rng: %u bytes, all zero", got);
	if (got < RNG_BYTES)
		die(ST_RNG_BAD, "rng: only %u bytes: %s", got, hex);
	say("rng ok bytes=%u %s", got, hex);
	guest_exit(ST_OK);
}
