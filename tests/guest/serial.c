/* tests/guest/serial.c — COM1 output and a small printf.
 *
 * Every port access is a VM exit, so output is written in bursts of up to 16
 * bytes (the 16550A transmit FIFO) after a single LSR poll that finds the
 * transmitter empty.  Works from ring 3 (IOPL 3) and from ring 0.
 */
#include <stdarg.h>
#include "guest.h"

#define COM1        0x3f8
#define COM1_FCR    (COM1 + 2)
#define COM1_LSR    (COM1 + 5)
#define LSR_THRE    0x20        /* transmit holding register / FIFO empty */
#define FIFO_DEPTH  16
#define LSR_POLL_MAX 1000000    /* give up waiting on a dead UART */

/* Enables and clears the FIFOs so bursts of FIFO_DEPTH bytes are safe. */
void serial_init(void)
{
	outb(COM1_FCR, 0x07);
}

/* Writes N bytes to COM1, polling LSR once per FIFO-full burst. */
void serial_write(const char *s, size_t n)
{
	while (n) {
		size_t chunk = n < FIFO_DEPTH ? n : FIFO_DEPTH;
		for (uint32_t i = 0; i < LSR_POLL_MAX; i++) {
			if (inb(COM1_LSR) & LSR_THRE)
				break;
			cpu_relax();
		}
		for (size_t i = 0; i < chunk; i++)
			outb(COM1, (uint8_t)s[i]);
		s += chunk;
		n -= chunk;
	}
}

struct outbuf {
	char buf[512];
	size_t len;
};

static void ob_putc(struct outbuf *o, char c)
{
	if (o->len < sizeof(o->buf))
		o->buf[o->len++] = c;
}

static void ob_puts(struct outbuf *o, const char *s)
{
	while (*s)
		ob_putc(o, *s++);
}

/* Formats V in BASE, at least WIDTH digits (padded with PAD). */
static void ob_num(struct outbuf *o, uint64_t v, unsigned base, int width, char pad, bool neg)
{
	char tmp[24];
	int n = 0;
	do {
		unsigned d = (unsigned)(v % base);
		tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v);
	if (neg)
		width--;
	if (neg && pad == '0')
		ob_putc(o, '-');
	for (int i = n; i < width; i++)
		ob_putc(o, pad);
	if (neg && pad != '0')
		ob_putc(o, '-');
	while (n)
		ob_putc(o, tmp[--n]);
}

/* printf subset into O: %s %c %d %u %x %p %%, flags '0', width, l/ll/z. */
static void ob_vformat(struct outbuf *o, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			ob_putc(o, *fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		int width = 0, lng = 0;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng++;
			fmt++;
		}
		switch (*fmt) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			ob_puts(o, s ? s : "(null)");
			break;
		}
		case 'c':
			ob_putc(o, (char)va_arg(ap, int));
			break;
		case 'd': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			ob_num(o, v < 0 ? -(uint64_t)v : (uint64_t)v, 10, width, pad, v < 0);
			break;
		}
		case 'u':
		case 'x': {
			uint64_t v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
			ob_num(o, v, *fmt == 'u' ? 10 : 16, width, pad, false);
			break;
		}
		case 'p':
			ob_puts(o, "0x");
			ob_num(o, (uint64_t)(uintptr_t)va_arg(ap, void *), 16, width, pad, false);
			break;
		case '%':
			ob_putc(o, '%');
			break;
		case '\0':
			fmt--;
			break;
		default:
			ob_putc(o, '%');
			ob_putc(o, *fmt);
			break;
		}
	}
}

/* Formats and writes to COM1 (output longer than 512 bytes is cut). */
void gprintf(const char *fmt, ...)
{
	struct outbuf o;
	va_list ap;
	o.len = 0;
	va_start(ap, fmt);
	ob_vformat(&o, fmt, ap);
	va_end(ap);
	serial_write(o.buf, o.len);
}

/* Writes "cowvm-guest: " + formatted text + "\n" in one burst sequence. */
void vsay(const char *fmt, va_list ap)
{
	struct outbuf o;
	o.len = 0;
	ob_puts(&o, "cowvm-guest: ");
	ob_vformat(&o, fmt, ap);
	if (o.len == sizeof(o.buf))
		o.len--;
	o.buf[o.len++] = '\n';
	serial_write(o.buf, o.len);
}

void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}
