/* tests/guest/irqtest.c — cowvm.test=irq: virtio-pci interrupts reach the LAPIC.
 *
 * The guest runs with IF = 0 and has no IDT gates above vector 31, so it
 * never takes an interrupt; a delivered fixed interrupt stays pending in the
 * local APIC's IRR, which ring 3 reads through the LAPIC MMIO page (the 3-4
 * GiB hole is identity mapped, user-accessible and uncached).  Checked on
 * virtio-rng's queue 0:
 *   MSI-X  entry 0 -> IRQ_VEC_MSIX: a completion sets its IRR bit; with the
 *          entry masked a completion leaves IRQ_VEC_MASKED clear and sets the
 *          PBA bit, unmasking then delivers it and clears the PBA bit; a
 *          message pending when MSI-X is disabled is not sent when its entry
 *          is unmasked, only once MSI-X is enabled again.
 *   INTx   MSI-X off, IOAPIC pin (PCI interrupt line) -> IRQ_VEC_INTX, level,
 *          active high: a completion sets the IRR bit, the PCI status INTx
 *          bit and the pin's Remote IRR; the ISR register reads 1 and then 0.
 *          With no EOI possible (the CPU never accepts the interrupt, so the
 *          LAPIC ISR is empty), the line level is observed by re-arming the
 *          pin (edge then level clears Remote IRR; the IOAPIC redelivers a
 *          level pin that is still asserted): asserted before the ISR read,
 *          deasserted after it.
 * The IRR bits stay set (no EOI), so every check uses a fresh vector.
 */
#include "virtio.h"

/* Exit statuses of this test (README.md). */
enum {
	ST_IRQ_LAPIC      = 11,  /* LAPIC not reachable or not enabled */
	ST_IRQ_MSIX       = 12,  /* MSI-X completion did not set the IRR bit */
	ST_IRQ_MASKED     = 13,  /* masked MSI-X entry still delivered */
	ST_IRQ_PBA        = 14,  /* PBA bit wrong for the masked entry */
	ST_IRQ_UNMASK     = 15,  /* unmasking did not deliver the pending message */
	ST_IRQ_DISABLED   = 16,  /* message sent with MSI-X disabled, or not on enable */
	ST_IRQ_INTX       = 17,  /* INTx completion did not set the IRR bit */
	ST_IRQ_ISR        = 18,  /* virtio ISR register value wrong */
	ST_IRQ_DEASSERT   = 19,  /* INTx line level wrong around the ISR read */
	ST_IRQ_STALE      = 20,  /* a test vector was pending before its check */
};

#define IRQ_VEC_MSIX    0x51
#define IRQ_VEC_INTX    0x52
#define IRQ_VEC_MASKED  0x61
#define IRQ_VEC_DISABLED 0x64
#define IRQ_VEC_REARM1  0x62
#define IRQ_VEC_REARM2  0x63

#define LAPIC_BASE      0xfee00000ULL
#define LAPIC_ID        0x020
#define LAPIC_VERSION   0x030
#define LAPIC_SVR       0x0f0
#define LAPIC_IRR       0x200
#define SVR_ENABLE      0x100

#define IOAPIC_BASE     0xfec00000ULL
#define IOAPIC_SEL      0x00
#define IOAPIC_WIN      0x10
#define IOAPIC_VER      0x01
#define IOAPIC_REDIR    0x10
#define REDIR_LEVEL     (1u << 15)
#define REDIR_REMOTE_IRR (1u << 14)
#define REDIR_MASK      (1u << 16)

#define PCI_STATUS_INTX 0x08
#define PCI_CAP_MSIX    0x11
#define MSIX_ENABLE     0x8000
#define MSIX_FMASK      0x4000
#define MSIX_CTRL_MASK  1

#define CC_Q_SELECT     0x16
#define CC_Q_MSIX       0x1a
#define NO_VECTOR       0xffff

#define WAIT_USED_NS    (5ULL * 1000000000ULL)
#define WAIT_IRR_NS     (2ULL * 1000000000ULL)
#define QUIET_NS        (200ULL * 1000000ULL)

static struct virtio_dev vd;
static struct virtq vq;
static uint8_t irq_buf[16] __attribute__((aligned(64)));

/* ---- local APIC and IOAPIC ---- */

static uint32_t lapic_read(uint32_t reg) { return mmio_r32(LAPIC_BASE + reg); }
static void lapic_write(uint32_t reg, uint32_t v) { mmio_w32(LAPIC_BASE + reg, v); }

/* Is VEC set in the LAPIC's interrupt request register? */
static bool irr_set(uint32_t vec)
{
	return lapic_read(LAPIC_IRR + 0x10 * (vec / 32)) & (1u << (vec % 32));
}

/* Waits up to NS for VEC to appear in the IRR. */
static bool irr_wait(uint32_t vec, uint64_t ns)
{
	uint64_t t0 = time_ns();
	while (!irr_set(vec)) {
		if (time_ns() - t0 > ns)
			return false;
		cpu_relax();
	}
	return true;
}

/* Software-enables the LAPIC (SVR bit 8) and checks that it answers. */
static void lapic_enable(void)
{
	uint32_t ver = lapic_read(LAPIC_VERSION), svr = lapic_read(LAPIC_SVR);
	if (ver == 0 || ver == 0xffffffffu)
		die(ST_IRQ_LAPIC, "irq: LAPIC at 0x%lx does not answer (version 0x%x)",
		    (unsigned long)LAPIC_BASE, ver);
	if (!(svr & SVR_ENABLE))
		lapic_write(LAPIC_SVR, svr | SVR_ENABLE | 0xff);
	svr = lapic_read(LAPIC_SVR);
	if (!(svr & SVR_ENABLE))
		die(ST_IRQ_LAPIC, "irq: LAPIC stays disabled (SVR 0x%x)", svr);
	say("irq lapic id=%u version=0x%x svr=0x%x", lapic_read(LAPIC_ID) >> 24, ver, svr);
}

static uint32_t ioapic_read(uint32_t reg)
{
	mmio_w32(IOAPIC_BASE + IOAPIC_SEL, reg);
	return mmio_r32(IOAPIC_BASE + IOAPIC_WIN);
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
	mmio_w32(IOAPIC_BASE + IOAPIC_SEL, reg);
	mmio_w32(IOAPIC_BASE + IOAPIC_WIN, v);
}

/* Routes IOAPIC PIN to VEC on APIC 0 (fixed, physical), unmasked. */
static void ioapic_route(uint32_t pin, uint32_t vec, bool level)
{
	ioapic_write(IOAPIC_REDIR + 2 * pin + 1, 0);          /* destination APIC 0 */
	ioapic_write(IOAPIC_REDIR + 2 * pin, vec | (level ? REDIR_LEVEL : 0));
}

/* Dies with STATUS unless VEC is clear in the IRR (a fresh vector). */
static void expect_clear(uint32_t vec, uint32_t status, const char *what)
{
	if (irr_set(vec))
		die(status, "irq: vector 0x%x is pending %s", vec, what);
}

/* ---- the device ---- */

/* Offers one device-writable buffer on queue 0 and waits for its completion. */
static void rng_request(void)
{
	struct vbuf b = { (uintptr_t)irq_buf, sizeof(irq_buf), true };
	uint64_t tok, t0;
	uint32_t len;
	if (!virtq_add(&vq, &b, 1, 0))
		die(ST_DEVICE_ERROR, "irq: cannot queue a buffer");
	virtq_kick(&vq);
	t0 = time_ns();
	while (!virtq_get(&vq, &tok, &len)) {
		if (time_ns() - t0 > WAIT_USED_NS)
			die(ST_DEVICE_ERROR, "irq: no completion from virtio-rng after 5 s");
		cpu_relax();
	}
}

static void set_queue_vector(uint16_t v)
{
	mmio_w16(vd.common + CC_Q_SELECT, 0);
	mmio_w16(vd.common + CC_Q_MSIX, v);
	if (mmio_r16(vd.common + CC_Q_MSIX) != v)
		die(ST_DEVICE_ERROR, "irq: queue 0 MSI-X vector reads 0x%x, wrote 0x%x",
		    mmio_r16(vd.common + CC_Q_MSIX), v);
}

/* Offset of the MSI-X capability in config space; dies if there is none. */
static uint8_t msix_cap(void)
{
	uint8_t p = pci_read8(&vd.pci, 0x34) & 0xfc;
	for (uint32_t guard = 0; p >= 0x40 && guard < 48; guard++) {
		if (pci_read8(&vd.pci, p) == PCI_CAP_MSIX)
			return p;
		p = pci_read8(&vd.pci, p + 1) & 0xfc;
	}
	die(ST_DEVICE_ERROR, "irq: virtio-rng has no MSI-X capability");
}

/* Address of the MSI-X structure whose BIR/offset dword is at CAP + AT. */
static uint64_t msix_struct(uint8_t cap, uint8_t at)
{
	uint32_t v = pci_read32(&vd.pci, cap + at);
	uint64_t bar = pci_bar_addr(&vd.pci, v & 7);
	if (bar == 0)
		die(ST_DEVICE_ERROR, "irq: MSI-X BAR %u is not usable", v & 7);
	return bar + (v & ~7u);
}

/* Sets or clears MSI-X Enable (Function Mask always clear). */
static void msix_enable(uint8_t cap, bool on)
{
	uint16_t ctl = pci_read16(&vd.pci, cap + 2) & ~(MSIX_ENABLE | MSIX_FMASK);
	pci_write16(&vd.pci, cap + 2, (uint16_t)(ctl | (on ? MSIX_ENABLE : 0)));
}

/* ---- the checks ---- */

static void check_msix(uint8_t cap, uint64_t table, uint64_t pba)
{
	expect_clear(IRQ_VEC_MSIX, ST_IRQ_STALE, "before MSI-X was enabled");
	expect_clear(IRQ_VEC_MASKED, ST_IRQ_STALE, "before MSI-X was enabled");

	/* entry 0: APIC 0, fixed, edge, unmasked; queue 0 uses it */
	mmio_w32(table + 0, (uint32_t)LAPIC_BASE | (0u << 12));
	mmio_w32(table + 4, 0);
	mmio_w32(table + 8, IRQ_VEC_MSIX);
	mmio_w32(table + 12, 0);
	set_queue_vector(0);
	msix_enable(cap, true);

	rng_request();
	if (!irr_wait(IRQ_VEC_MSIX, WAIT_IRR_NS))
		die(ST_IRQ_MSIX, "irq: MSI-X completion did not set IRR vector 0x%x", IRQ_VEC_MSIX);
	say("irq msix vector=0x%x pending", IRQ_VEC_MSIX);

	/* masked: no delivery, PBA bit 0 set; the new data must be used later */
	mmio_w32(table + 12, MSIX_CTRL_MASK);
	mmio_w32(table + 8, IRQ_VEC_MASKED);
	if (mmio_r32(pba) & 1)
		die(ST_IRQ_PBA, "irq: PBA bit 0 set before the masked completion");
	rng_request();
	delay_ns(QUIET_NS);
	if (irr_set(IRQ_VEC_MASKED))
		die(ST_IRQ_MASKED, "irq: masked MSI-X entry delivered vector 0x%x", IRQ_VEC_MASKED);
	if (!(mmio_r32(pba) & 1))
		die(ST_IRQ_PBA, "irq: PBA bit 0 clear after a completion on the masked entry");
	mmio_w32(table + 12, 0);
	if (!irr_wait(IRQ_VEC_MASKED, WAIT_IRR_NS))
		die(ST_IRQ_UNMASK, "irq: unmasking did not deliver vector 0x%x", IRQ_VEC_MASKED);
	if (mmio_r32(pba) & 1)
		die(ST_IRQ_PBA, "irq: PBA bit 0 still set after delivery");
	say("irq msix masked vector=0x%x held in pba, delivered on unmask", IRQ_VEC_MASKED);

	/* pending, then MSI-X disabled: unmasking must not send, enabling must */
	expect_clear(IRQ_VEC_DISABLED, ST_IRQ_STALE, "before the disabled-MSI-X check");
	mmio_w32(table + 12, MSIX_CTRL_MASK);
	mmio_w32(table + 8, IRQ_VEC_DISABLED);
	rng_request();
	if (!(mmio_r32(pba) & 1))
		die(ST_IRQ_PBA, "irq: PBA bit 0 clear after a completion on the masked entry");
	msix_enable(cap, false);
	mmio_w32(table + 12, 0);
	delay_ns(QUIET_NS);
	if (irr_set(IRQ_VEC_DISABLED))
		die(ST_IRQ_DISABLED, "irq: unmasking sent vector 0x%x while MSI-X is disabled",
		    IRQ_VEC_DISABLED);
	msix_enable(cap, true);
	if (!irr_wait(IRQ_VEC_DISABLED, WAIT_IRR_NS))
		die(ST_IRQ_DISABLED, "irq: enabling MSI-X did not send pending vector 0x%x",
		    IRQ_VEC_DISABLED);
	say("irq msix vector=0x%x held while disabled, delivered on enable", IRQ_VEC_DISABLED);

	msix_enable(cap, false);
	set_queue_vector(NO_VECTOR);
}

/* Re-arms PIN (edge then level, to VEC): clears Remote IRR, so a pin that
 * is still asserted is delivered again. */
static void rearm(uint32_t pin, uint32_t vec)
{
	ioapic_route(pin, vec, false);
	ioapic_route(pin, vec, true);
}

static void check_intx(void)
{
	uint32_t pin = pci_read8(&vd.pci, 0x3c);
	uint32_t pins = ((ioapic_read(IOAPIC_VER) >> 16) & 0xff) + 1;
	if (pin >= pins)
		die(ST_IRQ_INTX, "irq: interrupt line %u is not an IOAPIC pin (%u pins)", pin, pins);
	expect_clear(IRQ_VEC_INTX, ST_IRQ_STALE, "before INTx was routed");
	expect_clear(IRQ_VEC_REARM1, ST_IRQ_STALE, "before INTx was routed");
	expect_clear(IRQ_VEC_REARM2, ST_IRQ_STALE, "before INTx was routed");
	/* reading ISR clears it; a device may have set the queue bit during
	 * the MSI-X checks (the spec allows it; QEMU does) */
	(void)mmio_r8(vd.isr);
	if (mmio_r8(vd.isr) != 0)
		die(ST_IRQ_ISR, "irq: ISR not 0 after reading it, before the INTx request");
	ioapic_route(pin, IRQ_VEC_INTX, true);

	rng_request();
	if (!irr_wait(IRQ_VEC_INTX, WAIT_IRR_NS))
		die(ST_IRQ_INTX, "irq: INTx completion did not set IRR vector 0x%x (pin %u)",
		    IRQ_VEC_INTX, pin);
	if (!(pci_read16(&vd.pci, 0x06) & PCI_STATUS_INTX))
		die(ST_IRQ_INTX, "irq: PCI status INTx bit clear while the interrupt is pending");
	if (!(ioapic_read(IOAPIC_REDIR + 2 * pin) & REDIR_REMOTE_IRR))
		die(ST_IRQ_INTX, "irq: IOAPIC pin %u Remote IRR clear after delivery", pin);
	say("irq intx vector=0x%x pending pin=%u", IRQ_VEC_INTX, pin);

	/* still asserted: re-arming delivers again */
	rearm(pin, IRQ_VEC_REARM1);
	if (!irr_wait(IRQ_VEC_REARM1, WAIT_IRR_NS))
		die(ST_IRQ_DEASSERT, "irq: pin %u not asserted before the ISR read", pin);

	uint8_t isr = mmio_r8(vd.isr);
	if (isr != 1)
		die(ST_IRQ_ISR, "irq: ISR read 0x%x, expected 1 (queue interrupt)", isr);
	if (mmio_r8(vd.isr) != 0)
		die(ST_IRQ_ISR, "irq: ISR not cleared by reading it");
	if (pci_read16(&vd.pci, 0x06) & PCI_STATUS_INTX)
		die(ST_IRQ_DEASSERT, "irq: PCI status INTx bit still set after the ISR read");
	rearm(pin, IRQ_VEC_REARM2);
	delay_ns(QUIET_NS);
	if (irr_set(IRQ_VEC_REARM2))
		die(ST_IRQ_DEASSERT, "irq: pin %u still asserted after the ISR read", pin);
	ioapic_write(IOAPIC_REDIR + 2 * pin, REDIR_MASK);
	say("irq intx isr=1 deasserted");
}

void test_irq(void)
{
	uint64_t t0;
	if (!virtio_open(&vd, VIRTIO_DEV_RNG, 0, 0)) {
		if (vd.pci.vendor == 0)
			die(ST_NO_DEVICE, "irq: no virtio-rng device (PCI 1af4:1044) found");
		die(ST_DEVICE_ERROR, "irq: virtio-rng could not be set up");
	}
	if (!vd.isr)
		die(ST_DEVICE_ERROR, "irq: virtio-rng has no ISR capability");
	if (!virtio_queue(&vd, &vq, 0, 16, 1))
		die(ST_DEVICE_ERROR, "irq: virtio-rng queue setup failed");
	virtio_ready(&vd);
	uint8_t cap = msix_cap();
	uint64_t table = msix_struct(cap, 4), pba = msix_struct(cap, 8);

	lapic_enable();
	t0 = time_ns();
	check_msix(cap, table, pba);
	check_intx();
	say("irq checks took %lu ms", (unsigned long)((time_ns() - t0) / 1000000));
	say("irq ok");
	guest_exit(ST_OK);
}
