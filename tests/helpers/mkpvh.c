/* tests/helpers/mkpvh.c — write small hand-made kernels for error-path tests.
 *
 *   mkpvh triple-fault OUT   PVH ELF whose 32-bit entry executes ud2 with an
 *                            empty IDT: #UD -> #GP -> #DF -> triple fault
 *   mkpvh no-note OUT        ELF64 with a loadable segment but no PVH note
 *   mkpvh bad-phdr OUT       PVH ELF whose segment lies beyond the file's end
 *
 * Exit 0 on success, 1 on I/O error, 2 on usage.
 */
#include <elf.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define LOAD_ADDR 0x100000u

struct image {
	Elf64_Ehdr eh;
	Elf64_Phdr ph[2];
	struct {
		Elf64_Nhdr nh;
		char name[4];
		uint32_t entry;
	} note;
	uint8_t code[16];
};

int main(int argc, char **argv)
{
	struct image im;
	FILE *f;
	int nph = 2;

	if (argc != 3) {
		fprintf(stderr, "usage: mkpvh triple-fault|no-note|bad-phdr OUT\n");
		return 2;
	}
	memset(&im, 0, sizeof(im));
	memcpy(im.eh.e_ident, ELFMAG, SELFMAG);
	im.eh.e_ident[EI_CLASS] = ELFCLASS64;
	im.eh.e_ident[EI_DATA] = ELFDATA2LSB;
	im.eh.e_ident[EI_VERSION] = EV_CURRENT;
	im.eh.e_type = ET_EXEC;
	im.eh.e_machine = EM_X86_64;
	im.eh.e_version = EV_CURRENT;
	im.eh.e_entry = LOAD_ADDR;
	im.eh.e_phoff = offsetof(struct image, ph);
	im.eh.e_ehsize = sizeof(Elf64_Ehdr);
	im.eh.e_phentsize = sizeof(Elf64_Phdr);

	/* segment 0: the code, loaded at 1 MiB */
	im.ph[0].p_type = PT_LOAD;
	im.ph[0].p_offset = offsetof(struct image, code);
	im.ph[0].p_vaddr = im.ph[0].p_paddr = LOAD_ADDR;
	im.ph[0].p_filesz = im.ph[0].p_memsz = sizeof(im.code);
	im.ph[0].p_flags = PF_R | PF_X;
	im.ph[0].p_align = 16;
	/* segment 1: the Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY = 18) */
	im.ph[1].p_type = PT_NOTE;
	im.ph[1].p_offset = offsetof(struct image, note);
	im.ph[1].p_filesz = sizeof(im.note);
	im.ph[1].p_align = 4;
	im.note.nh.n_namesz = 4;
	im.note.nh.n_descsz = 4;
	im.note.nh.n_type = 18;
	memcpy(im.note.name, "Xen", 4);
	im.note.entry = LOAD_ADDR;
	/* code: lidt of a zero-limit IDT descriptor kept in the code, then ud2 */
	{
		static const uint8_t code[] = {
			0x0f, 0x01, 0x1d, 0x0a, 0x00, 0x10, 0x00, /* lidt [0x10000a] */
			0x0f, 0x0b,                               /* ud2 */
			0xf4,                                     /* hlt (not reached) */
			0x00, 0x00, 0x00, 0x00, 0x00, 0x00,       /* IDT: limit 0, base 0 */
		};
		memcpy(im.code, code, sizeof(code));
	}

	if (!strcmp(argv[1], "no-note")) {
		nph = 1;
	} else if (!strcmp(argv[1], "bad-phdr")) {
		im.ph[0].p_offset = 1u << 30;
	} else if (strcmp(argv[1], "triple-fault")) {
		fprintf(stderr, "mkpvh: unknown kind '%s'\n", argv[1]);
		return 2;
	}
	im.eh.e_phnum = (uint16_t)nph;
	f = fopen(argv[2], "wb");
	if (!f || fwrite(&im, sizeof(im), 1, f) != 1 || fclose(f)) {
		perror(argv[2]);
		return 1;
	}
	return 0;
}
