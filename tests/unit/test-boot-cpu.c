/* tests/unit/test-boot-cpu.c — vmm_boot_setup_cpu() under real KVM: a
 * synthetic bzImage whose startup_64 runs a few instructions that only give the
 * expected result in 64-bit mode with the identity map (mov rax, imm64; load a
 * byte of boot_params through rsi), then `out` to port 0x501; and a synthetic
 * PVH ELF that reads hvm_start_info's magic through ebx in 32-bit protected
 * mode. The registers and the I/O exit are checked. Skips (77) without
 * /dev/kvm.
 */
#include "test-boot-util.h"

#include <linux/kvm.h>
#include <signal.h>
#include <sys/ioctl.h>

#define RAM (32ULL << 20)

static int kvm = -1;

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "test-boot-cpu: guest did not exit within 60 s\n";
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

/* Boot @kernel in a fresh VM; return the exit data. */
static void run(const char *what, const char *kernel, enum vmm_kernel_format want_fmt,
		struct kvm_regs *regs, struct kvm_sregs *sregs, uint32_t *io_data, int *io_size)
{
	struct tb_ram r;
	struct vmm_boot_cfg cfg = { .kernel_path = kernel, .cmdline = "x", .ncpus = 1 };
	struct vmm_boot_entry be;
	struct ut_err err;
	struct kvm_userspace_memory_region region;
	struct kvm_cpuid2 *cpuid;
	struct kvm_run *run_page;
	int vm, vcpu, mmap_size, rc;

	if (tb_ram_init(&r, RAM) < 0)
		exit(1);
	rc = vmm_boot_load(&r.mem, &cfg, &be, &err);
	CHECK(rc == 0, "%s: load: %s", what, err.msg);
	CHECK_EQ(be.format, want_fmt);
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		printf("skip: KVM_CREATE_VM failed: %s\n", strerror(errno));
		exit(77);
	}
	ioctl(vm, KVM_SET_TSS_ADDR, 0xFFFBD000UL);
	region = (struct kvm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = 0, .memory_size = RAM,
		.userspace_addr = (uintptr_t)r.mem.base,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
		perror("KVM_SET_USER_MEMORY_REGION");
		exit(1);
	}
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vcpu < 0 || mmap_size <= 0) {
		perror("KVM_CREATE_VCPU");
		exit(1);
	}
	run_page = mmap(NULL, (size_t)mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	cpuid = calloc(1, sizeof(*cpuid) + 256 * sizeof(cpuid->entries[0]));
	cpuid->nent = 256;
	if (run_page == MAP_FAILED || ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0 ||
	    ioctl(vcpu, KVM_SET_CPUID2, cpuid) < 0) {
		perror("vcpu setup");
		exit(1);
	}
	free(cpuid);
	rc = vmm_boot_setup_cpu(vcpu, &be, &err);
	CHECK(rc == 0, "%s: setup_cpu: %s", what, err.msg);
	if (ioctl(vcpu, KVM_GET_SREGS, sregs) < 0)
		perror("KVM_GET_SREGS");
	alarm(60);
	do
		rc = ioctl(vcpu, KVM_RUN, 0);
	while (rc < 0 && errno == EINTR);
	alarm(0);
	CHECK(rc == 0, "%s: KVM_RUN: %s", what, strerror(errno));
	CHECK(run_page->exit_reason == KVM_EXIT_IO, "%s: exit reason %u (internal error suberror %u)",
	      what, run_page->exit_reason, run_page->internal.suberror);
	*io_size = 0;
	if (run_page->exit_reason == KVM_EXIT_IO) {
		CHECK_EQ(run_page->io.port, 0x501);
		CHECK_EQ(run_page->io.direction, KVM_EXIT_IO_OUT);
		*io_size = run_page->io.size;
		*io_data = 0;
		memcpy(io_data, (uint8_t *)run_page + run_page->io.data_offset, run_page->io.size);
	}
	if (ioctl(vcpu, KVM_GET_REGS, regs) < 0)
		perror("KVM_GET_REGS");
	munmap(run_page, (size_t)mmap_size);
	close(vcpu);
	close(vm);
	tb_ram_exit(&r);
}

static void test_bzimage(void)
{
	static const uint8_t code64[] = {
		0x48, 0xB8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* mov rax, 0x1122334455667788 */
		0x8A, 0x9E, 0x10, 0x02, 0x00, 0x00,  /* mov bl, [rsi + 0x210] (type_of_loader) */
		0x66, 0xBA, 0x01, 0x05,              /* mov dx, 0x501 */
		0xEE,                                /* out dx, al */
		0xF4,                                /* hlt */
	};
	uint8_t code[0x1000];
	struct tb_bz z;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint32_t data = 0;
	int size;
	size_t len;
	uint8_t *img;

	memset(code, 0xF4, sizeof(code));
	memcpy(code + 0x200, code64, sizeof(code64));   /* startup_64 = start + 0x200 */
	z = tb_bz_default(code, sizeof(code));
	z.init_size = 0x100000;
	img = tb_bz_build(&z, &len);
	run("bzImage", tb_write("bz-cpu", img, len), VMM_KERNEL_BZIMAGE, &regs, &sregs, &data, &size);
	free(img);

	CHECK_EQ(sregs.cs.selector, 0x10);
	CHECK_EQ(sregs.cs.l, 1);
	CHECK_EQ(sregs.cs.db, 0);
	CHECK_EQ(sregs.ds.selector, 0x18);
	CHECK_EQ(sregs.ss.selector, 0x18);
	CHECK_EQ(sregs.cr0 & 0x80000001, 0x80000001);
	CHECK_EQ(sregs.cr3, VMM_BOOT_PML4_GPA);
	CHECK_EQ(sregs.cr4 & 0x20, 0x20);
	CHECK_EQ(sregs.efer & 0x500, 0x500);
	CHECK_EQ(sregs.gdt.base, VMM_BOOT_GDT_GPA);
	CHECK_EQ(size, 1);
	CHECK_EQ(data, 0x88);
	CHECK_EQ(regs.rax, 0x1122334455667788ULL);
	CHECK_EQ(regs.rbx & 0xFF, 0xFF);
	CHECK_EQ(regs.rsi, VMM_BOOT_PARAMS_GPA);
	printf("  bzImage: 64-bit entry ran: rax=0x%llx bl=0x%llx rip=0x%llx\n",
	       (unsigned long long)regs.rax, (unsigned long long)(regs.rbx & 0xFF),
	       (unsigned long long)regs.rip);
}

static void test_pvh(void)
{
	static const uint8_t code32[] = {
		0x8B, 0x03,                          /* mov eax, [ebx] */
		0x66, 0xBA, 0x01, 0x05,              /* mov dx, 0x501 */
		0xEF,                                /* out dx, eax */
		0xF4,                                /* hlt */
	};
	struct tb_elf e = tb_elf_default();
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint32_t data = 0;
	int size;
	size_t len;
	uint8_t *img;

	e.entry = 0x100000;
	img = tb_elf_build(&e, &len);
	memcpy(img + TB_ELF_DATA, code32, sizeof(code32));
	run("PVH", tb_write("pvh-cpu", img, len), VMM_KERNEL_PVH_ELF, &regs, &sregs, &data, &size);
	free(img);

	CHECK_EQ(sregs.cs.selector, 0x10);
	CHECK_EQ(sregs.cs.l, 0);
	CHECK_EQ(sregs.cs.db, 1);
	CHECK_EQ(sregs.cs.limit, 0xFFFFFFFF);
	CHECK_EQ(sregs.tr.selector, 0x08);
	CHECK_EQ(sregs.tr.type, 0xB);
	CHECK_EQ(sregs.cr0 & 0x80000001, 1);
	CHECK_EQ(sregs.efer & 0x500, 0);
	CHECK_EQ(size, 4);
	CHECK_EQ(data, 0x336ec578);
	CHECK_EQ(regs.rbx, VMM_BOOT_PARAMS_GPA);
	printf("  PVH: 32-bit entry ran: eax=0x%llx ebx=0x%llx rip=0x%llx\n",
	       (unsigned long long)regs.rax, (unsigned long long)regs.rbx,
	       (unsigned long long)regs.rip);
}

int main(void)
{
	signal(SIGALRM, on_alarm);
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		printf("skip: cannot open /dev/kvm: %s\n", strerror(errno));
		return 77;
	}
	test_bzimage();
	test_pvh();
	close(kvm);
	tb_cleanup();
	return tb_finish("test-boot-cpu");
}
