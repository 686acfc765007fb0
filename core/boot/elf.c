/* core/boot/elf.c — reading ELF32/ELF64 little-endian headers, program headers
 * and notes from an untrusted file. Every count, offset and size is checked
 * against the file before it is used.
 */
#include "core/boot/internal.h"

#include <elf.h>
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOTE_MAX_BYTES   (1u << 20)   /* a note segment or section larger than this is absurd */
#define ELF_MAX_SHNUM    0xFF00u      /* below SHN_LORESERVE */

int vmm_elf_is_elf(const struct vmm_boot_file *f)
{
	uint8_t id[SELFMAG];

	if (vmm_boot_file_read(f, 0, id, SELFMAG, "ELF magic", NULL) < 0)
		return 0;
	return !memcmp(id, ELFMAG, SELFMAG);
}

static int read_ehdr(const struct vmm_boot_file *f, struct vmm_elf *e, uint64_t *phoff,
		     uint16_t *phentsize, uint16_t *phnum, struct ut_err *err)
{
	union { Elf32_Ehdr h32; Elf64_Ehdr h64; } u;
	int r;

	r = vmm_boot_file_read(f, 0, u.h32.e_ident, EI_NIDENT, "ELF identification", err);
	if (r < 0)
		return -ENOEXEC;
	if (u.h32.e_ident[EI_DATA] != ELFDATA2LSB)
		return ut_errf(err, -ENOEXEC, "big-endian or invalid ELF (EI_DATA %u) is not supported",
			       u.h32.e_ident[EI_DATA]);
	if (u.h32.e_ident[EI_CLASS] == ELFCLASS64) {
		r = vmm_boot_file_read(f, 0, &u.h64, sizeof(u.h64), "ELF64 header", err);
		if (r < 0)
			return -ENOEXEC;
		e->is64 = 1;
		e->type = le16toh(u.h64.e_type);
		e->machine = le16toh(u.h64.e_machine);
		*phoff = le64toh(u.h64.e_phoff);
		*phentsize = le16toh(u.h64.e_phentsize);
		*phnum = le16toh(u.h64.e_phnum);
		e->shoff = le64toh(u.h64.e_shoff);
		e->shentsize = le16toh(u.h64.e_shentsize);
		e->shnum = le16toh(u.h64.e_shnum);
	} else if (u.h32.e_ident[EI_CLASS] == ELFCLASS32) {
		r = vmm_boot_file_read(f, 0, &u.h32, sizeof(u.h32), "ELF32 header", err);
		if (r < 0)
			return -ENOEXEC;
		e->is64 = 0;
		e->type = le16toh(u.h32.e_type);
		e->machine = le16toh(u.h32.e_machine);
		*phoff = le32toh(u.h32.e_phoff);
		*phentsize = le16toh(u.h32.e_phentsize);
		*phnum = le16toh(u.h32.e_phnum);
		e->shoff = le32toh(u.h32.e_shoff);
		e->shentsize = le16toh(u.h32.e_shentsize);
		e->shnum = le16toh(u.h32.e_shnum);
	} else {
		return ut_errf(err, -ENOEXEC, "ELF with invalid class %u", u.h32.e_ident[EI_CLASS]);
	}
	if (e->machine != EM_X86_64 && e->machine != EM_386)
		return ut_errf(err, -ENOEXEC, "ELF for machine %u, not x86", e->machine);
	if (e->type != ET_EXEC && e->type != ET_DYN)
		return ut_errf(err, -ENOEXEC, "ELF of type %u is not an executable", e->type);
	return 0;
}

static void conv_phdr(const struct vmm_elf *e, const uint8_t *raw, struct vmm_elf_phdr *p)
{
	if (e->is64) {
		Elf64_Phdr h;

		memcpy(&h, raw, sizeof(h));
		p->type = le32toh(h.p_type);
		p->offset = le64toh(h.p_offset);
		p->paddr = le64toh(h.p_paddr);
		p->filesz = le64toh(h.p_filesz);
		p->memsz = le64toh(h.p_memsz);
		p->align = le64toh(h.p_align);
	} else {
		Elf32_Phdr h;

		memcpy(&h, raw, sizeof(h));
		p->type = le32toh(h.p_type);
		p->offset = le32toh(h.p_offset);
		p->paddr = le32toh(h.p_paddr);
		p->filesz = le32toh(h.p_filesz);
		p->memsz = le32toh(h.p_memsz);
		p->align = le32toh(h.p_align);
	}
}

int vmm_elf_read(const struct vmm_boot_file *f, struct vmm_elf *e, struct ut_err *err)
{
	uint64_t phoff = 0;
	uint16_t phentsize = 0, phnum = 0;
	size_t want;
	uint8_t *raw = NULL;
	int r;

	memset(e, 0, sizeof(*e));
	r = read_ehdr(f, e, &phoff, &phentsize, &phnum, err);
	if (r < 0)
		goto out;
	want = e->is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
	if (phnum == 0) {
		r = ut_errf(err, -ENOEXEC, "ELF has no program headers");
		goto out;
	}
	if (phnum > VMM_ELF_MAX_PHNUM) {
		r = ut_errf(err, -ENOEXEC, "ELF has %u program headers (more than %u is absurd)",
			    phnum, VMM_ELF_MAX_PHNUM);
		goto out;
	}
	if (phentsize != want) {
		r = ut_errf(err, -ENOEXEC, "ELF program header size is %u, expected %zu",
			    phentsize, want);
		goto out;
	}
	raw = malloc((size_t)phnum * want);
	e->ph = calloc(phnum, sizeof(*e->ph));
	if (!raw || !e->ph) {
		r = ut_errf(err, -ENOMEM, "out of memory for %u program headers", phnum);
		goto out;
	}
	r = vmm_boot_file_read(f, phoff, raw, (uint64_t)phnum * want, "ELF program header table", err);
	if (r < 0) {
		r = -ENOEXEC;
		goto out;
	}
	e->phnum = phnum;
	for (uint32_t i = 0; i < phnum; i++) {
		struct vmm_elf_phdr *p = &e->ph[i];

		conv_phdr(e, raw + i * want, p);
		if (p->type != PT_LOAD && p->type != PT_NOTE)
			continue;
		if (p->offset > f->size || p->filesz > f->size - p->offset) {
			r = ut_errf(err, -ENOEXEC,
				    "ELF segment %u (file offset 0x%llx, %llu bytes) lies beyond the end "
				    "of the file (%llu bytes)", i, (unsigned long long)p->offset,
				    (unsigned long long)p->filesz, (unsigned long long)f->size);
			goto out;
		}
		if (p->type != PT_LOAD)
			continue;
		if (p->filesz > p->memsz) {
			r = ut_errf(err, -ENOEXEC,
				    "ELF segment %u has p_filesz %llu larger than p_memsz %llu", i,
				    (unsigned long long)p->filesz, (unsigned long long)p->memsz);
			goto out;
		}
		if (p->paddr + p->memsz < p->paddr) {
			r = ut_errf(err, -ENOEXEC,
				    "ELF segment %u at 0x%llx with p_memsz 0x%llx wraps around the "
				    "address space", i, (unsigned long long)p->paddr,
				    (unsigned long long)p->memsz);
			goto out;
		}
	}
	r = 0;
out:
	free(raw);
	if (r < 0)
		vmm_elf_free(e);
	return r;
}

void vmm_elf_free(struct vmm_elf *e)
{
	free(e->ph);
	e->ph = NULL;
	e->phnum = 0;
}

/* Search one block of notes. 1 found, 0 not, -ENOEXEC malformed. */
static int scan_notes(const uint8_t *buf, uint64_t len, uint64_t align, const char *where,
		      const char *name, uint32_t type, void *desc, size_t desc_max,
		      size_t *desc_len, struct ut_err *err)
{
	uint64_t pos = 0, namesz, descsz, name_al, desc_al;
	size_t want_namesz = strlen(name) + 1;
	uint32_t t;

	while (len - pos >= 12) {
		uint32_t w[3];

		memcpy(w, buf + pos, sizeof(w));
		namesz = le32toh(w[0]);
		descsz = le32toh(w[1]);
		t = le32toh(w[2]);
		pos += 12;
		name_al = (namesz + align - 1) & ~(align - 1);
		desc_al = (descsz + align - 1) & ~(align - 1);
		if (name_al > len - pos)
			return ut_errf(err, -ENOEXEC,
				       "ELF note in %s has a name size (%llu) beyond its end", where,
				       (unsigned long long)namesz);
		if (namesz == want_namesz && t == type &&
		    !memcmp(buf + pos, name, want_namesz)) {
			pos += name_al;
			if (descsz > len - pos)
				return ut_errf(err, -ENOEXEC,
					       "ELF note '%s' type %u in %s has a descriptor size (%llu) "
					       "beyond its end", name, type, where,
					       (unsigned long long)descsz);
			memcpy(desc, buf + pos, descsz < desc_max ? descsz : desc_max);
			*desc_len = descsz;
			return 1;
		}
		pos += name_al;
		if (descsz > len - pos)
			return ut_errf(err, -ENOEXEC,
				       "ELF note in %s has a descriptor size (%llu) beyond its end",
				       where, (unsigned long long)descsz);
		pos += desc_al < len - pos ? desc_al : len - pos;
	}
	return 0;
}

static int scan_range(const struct vmm_boot_file *f, uint64_t off, uint64_t len, uint64_t align,
		      const char *where, const char *name, uint32_t type, void *desc,
		      size_t desc_max, size_t *desc_len, struct ut_err *err)
{
	uint8_t *buf = NULL;
	int r;

	if (len > NOTE_MAX_BYTES) {
		r = ut_errf(err, -ENOEXEC, "ELF %s is %llu bytes (more than %u is absurd for notes)",
			    where, (unsigned long long)len, NOTE_MAX_BYTES);
		goto out;
	}
	if (!len) {
		r = 0;
		goto out;
	}
	buf = malloc(len);
	if (!buf) {
		r = ut_errf(err, -ENOMEM, "out of memory for ELF notes");
		goto out;
	}
	r = vmm_boot_file_read(f, off, buf, len, where, err);
	if (r < 0) {
		r = -ENOEXEC;
		goto out;
	}
	r = scan_notes(buf, len, align == 8 ? 8 : 4, where, name, type, desc, desc_max,
		       desc_len, err);
out:
	free(buf);
	return r;
}

static int scan_sections(const struct vmm_boot_file *f, const struct vmm_elf *e,
			 const char *name, uint32_t type, void *desc, size_t desc_max,
			 size_t *desc_len, struct ut_err *err)
{
	size_t want = e->is64 ? sizeof(Elf64_Shdr) : sizeof(Elf32_Shdr);
	uint8_t *raw = NULL;
	char where[48];
	int r = 0;

	if (!e->shoff || !e->shnum)
		goto out;
	if (e->shentsize != want || e->shnum > ELF_MAX_SHNUM) {
		r = ut_errf(err, -ENOEXEC, "ELF section header table is malformed "
			    "(%u entries of %u bytes)", e->shnum, e->shentsize);
		goto out;
	}
	raw = malloc((size_t)e->shnum * want);
	if (!raw) {
		r = ut_errf(err, -ENOMEM, "out of memory for ELF section headers");
		goto out;
	}
	r = vmm_boot_file_read(f, e->shoff, raw, (uint64_t)e->shnum * want,
			       "ELF section header table", err);
	if (r < 0) {
		r = -ENOEXEC;
		goto out;
	}
	for (unsigned i = 0; i < e->shnum; i++) {
		uint64_t off, size, align;
		uint32_t stype;

		if (e->is64) {
			Elf64_Shdr s;

			memcpy(&s, raw + i * want, sizeof(s));
			stype = le32toh(s.sh_type);
			off = le64toh(s.sh_offset);
			size = le64toh(s.sh_size);
			align = le64toh(s.sh_addralign);
		} else {
			Elf32_Shdr s;

			memcpy(&s, raw + i * want, sizeof(s));
			stype = le32toh(s.sh_type);
			off = le32toh(s.sh_offset);
			size = le32toh(s.sh_size);
			align = le32toh(s.sh_addralign);
		}
		if (stype != SHT_NOTE)
			continue;
		snprintf(where, sizeof(where), "note section %u", i);
		r = scan_range(f, off, size, align, where, name, type, desc, desc_max, desc_len, err);
		if (r)
			goto out;
	}
	r = 0;
out:
	free(raw);
	return r;
}

int vmm_elf_find_note(const struct vmm_boot_file *f, const struct vmm_elf *e,
		      const char *name, uint32_t type, void *desc, size_t desc_max,
		      size_t *desc_len, struct ut_err *err)
{
	char where[48];
	int r;

	for (uint32_t i = 0; i < e->phnum; i++) {
		const struct vmm_elf_phdr *p = &e->ph[i];

		if (p->type != PT_NOTE)
			continue;
		snprintf(where, sizeof(where), "note segment %u", i);
		r = scan_range(f, p->offset, p->filesz, p->align, where, name, type, desc,
			       desc_max, desc_len, err);
		if (r)
			return r;
	}
	return scan_sections(f, e, name, type, desc, desc_max, desc_len, err);
}

void vmm_elf_describe(const struct vmm_elf *e, char *buf, size_t len)
{
	const char *m = e->machine == EM_X86_64 ? "x86-64" : e->machine == EM_386 ? "i386" : "?";

	snprintf(buf, len, "ELF%d %s %s", e->is64 ? 64 : 32, m,
		 e->type == ET_EXEC ? "executable" : "shared object");
}
