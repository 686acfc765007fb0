/* tests/unit/test-vcpu-state.c — a vCPU state record (core/vcpu-state.c) is
 * checked whole before anything is set, without KVM: a vCPU whose fd is -1
 * gets a record; one that passes the checks fails at its first ioctl
 * ("unable to set its registers"), one that does not is refused with what
 * is wrong: a blob missing, twice, an unknown tag, both or neither of XSAVE
 * and FPU, a record cut short. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>

#include "core/vm.h"
#include "tests/unit/test-vm-util.h"
#include "util/buf.h"

enum { REGS = 1, XSAVE, FPU, XCRS, SREGS, MSRS, MP_STATE, LAPIC, EVENTS, DEBUGREGS };

static const size_t sizes[] = {
	[REGS] = sizeof(struct kvm_regs), [XSAVE] = sizeof(struct kvm_xsave),
	[FPU] = sizeof(struct kvm_fpu), [XCRS] = sizeof(struct kvm_xcrs),
	[SREGS] = sizeof(struct kvm_sregs), [MSRS] = sizeof(struct kvm_msrs),
	[MP_STATE] = sizeof(struct kvm_mp_state), [LAPIC] = sizeof(struct kvm_lapic_state),
	[EVENTS] = sizeof(struct kvm_vcpu_events), [DEBUGREGS] = sizeof(struct kvm_debugregs),
};

/* A record of the blobs @tags (0-terminated), zero-filled, right sizes. */
static void record(struct ut_buf *b, const int *tags)
{
	static const uint8_t zero[sizeof(struct kvm_xsave)];

	ut_buf_release(b);
	ut_buf_add_le32(b, 1);
	for (; *tags; tags++) {
		size_t n = *tags <= DEBUGREGS ? sizes[*tags] : 8;

		ut_buf_add_le32(b, (uint32_t)*tags);
		ut_buf_add_le32(b, (uint32_t)n);
		ut_buf_add(b, zero, n);
	}
}

static void expect(const int *tags, const char *msg)
{
	struct vmm_vcpu v = { .id = 3, .fd = -1 };
	struct ut_err err = { 0, "" };
	struct ut_buf b = UT_BUF_INIT;

	record(&b, tags);
	CHECK(vmm_vcpu_restore(&v, b.data, b.len, &err) < 0, "record accepted by fd -1");
	CHECK_STR(err.msg, msg);
	ut_buf_release(&b);
}

int main(void)
{
	struct vmm_vcpu v = { .id = 3, .fd = -1 };
	struct ut_err err = { 0, "" };
	struct ut_buf b = UT_BUF_INIT;

	/* what a save writes: passes, and fails at the first ioctl */
	expect((const int[]){ REGS, XSAVE, XCRS, SREGS, MSRS, MP_STATE, LAPIC, EVENTS, DEBUGREGS, 0 },
	       "vCPU 3: unable to set its registers");
	expect((const int[]){ REGS, FPU, SREGS, MSRS, MP_STATE, LAPIC, EVENTS, DEBUGREGS, 0 },
	       "vCPU 3: unable to set its registers");
	/* refused before anything is set */
	expect((const int[]){ 0 }, "vCPU 3: the state record has no registers");
	expect((const int[]){ REGS, XSAVE, SREGS, MSRS, MP_STATE, EVENTS, DEBUGREGS, 0 },
	       "vCPU 3: the state record has no local APIC");
	expect((const int[]){ REGS, XSAVE, SREGS, MSRS, MP_STATE, LAPIC, EVENTS, 0 },
	       "vCPU 3: the state record has no debug registers");
	expect((const int[]){ REGS, XSAVE, SREGS, MSRS, MP_STATE, LAPIC, EVENTS, DEBUGREGS, REGS, 0 },
	       "vCPU 3: its registers are in the state record twice");
	expect((const int[]){ REGS, XSAVE, FPU, SREGS, MSRS, MP_STATE, LAPIC, EVENTS, DEBUGREGS, 0 },
	       "needs one of its XSAVE area and FPU state");
	expect((const int[]){ REGS, SREGS, MSRS, MP_STATE, LAPIC, EVENTS, DEBUGREGS, 0 },
	       "needs one of its XSAVE area and FPU state");
	expect((const int[]){ REGS, XSAVE, SREGS, MSRS, MP_STATE, LAPIC, EVENTS, DEBUGREGS, 11, 0 },
	       "vCPU 3: unknown state record tag 11");
	/* cut short in the last blob; a wrong version */
	record(&b, (const int[]){ REGS, XSAVE, SREGS, MSRS, MP_STATE, LAPIC, EVENTS, DEBUGREGS, 0 });
	CHECK(vmm_vcpu_restore(&v, b.data, b.len - 1, &err) < 0, "a record cut short accepted");
	CHECK_STR(err.msg, "vCPU 3: state record truncated");
	b.data[0] = 2;
	CHECK(vmm_vcpu_restore(&v, b.data, b.len, &err) == -EPROTO, "version 2 accepted");
	CHECK_STR(err.msg, "version 2 not supported");
	ut_buf_release(&b);
	return tv_finish("test-vcpu-state");
}
