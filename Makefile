# cowvm — top-level build.  `make` builds build/cowvm and build/testguest.elf.
#
# Sources are found by directory: a new file under core/, storage/, cow/,
# catalog/, migrate/, util/ or cli/ is built without touching this file; a new
# tests/unit/NAME.c becomes the test program build/tests/unit/NAME.

CC       ?= gcc
WERROR   ?= 1
O        ?= build
PREFIX   ?= /usr/local
VERSION  := 0.1.0

WARN     := -Wall -Wextra $(if $(filter 1,$(WERROR)),-Werror)
CFLAGS   ?= -O2 -g
# Flags every build needs, kept apart so `make CFLAGS=...` (asan) adds to them.
BASE_CFLAGS := -std=gnu11 $(WARN) -D_GNU_SOURCE -DCOWVM_VERSION='"$(VERSION)"' -I. \
            $(shell pkg-config --cflags libxml-2.0 json-c 2>/dev/null)
ALL_CFLAGS = $(BASE_CFLAGS) $(CFLAGS)
# Libraries from Debian -dev packages. The less common ones are linked
# statically by default (STATIC_LIBS=0 links them dynamically): a VMM then
# starts with only libc and libm to load, ~2 ms faster and ~0.6 MiB smaller.
# (libxml2 is not linked at all: catalog/xml-lib.c opens it when XML is used.)
STATIC_LIBS ?= 1
DEP_LIBS := -luring -lz -lzstd -llz4 -llzma -lxxhash -lsqlite3 \
            $(shell pkg-config --libs json-c 2>/dev/null || echo -ljson-c)
ifeq ($(STATIC_LIBS),1)
LIBS     := -Wl,-Bstatic $(DEP_LIBS) -Wl,-Bdynamic -lpthread -lm
else
LIBS     := $(DEP_LIBS) -lpthread -lm
endif
ALL_LDLIBS = $(LIBS) $(LDLIBS)

LIB_DIRS := util cow storage core core/boot core/dev core/virtio catalog migrate
LIB_SRCS := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
CLI_SRCS := $(wildcard cli/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(O)/obj/%.o)
CLI_OBJS := $(CLI_SRCS:%.c=$(O)/obj/%.o)
UNIT_SRCS := $(wildcard tests/unit/*.c)
UNIT_BINS := $(UNIT_SRCS:%.c=$(O)/%)
HELPER_SRCS := $(wildcard tests/helpers/*.c)
HELPER_BINS := $(HELPER_SRCS:tests/helpers/%.c=$(O)/tests/helpers/%)

.PHONY: all deps deps-build check demo asan install clean fuzz bench
all: $(O)/cowvm $(O)/testguest.elf $(UNIT_BINS) $(HELPER_BINS) $(O)/tests/helpers/iolog.so \
     $(O)/tests/helpers/failsync.so

$(O)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(O)/libcowvm.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(O)/cowvm: $(CLI_OBJS) $(O)/libcowvm.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJS) $(O)/libcowvm.a $(ALL_LDLIBS)

$(O)/tests/unit/%: tests/unit/%.c $(O)/libcowvm.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP $(LDFLAGS) -o $@ $< $(O)/libcowvm.a $(ALL_LDLIBS)

$(O)/tests/helpers/%: tests/helpers/%.c $(O)/libcowvm.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP $(LDFLAGS) -o $@ $< $(O)/libcowvm.a $(ALL_LDLIBS)

# The power-cut test's recorder, loaded with LD_PRELOAD: plain flags (no
# sanitizer runtime inside a preloaded library).
$(O)/tests/helpers/iolog.so: tests/helpers/shim/iolog.c tests/helpers/iolog.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -O2 -fPIC -shared -o $@ $< -ldl
# storage-enospc's failing fdatasync, likewise
$(O)/tests/helpers/failsync.so: tests/helpers/shim/failsync.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -O2 -fPIC -shared -o $@ $< -ldl

# The test guest has its own freestanding flags (tests/guest/guest.mk).
include tests/guest/guest.mk

-include $(LIB_OBJS:.o=.d) $(CLI_OBJS:.o=.d) $(UNIT_BINS:=.d) $(HELPER_BINS:=.d)

deps:
	@mk/deps.sh all
deps-build:
	@mk/deps.sh build

# `make check`: install what is missing, build, run every test; the last line
# is "N passed, N failed, N skipped".
check: deps
	@$(MAKE) --no-print-directory all
	@COWVM_BUILD=$(O) tests/run.sh

# ASan+UBSan build in build-asan/, tests run against it.
asan: deps
	@$(MAKE) --no-print-directory O=build-asan \
		CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		LDFLAGS="-fsanitize=address,undefined" all
	@COWVM_BUILD=build-asan ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/run.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@tests/demo.sh $(O)

install: $(O)/cowvm $(O)/testguest.elf
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/cowvm
	install -m 0755 $(O)/cowvm $(DESTDIR)$(PREFIX)/bin/cowvm
	install -m 0644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -d $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 0644 man/*.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 0644 $(O)/testguest.elf $(DESTDIR)$(PREFIX)/share/cowvm/testguest.elf

bench: all
	@bench/boot/run.sh $(O)

# `make fuzz`: libFuzzer (clang from Debian) on qcow2 images: opening and
# reading (fuzz-qcow2), then writing, repairing and writing again
# (fuzz-qcow2-write); on device state records restored into a VM without
# KVM (fuzz-devstate), and on whole state files opened and applied to a
# machine without KVM (fuzz-statefile): these two link core/, storage/,
# cow/ and util/, built once into $(O)/fuzz/obj with ASan+UBSan and
# coverage. FUZZ_SECS seconds each; `make fuzz FUZZ_TARGETS=fuzz-devstate`
# runs one. Not part of `make check`.
FUZZ_SECS ?= 60
FUZZ_TARGETS = fuzz-qcow2 fuzz-qcow2-write fuzz-devstate fuzz-statefile
FUZZ_CFLAGS := -g -O1 -std=gnu11 -D_GNU_SOURCE -DCOWVM_VERSION='"$(VERSION)"' -I. \
	       $(shell pkg-config --cflags json-c 2>/dev/null) -fno-omit-frame-pointer \
	       -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_DEV_SRCS := $(foreach d,util cow storage core core/boot core/dev core/virtio,$(wildcard $(d)/*.c))
FUZZ_DEV_OBJS := $(FUZZ_DEV_SRCS:%.c=$(O)/fuzz/obj/%.o)
$(O)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@
$(O)/fuzz/fuzz-devstate $(O)/fuzz/fuzz-statefile: $(O)/fuzz/%: tests/fuzz/%.c $(FUZZ_DEV_OBJS)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -MMD -MP -o $@ $< $(FUZZ_DEV_OBJS) $(DEP_LIBS) -lpthread -lm
-include $(FUZZ_DEV_OBJS:.o=.d) $(O)/fuzz/fuzz-devstate.d $(O)/fuzz/fuzz-statefile.d
fuzz:
	@mk/deps.sh fuzz
	@mkdir -p $(O)/fuzz
	for t in $(filter fuzz-qcow2%,$(FUZZ_TARGETS)); do \
		clang -g -O1 -std=gnu11 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined \
			-fno-sanitize-recover=undefined -o $(O)/fuzz/$$t tests/fuzz/$$t.c \
			$(wildcard cow/*.c) $(wildcard util/*.c) -lz -lzstd || exit 1; \
	done
	$(if $(filter-out fuzz-qcow2%,$(FUZZ_TARGETS)),$(MAKE) --no-print-directory \
		$(addprefix $(O)/fuzz/,$(filter-out fuzz-qcow2%,$(FUZZ_TARGETS))))
	@tests/fuzz/run.sh $(O) $(FUZZ_SECS) $(FUZZ_TARGETS)

clean:
	rm -rf $(O) build-asan
