/* tests/guest/exit.c — ending the run. */
#include <stdarg.h>
#include "guest.h"

#define PORT_DEBUG_EXIT 0x501

/* Writes STATUS to the debug-exit port (32-bit), which ends the run; if
 * nothing ends it (no such device) the CPU spins here forever. */
void guest_exit(uint32_t status)
{
	outl(PORT_DEBUG_EXIT, status);
	for (;;)
		cpu_relax();
}

/* Prints "cowvm-guest: <message>" and exits with STATUS. */
void die(uint32_t status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	guest_exit(status);
}
