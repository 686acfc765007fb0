/* tests/guest/exception.c — report a CPU exception (runs in ring 0).
 *
 * Reached from isr_common (entry.S) on the TSS rsp0 stack for any of the
 * vectors 0..31, from ring 0 or ring 3.  It only prints and exits: the guest
 * has no way to recover, and ring-0 code is slow under nested PVM.
 */
#include "guest.h"

void exception_report(uint64_t vec, uint64_t err, uint64_t rip, uint64_t cs,
		      uint64_t cr2, uint64_t rsp, uint64_t rflags) __attribute__((noreturn));

/* Prints "cowvm-guest: exception V err E rip R ..." and exits with
 * ST_EXCEPTION + V. */
void exception_report(uint64_t vec, uint64_t err, uint64_t rip, uint64_t cs,
		      uint64_t cr2, uint64_t rsp, uint64_t rflags)
{
	say("exception %lu err 0x%lx rip 0x%lx cs 0x%lx rsp 0x%lx rflags 0x%lx cr2 0x%lx ring %lu",
	    vec, err, rip, cs, rsp, rflags, cr2, cs & 3);
	outl(0x501, (uint32_t)(ST_EXCEPTION + (vec & 31)));
	for (;;)
		__asm__ __volatile__("cli; hlt");
}
