/* tests/guest/start.c — ring-3 main: boot info, command line, dispatch. */
#include "guest.h"

#define HVM_START_MAGIC 0x336ec578u
#define SI_SIZE_V0      40
#define SI_SIZE_V1      56

void user_main(void) __attribute__((noreturn));

struct command {
	const char *name;
	void (*fn)(void);
};

static void disk_write(void) { test_disk(true); }
static void disk_verify(void) { test_disk(false); }

static const struct command commands[] = {
	{ "hello", test_hello },
	{ "info", test_info },
	{ "disk-write", disk_write },
	{ "disk-verify", disk_verify },
	{ "counter", test_counter },
	{ "dirty", test_dirty },
	{ "memfill", test_memfill },
	{ "rng", test_rng },
	{ "irq", test_irq },
	{ "fault", test_fault },
};

/* Entered from entry.S in ring 3 (IOPL 3, IF 0) on the user stack. */
void user_main(void)
{
	serial_init();
	uint64_t si = boot_start_info;
	if (si == 0 || si > 4 * GIB - SI_SIZE_V1)
		die(ST_BAD_BOOTINFO, "no start_info (ebx=0x%lx)", si);
	const uint8_t *p = (const uint8_t *)(uintptr_t)si;
	uint32_t magic, version;
	uint64_t cmdline = 0, memmap = 0;
	uint32_t memmap_n = 0;
	memcpy(&magic, p, 4);
	memcpy(&version, p + 4, 4);
	if (magic != HVM_START_MAGIC)
		die(ST_BAD_BOOTINFO, "bad start_info magic 0x%x at 0x%lx", magic, si);
	memcpy(&cmdline, p + 24, 8);
	if (version >= 1) {
		memcpy(&memmap, p + 40, 8);
		memcpy(&memmap_n, p + 48, 4);
	}
	cmdline_init(cmdline);
	mem_init(memmap, memmap_n);

	const char *t = cmdline_get("cowvm.test");
	if (!t || !*t)
		die(ST_BAD_COMMAND, "no command: add cowvm.test=NAME to the kernel command line "
		    "(hello info disk-write disk-verify counter dirty memfill rng irq fault)");
	for (uint32_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (strcmp(t, commands[i].name) == 0)
			commands[i].fn();
	die(ST_BAD_COMMAND, "unknown command cowvm.test=%s "
	    "(known: hello info disk-write disk-verify counter dirty memfill rng irq fault)", t);
}
