/* core/virtio/rng.c — virtio-rng (virtio 1.x, 5.4): fills each device-writable
 * buffer the driver offers with bytes from getrandom(). No options.
 */
#include "core/virtio/virtio.h"
#include "core/vm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#define RNG_QUEUE_SIZE 64
#define RNG_STATE_VERSION 1

struct rng {
	struct vmm_virtio_dev vd;
	struct vmm_vq_elem elem;
};

static void rng_notify(struct vmm_virtio_dev *vd, int q)
{
	struct rng *g = (struct rng *)vd;
	struct vmm_vq *vq = &vd->vqs[q];
	int got;

	do {
		vmm_vq_notify_enable(vq, false);
		while ((got = vmm_vq_pop(vq, &vd->vm->mem, &g->elem)) > 0) {
			uint32_t len = 0;

			for (unsigned i = g->elem.nr_out; i < g->elem.nr_out + g->elem.nr_in; i++) {
				size_t want = g->elem.iov[i].iov_len, done = 0;

				while (done < want) {
					ssize_t n = getrandom((uint8_t *)g->elem.iov[i].iov_base + done,
							      want - done, 0);

					if (n <= 0) {
						if (n < 0 && errno == EINTR)
							continue;
						break;
					}
					done += (size_t)n;
				}
				len += (uint32_t)done;
				if (done < want)
					break;
			}
			vmm_vq_push(vq, g->elem.head, len);
		}
		if (got < 0)
			vmm_virtio_fail(vd, q);
		vmm_virtio_interrupt(vd, q);
	} while (got >= 0 && vmm_vq_notify_enable(vq, true));
}

static int rng_save(struct vmm_virtio_dev *vd, struct ut_buf *out)
{
	(void)vd;
	return ut_buf_add_le32(out, RNG_STATE_VERSION);
}

/* A buffer is filled and used as soon as it is taken (rng_notify): a
 * saved live queue has none in flight (last_avail == used_idx); one in
 * flight would be lost, its driver waiting for it forever. A queue saved
 * broken may hold the chain that broke it. */
static int rng_restore(struct vmm_virtio_dev *vd, struct ut_rd *rd, struct ut_err *err)
{
	struct vmm_vq *vq = &vd->vqs[0];
	uint32_t ver = 0;
	char why[160];

	if (ut_rd_le32(rd, &ver) || ver != RNG_STATE_VERSION)
		return ut_errf(err, -EPROTO, "device '%s': virtio-rng state version %u not supported",
			       vd->dev.id, ver);
	if (vq->enabled && vmm_vq_check_held(vq, NULL, 0, !vq->broken, why, sizeof(why)))
		return ut_errf(err, -EBADMSG, "device '%s': %s", vd->dev.id, why);
	return 0;
}

static const struct vmm_virtio_ops rng_vops = {
	.device_id = VIRTIO_ID_RNG,
	.class_code = 0xFF0000,
	.nvqs = 1,
	.queue_size = RNG_QUEUE_SIZE,
	.config_len = 0,
	.notify = rng_notify,
	.save = rng_save,
	.restore = rng_restore,
};

static int rng_init(struct vmm_vm *vm, const char *opts, struct ut_err *err);

const struct vmm_device_ops vmm_virtio_rng_ops = {
	.type = "virtio-rng", .init = rng_init, .reset = vmm_virtio_dev_reset,
	.save = vmm_virtio_dev_save, .restore = vmm_virtio_dev_restore,
	.exit = vmm_virtio_dev_exit,
};

static int rng_init(struct vmm_vm *vm, const char *opts, struct ut_err *err)
{
	static const char *const known[] = { NULL };
	struct rng *g;
	int r, count = 0;

	r = vmm_opt_check("virtio-rng", opts, known, err);
	if (r)
		return r;
	g = calloc(1, sizeof(*g));
	if (!g)
		return ut_errf(err, -ENOMEM, "out of memory for virtio-rng");
	g->vd.dev.ops = &vmm_virtio_rng_ops;
	g->vd.dev.priv = g;
	/* numbered within this VM: the same machine built again (a restore)
	 * names its devices as the saved one did, in any process */
	for (int i = 0; i < vm->ndevs; i++)
		count += vm->devs[i]->ops == &vmm_virtio_rng_ops;
	snprintf(g->vd.dev.id, sizeof(g->vd.dev.id), "virtio-rng%d", count);
	r = vmm_virtio_init(vm, &g->vd, &rng_vops, err);
	if (r)
		free(g);
	return r;
}
