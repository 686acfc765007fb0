# tests/guest/guest.mk — the test guest, a freestanding PVH ELF (included by ../../Makefile).
GUEST_CFLAGS := -std=gnu11 -O2 -g -ffreestanding -fno-stack-protector -fno-pic -fno-pie \
	-mno-red-zone -mno-sse -mno-mmx -mno-avx -mgeneral-regs-only -mcmodel=small -fno-tree-loop-distribute-patterns -nostdlib \
	-fno-asynchronous-unwind-tables -Wall -Wextra $(if $(filter 1,$(WERROR)),-Werror) -Itests/guest
GUEST_SRCS := $(wildcard tests/guest/*.c tests/guest/*.S)
GUEST_OBJS := $(patsubst tests/guest/%,$(O)/guest/%.o,$(GUEST_SRCS))

$(O)/guest/%.c.o: tests/guest/%.c
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_CFLAGS) -MMD -MP -c $< -o $@
$(O)/guest/%.S.o: tests/guest/%.S
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_CFLAGS) -MMD -MP -c $< -o $@

$(O)/testguest.elf: $(GUEST_OBJS) tests/guest/guest.ld
	$(CC) $(GUEST_CFLAGS) -static -no-pie -Wl,--build-id=none -Wl,-n -T tests/guest/guest.ld \
		-o $@ $(GUEST_OBJS)
-include $(GUEST_OBJS:.o=.d)
