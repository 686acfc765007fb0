/* core/dev/serial.c — a 16550A UART on COM1 (0x3F8, IRQ 4).
 *
 * Transmit is immediate (THR is always empty again after a write); receive
 * has a 16-byte FIFO fed by the console. Interrupts: received data, THR empty
 * and line status, with the usual priority in IIR. Options: console=stdio|
 * file:PATH|none (default stdio), socket=PATH (also serve the console there).
 */
#include "core/console.h"
#include "core/device.h"
#include "core/layout.h"
#include "core/vm.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SERIAL_STATE_VERSION 1
#define SERIAL_FIFO 16

/* register offsets */
enum { RBR = 0, IER = 1, IIR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };
#define FCR IIR
#define IER_RDI   0x01
#define IER_THRI  0x02
#define IER_RLSI  0x04
#define IIR_NONE  0x01
#define IIR_THRI  0x02
#define IIR_RDI   0x04
#define IIR_RLSI  0x06
#define IIR_FIFO  0xC0
#define FCR_ENABLE 0x01
#define FCR_CLR_RX 0x02
#define LCR_DLAB  0x80
#define LSR_DR    0x01
#define LSR_OE    0x02
#define LSR_THRE  0x20
#define LSR_TEMT  0x40
#define LSR_ERRS  0x1E
#define MCR_LOOP  0x10
#define MSR_DEFAULT 0xB0   /* DCD | DSR | CTS */

struct serial {
	struct vmm_device dev;
	pthread_mutex_t lock;
	struct vmm_console con;
	uint8_t ier, iir_fifo, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
	bool thr_ipending;
	int irq_level;
	uint8_t rx[SERIAL_FIFO];
	unsigned rx_head, rx_len;
};

/* Highest-priority pending interrupt, IIR_NONE if none. Locked. */
static uint8_t serial_iir(const struct serial *s)
{
	if ((s->ier & IER_RLSI) && (s->lsr & LSR_ERRS))
		return IIR_RLSI;
	if ((s->ier & IER_RDI) && (s->lsr & LSR_DR))
		return IIR_RDI;
	if ((s->ier & IER_THRI) && s->thr_ipending)
		return IIR_THRI;
	return IIR_NONE;
}

static void serial_update_irq(struct serial *s)
{
	int level = serial_iir(s) != IIR_NONE;

	if (level != s->irq_level) {
		s->irq_level = level;
		vmm_irq_line(s->dev.vm, VMM_IRQ_COM1, level);
	}
}

static void serial_rx(void *opaque, const uint8_t *buf, size_t len)
{
	struct serial *s = opaque;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < len; i++) {
		if (s->rx_len == SERIAL_FIFO) {
			s->lsr |= LSR_OE;
			break;
		}
		s->rx[(s->rx_head + s->rx_len++) % SERIAL_FIFO] = buf[i];
	}
	if (s->rx_len)
		s->lsr |= LSR_DR;
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

static uint8_t serial_read(struct serial *s, unsigned reg)
{
	uint8_t v;

	switch (reg) {
	case RBR:
		if (s->lcr & LCR_DLAB)
			return s->dll;
		v = 0;
		if (s->rx_len) {
			v = s->rx[s->rx_head];
			s->rx_head = (s->rx_head + 1) % SERIAL_FIFO;
			if (!--s->rx_len)
				s->lsr &= (uint8_t)~LSR_DR;
		}
		return v;
	case IER:
		return (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
	case IIR:
		v = serial_iir(s);
		if (v == IIR_THRI)
			s->thr_ipending = false;   /* reading IIR acknowledges THRE */
		return v | s->iir_fifo;
	case LCR:
		return s->lcr;
	case MCR:
		return s->mcr;
	case LSR:
		v = s->lsr;
		s->lsr &= (uint8_t)~(LSR_OE | LSR_ERRS);
		return v;
	case MSR:
		if (s->mcr & MCR_LOOP)   /* loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD */
			return (uint8_t)(((s->mcr & 0x0C) << 4) | ((s->mcr & 0x01) << 5) |
					 ((s->mcr & 0x02) << 3));
		return s->msr;
	default:
		return s->scr;
	}
}

static void serial_write(struct serial *s, unsigned reg, uint8_t v)
{
	switch (reg) {
	case RBR:
		if (s->lcr & LCR_DLAB) {
			s->dll = v;
			return;
		}
		if (s->mcr & MCR_LOOP) {
			if (s->rx_len < SERIAL_FIFO)
				s->rx[(s->rx_head + s->rx_len++) % SERIAL_FIFO] = v;
			s->lsr |= LSR_DR;
		} else {
			vmm_console_write(&s->con, &v, 1);
		}
		s->thr_ipending = true;   /* transmitted at once: THR empty again */
		return;
	case IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
			return;
		}
		if (!(s->ier & IER_THRI) && (v & IER_THRI))
			s->thr_ipending = true;   /* enabling THRI with THR empty interrupts */
		s->ier = v & 0x0F;
		return;
	case FCR:
		s->fcr = v;
		s->iir_fifo = (v & FCR_ENABLE) ? IIR_FIFO : 0;
		if (v & FCR_CLR_RX) {
			s->rx_len = 0;
			s->lsr &= (uint8_t)~LSR_DR;
		}
		return;
	case LCR:
		s->lcr = v;
		return;
	case MCR:
		s->mcr = v & 0x1F;
		return;
	case LSR:
	case MSR:
		return;   /* read-only */
	default:
		s->scr = v;
		return;
	}
}

static void serial_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool wr)
{
	struct serial *s = opaque;

	pthread_mutex_lock(&s->lock);
	/* wider accesses act on consecutive registers, as on the bus */
	for (uint32_t i = 0; i < len; i++) {
		unsigned reg = (unsigned)((off + i) & 7);

		if (wr)
			serial_write(s, reg, data[i]);
		else
			data[i] = serial_read(s, reg);
	}
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

static void serial_reset_locked(struct serial *s)
{
	s->ier = s->iir_fifo = s->lcr = s->mcr = s->scr = s->fcr = 0;
	s->dll = 12;                  /* 9600 baud */
	s->dlm = 0;
	s->lsr = LSR_THRE | LSR_TEMT;
	s->msr = MSR_DEFAULT;
	s->thr_ipending = false;
	s->rx_head = s->rx_len = 0;
	serial_update_irq(s);
}

static void serial_reset(struct vmm_device *dev)
{
	struct serial *s = dev->priv;

	pthread_mutex_lock(&s->lock);
	serial_reset_locked(s);
	pthread_mutex_unlock(&s->lock);
}

static int serial_save(struct vmm_device *dev, struct ut_buf *out)
{
	struct serial *s = dev->priv;
	uint8_t regs[12];
	int r;

	pthread_mutex_lock(&s->lock);
	regs[0] = s->ier; regs[1] = s->iir_fifo; regs[2] = s->lcr; regs[3] = s->mcr;
	regs[4] = s->lsr; regs[5] = s->msr; regs[6] = s->scr; regs[7] = s->dll;
	regs[8] = s->dlm; regs[9] = s->fcr; regs[10] = s->thr_ipending;
	regs[11] = (uint8_t)s->rx_len;
	r = ut_buf_add_le32(out, SERIAL_STATE_VERSION);
	if (!r)
		r = ut_buf_add(out, regs, sizeof(regs));
	for (unsigned i = 0; !r && i < s->rx_len; i++)
		r = ut_buf_add(out, &s->rx[(s->rx_head + i) % SERIAL_FIFO], 1);
	pthread_mutex_unlock(&s->lock);
	return r;
}

static int serial_restore(struct vmm_device *dev, const uint8_t *rec, size_t len, struct ut_err *err)
{
	struct serial *s = dev->priv;
	uint8_t regs[12];
	struct ut_rd rd;
	uint32_t ver = 0;
	int r = 0;

	ut_rd_init(&rd, rec, len);
	if (ut_rd_le32(&rd, &ver) || ver != SERIAL_STATE_VERSION)
		return ut_errf(err, -EPROTO, "device '%s': state record version %u not supported",
			       dev->id, ver);
	if (ut_rd_get(&rd, regs, sizeof(regs)) || regs[11] > SERIAL_FIFO)
		return ut_errf(err, -EBADMSG, "device '%s': state record malformed", dev->id);
	pthread_mutex_lock(&s->lock);
	s->ier = regs[0]; s->iir_fifo = regs[1]; s->lcr = regs[2]; s->mcr = regs[3];
	s->lsr = regs[4]; s->msr = regs[5]; s->scr = regs[6]; s->dll = regs[7];
	s->dlm = regs[8]; s->fcr = regs[9]; s->thr_ipending = regs[10];
	s->rx_head = 0;
	s->rx_len = regs[11];
	if (ut_rd_get(&rd, s->rx, s->rx_len))
		r = ut_errf(err, -EBADMSG, "device '%s': state record truncated", dev->id);
	s->irq_level = -1;   /* force the line to be driven */
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return r;
}

static void serial_exit(struct vmm_device *dev)
{
	struct serial *s = dev->priv;

	vmm_bus_unregister(&dev->vm->pio, VMM_PORT_COM1, s);
	vmm_console_close(&s->con);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int serial_init(struct vmm_vm *vm, const char *opts, struct ut_err *err);

const struct vmm_device_ops vmm_serial_ops = {
	.type = "serial", .init = serial_init, .reset = serial_reset,
	.save = serial_save, .restore = serial_restore, .exit = serial_exit,
};

static int serial_init(struct vmm_vm *vm, const char *opts, struct ut_err *err)
{
	static const char *const known[] = { "console", "socket", NULL };
	char spec[4096] = "stdio", sock[4096] = "";
	struct serial *s;
	int r;

	r = vmm_opt_check("serial", opts, known, err);
	if (r)
		return r;
	if (vmm_opt_get(opts, "console", spec, sizeof(spec)) < 0 ||
	    vmm_opt_get(opts, "socket", sock, sizeof(sock)) < 0)
		return ut_errf(err, -EINVAL, "device 'serial': option value too long");
	s = calloc(1, sizeof(*s));
	if (!s)
		return ut_errf(err, -ENOMEM, "out of memory for the serial port");
	pthread_mutex_init(&s->lock, NULL);
	s->dev.ops = &vmm_serial_ops;
	s->dev.priv = s;
	s->dev.vm = vm;
	snprintf(s->dev.id, sizeof(s->dev.id), "serial0");
	serial_reset_locked(s);
	r = vmm_console_open(&s->con, vm, spec, serial_rx, s, err);
	if (r)
		goto out;
	if (sock[0]) {
		r = vmm_console_listen(&s->con, sock, err);
		if (r)
			goto out_con;
	}
	r = vmm_bus_register(&vm->pio, VMM_PORT_COM1, 8, serial_io, s, err);
	if (r)
		goto out_con;
	r = vmm_vm_add_device(vm, &s->dev);
	if (!r)
		return 0;
	ut_errf(err, r, "too many devices");
	vmm_bus_unregister(&vm->pio, VMM_PORT_COM1, s);
out_con:
	vmm_console_close(&s->con);
out:
	pthread_mutex_destroy(&s->lock);
	free(s);
	return r;
}
