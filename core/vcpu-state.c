/* core/vcpu-state.c — one vCPU's architectural state as a versioned record.
 *
 * Record: le32 version, then tagged blobs (le32 tag, le32 length, bytes) in
 * restore order: regs, XSAVE (or FPU), XCRs, sregs, MSRs, MP state, LAPIC,
 * vCPU events, debug registers. Blobs are the KVM structures of an x86-64
 * host (little-endian); their lengths are checked on restore. MSRs are the
 * ones KVM lists (KVM_GET_MSR_INDEX_LIST: including TSC and kvmclock) that
 * this vCPU can read.
 *
 * The vCPU must be out of KVM_RUN, with any pending I/O completed (see
 * vcpu_check_pause in core/vcpu.c).
 */
#include "core/vm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define VCPU_STATE_VERSION 1
#define MSR_LIST_MAX 1024

enum {
	TAG_REGS = 1, TAG_XSAVE, TAG_FPU, TAG_XCRS, TAG_SREGS, TAG_MSRS, TAG_MP_STATE,
	TAG_LAPIC, TAG_EVENTS, TAG_DEBUGREGS,
};

static int add_blob(struct ut_buf *out, uint32_t tag, const void *p, uint32_t len)
{
	int r = ut_buf_add_le32(out, tag);

	r = r ? r : ut_buf_add_le32(out, len);
	return r ? r : ut_buf_add(out, p, len);
}

/* The MSRs this VM's vCPUs can read: KVM's list, minus those KVM_GET_MSRS
 * refuses. Built once per VM. */
static int msr_list(struct vmm_vcpu *v, struct kvm_msrs **out, struct ut_err *err)
{
	struct kvm_msr_list *l;
	struct kvm_msrs *m;
	uint32_t n;
	int r;

	l = calloc(1, sizeof(*l) + MSR_LIST_MAX * sizeof(uint32_t));
	if (!l)
		return ut_errf(err, -ENOMEM, "out of memory for the MSR list");
	l->nmsrs = MSR_LIST_MAX;
	if (ioctl(v->vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
		r = ut_errf_sys(err, -errno, "KVM_GET_MSR_INDEX_LIST failed");
		free(l);
		return r;
	}
	m = calloc(1, sizeof(*m) + l->nmsrs * sizeof(struct kvm_msr_entry));
	if (!m) {
		free(l);
		return ut_errf(err, -ENOMEM, "out of memory for MSRs");
	}
	for (n = 0; n < l->nmsrs; n++)
		m->entries[n].index = l->indices[n];
	m->nmsrs = n;
	free(l);
	/* drop the entries KVM cannot read on this vCPU, one at a time */
	for (;;) {
		int got = ioctl(v->fd, KVM_GET_MSRS, m);

		if (got < 0) {
			r = ut_errf_sys(err, -errno, "KVM_GET_MSRS failed on vCPU %d", v->id);
			free(m);
			return r;
		}
		if ((uint32_t)got >= m->nmsrs)
			break;
		memmove(&m->entries[got], &m->entries[got + 1],
			(m->nmsrs - (uint32_t)got - 1) * sizeof(m->entries[0]));
		m->nmsrs--;
	}
	*out = m;
	return 0;
}

int vmm_vcpu_save(struct vmm_vcpu *v, struct ut_buf *out, struct ut_err *err)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xsave *xs = NULL;
	struct kvm_fpu fpu;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_mp_state mp;
	struct kvm_debugregs dr;
	struct kvm_msrs *msrs = NULL;
	int r;

#define GET(req, arg, what) \
	do { if (ioctl(v->fd, req, arg) < 0) { \
		r = ut_errf_sys(err, -errno, "vCPU %d: unable to read its %s", v->id, what); \
		goto out; } } while (0)

	r = ut_buf_add_le32(out, VCPU_STATE_VERSION);
	if (r)
		goto oom;
	GET(KVM_GET_REGS, &regs, "registers");
	if ((r = add_blob(out, TAG_REGS, &regs, sizeof(regs))))
		goto oom;
	if (ioctl(v->vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
		xs = calloc(1, sizeof(*xs));
		if (!xs)
			goto oom;
		GET(KVM_GET_XSAVE, xs, "XSAVE area");
		if ((r = add_blob(out, TAG_XSAVE, xs, sizeof(*xs))))
			goto oom;
	} else {
		GET(KVM_GET_FPU, &fpu, "FPU state");
		if ((r = add_blob(out, TAG_FPU, &fpu, sizeof(fpu))))
			goto oom;
	}
	if (ioctl(v->vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0) {
		GET(KVM_GET_XCRS, &xcrs, "XCRs");
		if ((r = add_blob(out, TAG_XCRS, &xcrs, sizeof(xcrs))))
			goto oom;
	}
	GET(KVM_GET_SREGS, &sregs, "special registers");
	if ((r = add_blob(out, TAG_SREGS, &sregs, sizeof(sregs))))
		goto oom;
	r = msr_list(v, &msrs, err);
	if (r)
		goto out;
	if ((r = add_blob(out, TAG_MSRS, msrs, (uint32_t)(sizeof(*msrs) +
			  msrs->nmsrs * sizeof(msrs->entries[0])))))
		goto oom;
	GET(KVM_GET_MP_STATE, &mp, "MP state");
	if ((r = add_blob(out, TAG_MP_STATE, &mp, sizeof(mp))))
		goto oom;
	GET(KVM_GET_LAPIC, &lapic, "local APIC");
	if ((r = add_blob(out, TAG_LAPIC, &lapic, sizeof(lapic))))
		goto oom;
	GET(KVM_GET_VCPU_EVENTS, &ev, "pending events");
	if ((r = add_blob(out, TAG_EVENTS, &ev, sizeof(ev))))
		goto oom;
	GET(KVM_GET_DEBUGREGS, &dr, "debug registers");
	if ((r = add_blob(out, TAG_DEBUGREGS, &dr, sizeof(dr))))
		goto oom;
	r = 0;
	goto out;
#undef GET
oom:
	r = ut_errf(err, -ENOMEM, "out of memory saving vCPU %d", v->id);
out:
	free(xs);
	free(msrs);
	return r;
}

/* The blobs, in restore order, which is tag order (t[tag - TAG_REGS]):
 * tag, KVM's set ioctl, exact size (0: variable, for MSRs), name. */
static const struct { uint32_t tag; unsigned long req; size_t size; const char *what; } t[] = {
	{ TAG_REGS, KVM_SET_REGS, sizeof(struct kvm_regs), "registers" },
	{ TAG_XSAVE, KVM_SET_XSAVE, sizeof(struct kvm_xsave), "XSAVE area" },
	{ TAG_FPU, KVM_SET_FPU, sizeof(struct kvm_fpu), "FPU state" },
	{ TAG_XCRS, KVM_SET_XCRS, sizeof(struct kvm_xcrs), "XCRs" },
	{ TAG_SREGS, KVM_SET_SREGS, sizeof(struct kvm_sregs), "special registers" },
	{ TAG_MSRS, KVM_SET_MSRS, 0, "MSRs" },
	{ TAG_MP_STATE, KVM_SET_MP_STATE, sizeof(struct kvm_mp_state), "MP state" },
	{ TAG_LAPIC, KVM_SET_LAPIC, sizeof(struct kvm_lapic_state), "local APIC" },
	{ TAG_EVENTS, KVM_SET_VCPU_EVENTS, sizeof(struct kvm_vcpu_events), "pending events" },
	{ TAG_DEBUGREGS, KVM_SET_DEBUGREGS, sizeof(struct kvm_debugregs), "debug registers" },
};

/* Before anything is set (a refused record leaves the vCPU as it was):
 * every tag known and there once, every blob a save writes present (XSAVE
 * or FPU: one of them; XCRs only where KVM has them). @rd is a copy. */
static int check_blobs(struct vmm_vcpu *v, struct ut_rd rd, struct ut_err *err)
{
	static const uint32_t need[] = { TAG_REGS, TAG_SREGS, TAG_MSRS, TAG_MP_STATE, TAG_LAPIC,
					 TAG_EVENTS, TAG_DEBUGREGS };
	uint32_t seen = 0, tag, n;

	while (rd.off < rd.len) {
		if (ut_rd_le32(&rd, &tag) || ut_rd_le32(&rd, &n) || n > rd.len - rd.off)
			return ut_errf(err, -EBADMSG, "vCPU %d: state record truncated", v->id);
		if (tag < TAG_REGS || tag > TAG_DEBUGREGS)
			return ut_errf(err, -EBADMSG, "vCPU %d: unknown state record tag %u", v->id, tag);
		if (seen & (1u << tag))
			return ut_errf(err, -EBADMSG, "vCPU %d: its %s are in the state record twice",
				       v->id, t[tag - TAG_REGS].what);
		seen |= 1u << tag;
		rd.off += n;
	}
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
		if (!(seen & (1u << need[i])))
			return ut_errf(err, -EBADMSG, "vCPU %d: the state record has no %s", v->id,
				       t[need[i] - TAG_REGS].what);
	if (!(seen & (1u << TAG_XSAVE)) == !(seen & (1u << TAG_FPU)))
		return ut_errf(err, -EBADMSG, "vCPU %d: the state record needs one of its XSAVE area and FPU state",
			       v->id);
	return 0;
}

/* Set one blob (its size checked against t[]). */
static int put_blob(struct vmm_vcpu *v, uint32_t tag, const uint8_t *p, uint32_t len,
		    struct ut_err *err)
{
	void *copy;
	int r = 0, got;

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		if (t[i].tag != tag)
			continue;
		if (t[i].size ? len != t[i].size : len < sizeof(struct kvm_msrs))
			return ut_errf(err, -EBADMSG, "vCPU %d: %s record has %u bytes, expected %zu",
				       v->id, t[i].what, len, t[i].size);
		copy = malloc(len);   /* aligned copy for the ioctl */
		if (!copy)
			return ut_errf(err, -ENOMEM, "out of memory restoring vCPU %d", v->id);
		memcpy(copy, p, len);
		if (tag == TAG_MSRS) {
			uint32_t count = ((struct kvm_msrs *)copy)->nmsrs;

			if (count > (len - sizeof(struct kvm_msrs)) / sizeof(struct kvm_msr_entry)) {
				free(copy);
				return ut_errf(err, -EBADMSG, "vCPU %d: MSR record count %u too large",
					       v->id, count);
			}
		}
		got = ioctl(v->fd, t[i].req, copy);
		if (got < 0)
			r = ut_errf_sys(err, -errno, "vCPU %d: unable to set its %s", v->id, t[i].what);
		else if (tag == TAG_MSRS && (uint32_t)got != ((struct kvm_msrs *)copy)->nmsrs)
			r = ut_errf(err, -EINVAL, "vCPU %d: MSR 0x%x was refused", v->id,
				    ((struct kvm_msrs *)copy)->entries[got].index);
		free(copy);
		return r;
	}
	return ut_errf(err, -EBADMSG, "vCPU %d: unknown state record tag %u", v->id, tag);
}

int vmm_vcpu_restore(struct vmm_vcpu *v, const uint8_t *rec, size_t len, struct ut_err *err)
{
	struct ut_rd rd;
	uint32_t ver = 0, tag, n;
	int r;

	ut_rd_init(&rd, rec, len);
	if (ut_rd_le32(&rd, &ver) || ver != VCPU_STATE_VERSION)
		return ut_errf(err, -EPROTO, "vCPU %d: state record version %u not supported",
			       v->id, ver);
	r = check_blobs(v, rd, err);
	if (r)
		return r;
	while (rd.off < rd.len) {
		if (ut_rd_le32(&rd, &tag) || ut_rd_le32(&rd, &n) || n > rd.len - rd.off)
			return ut_errf(err, -EBADMSG, "vCPU %d: state record truncated", v->id);
		r = put_blob(v, tag, rd.p + rd.off, n, err);
		if (r)
			return r;
		rd.off += n;
	}
	return 0;
}
