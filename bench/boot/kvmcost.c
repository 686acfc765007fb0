/* bench/boot/kvmcost.c — what the KVM set-up and tear-down steps of a boot
 * cost on this host, one step at a time (used to explain cowvm's boot time;
 * see README.md).
 *
 *   kvmcost [REPS] [MEM_MIB]
 *
 * For each configuration it creates a VM in a forked child, times every
 * ioctl, and then tears the VM down either with close() (as cowvm does) or,
 * for the rows marked "exit", by letting the process exit with the fds still
 * open (as QEMU does), timing close() or the child's exit up to the parent's
 * wait.  Configurations are interleaved; medians in µs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { S_CREATE_VM, S_IRQCHIP, S_PIT, S_MEMFD, S_SLOT, S_VCPU, S_TEARDOWN, S_N };
static const char *step_name[S_N] = {
	"CREATE_VM", "irqchip", "PIT2", "memfd+mmap", "SET_MEM_REGION", "CREATE_VCPU", "teardown",
};

/* Configuration flags: in-kernel IOAPIC+PIC+LAPIC (KVM_CREATE_IRQCHIP), in-kernel
 * PIT, guest RAM slot, one vCPU, tear down by exit instead of close(), RAM
 * anonymous instead of memfd, split irqchip (LAPIC only), RAM slot before the
 * irqchip. */
enum {
	C_IRQCHIP = 1, C_PIT = 2, C_MEM = 4, C_VCPU = 8, C_EXIT = 16, C_ANON = 32,
	C_SPLIT = 64, C_MEMFIRST = 128,
};

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Guest RAM: a memfd mapped shared (as cowvm) or anonymous memory (as QEMU),
 * then one memory slot over all of it. */
static void add_ram(int cfg, uint64_t mem, int vm, int *fdp, void **ramp, long long *t)
{
	struct kvm_userspace_memory_region r = { .slot = 0, .guest_phys_addr = 0, .memory_size = mem };
	long long a = now_ns();
	int fd = -1;
	void *ram;

	if (cfg & C_ANON) {
		ram = mmap(NULL, mem, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	} else {
		fd = memfd_create("kvmcost-ram", MFD_CLOEXEC);
		if (fd < 0 || ftruncate(fd, (off_t)mem) < 0)
			_exit(7);
		ram = mmap(NULL, mem, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	}
	if (ram == MAP_FAILED)
		_exit(8);
	t[S_MEMFD] = now_ns() - a;
	r.userspace_addr = (uint64_t)(uintptr_t)ram;
	a = now_ns();
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		_exit(9);
	t[S_SLOT] = now_ns() - a;
	*fdp = fd;
	*ramp = ram;
}

/* Child: do the steps of configuration cfg; write the step times (ns) and the
 * time just before exit to the pipe. */
static void child(int cfg, uint64_t mem, int wfd)
{
	long long t[S_N + 1] = { 0 }, a;
	int kvm, vm, fd = -1, vcpu = -1;
	void *ram = NULL;

	alarm(30);	/* bounded: SIGALRM ends a child stuck in an ioctl */
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		_exit(3);
	a = now_ns();
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	t[S_CREATE_VM] = now_ns() - a;
	if (vm < 0)
		_exit(4);
	if ((cfg & C_MEM) && (cfg & C_MEMFIRST))
		add_ram(cfg, mem, vm, &fd, &ram, t);
	if (cfg & C_IRQCHIP) {
		a = now_ns();
		if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
			_exit(5);
		t[S_IRQCHIP] = now_ns() - a;
	}
	if (cfg & C_SPLIT) {
		/* What QEMU microvm does: LAPIC in KVM, IOAPIC/PIC/PIT in userspace. */
		struct kvm_enable_cap cap = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { 24 } };

		a = now_ns();
		if (ioctl(vm, KVM_ENABLE_CAP, &cap) < 0)
			_exit(5);
		t[S_IRQCHIP] = now_ns() - a;
	}
	if (cfg & C_PIT) {
		struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };

		a = now_ns();
		if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0)
			_exit(6);
		t[S_PIT] = now_ns() - a;
	}
	if ((cfg & C_MEM) && !(cfg & C_MEMFIRST))
		add_ram(cfg, mem, vm, &fd, &ram, t);
	if (cfg & C_VCPU) {
		a = now_ns();
		vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
		if (vcpu < 0)
			_exit(10);
		t[S_VCPU] = now_ns() - a;
	}
	if (!(cfg & C_EXIT)) {
		a = now_ns();
		if (vcpu >= 0)
			close(vcpu);
		close(vm);
		t[S_TEARDOWN] = now_ns() - a;
		if (ram)
			munmap(ram, mem);
		if (fd >= 0)
			close(fd);
	}
	t[S_N] = now_ns();
	if (write(wfd, t, sizeof(t)) != sizeof(t))
		_exit(11);
	_exit(0);
}

static int cmp(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	int reps = argc > 1 ? atoi(argv[1]) : 9;
	uint64_t mem = (argc > 2 ? strtoull(argv[2], NULL, 0) : 256) << 20;
	static const struct { int cfg; const char *name; } cfgs[] = {
		{ 0, "VM only" },
		{ C_MEM, "+RAM (memfd)" },
		{ C_MEM | C_ANON, "+RAM (anonymous)" },
		{ C_IRQCHIP, "+irqchip" },
		{ C_IRQCHIP | C_PIT, "+irqchip+PIT" },
		{ C_IRQCHIP | C_PIT | C_MEM | C_VCPU, "+irqchip+PIT+RAM+vCPU (cowvm now)" },
		{ C_IRQCHIP | C_PIT | C_MEM | C_VCPU | C_EXIT, "+irqchip+PIT+RAM+vCPU, exit" },
		{ C_IRQCHIP | C_MEM | C_VCPU, "+irqchip+RAM+vCPU (no PIT)" },
		{ C_IRQCHIP | C_MEM | C_VCPU | C_EXIT, "+irqchip+RAM+vCPU (no PIT), exit" },
		{ C_MEMFIRST | C_IRQCHIP | C_MEM | C_VCPU, "RAM first, +irqchip+vCPU (no PIT)" },
		{ C_SPLIT | C_MEM | C_VCPU, "+split irqchip+RAM+vCPU" },
		{ C_SPLIT | C_MEM | C_ANON | C_VCPU | C_EXIT, "+split irqchip+anon RAM+vCPU, exit (QEMU)" },
	};
	const int ncfg = sizeof(cfgs) / sizeof(cfgs[0]);
	long long *res = calloc((size_t)reps * ncfg * S_N, sizeof(long long));

	if (reps < 1 || !res)
		return 2;
	alarm(600);	/* bounded as a whole, too */
	/* Interleave the configurations so that load drift hits all alike. */
	for (int r = 0; r < reps; r++) {
		for (int c = 0; c < ncfg; c++) {
			long long t[S_N + 1];
			int p[2], st;
			pid_t pid;

			if (pipe(p) < 0)
				return 2;
			pid = fork();
			if (pid < 0)
				return 2;
			if (pid == 0) {
				close(p[0]);
				child(cfgs[c].cfg, mem, p[1]);
			}
			close(p[1]);
			if (read(p[0], t, sizeof(t)) != sizeof(t)) {
				waitpid(pid, &st, 0);
				fprintf(stderr, "kvmcost: child failed (status %d)\n", WEXITSTATUS(st));
				return 1;
			}
			close(p[0]);
			waitpid(pid, &st, 0);
			if (cfgs[c].cfg & C_EXIT)
				t[S_TEARDOWN] = now_ns() - t[S_N];
			for (int s = 0; s < S_N; s++)
				res[((size_t)c * S_N + s) * reps + r] = t[s];
		}
	}
	printf("median µs over %d runs, guest RAM %llu MiB\n%-42s", reps,
	       (unsigned long long)(mem >> 20), "configuration");
	for (int s = 0; s < S_N; s++)
		printf(" %10s", step_name[s]);
	printf("\n");
	for (int c = 0; c < ncfg; c++) {
		printf("%-42s", cfgs[c].name);
		for (int s = 0; s < S_N; s++) {
			long long *v = &res[((size_t)c * S_N + s) * reps];

			qsort(v, (size_t)reps, sizeof(*v), cmp);
			if (v[reps - 1] == 0)
				printf(" %10s", "-");
			else
				printf(" %10.0f", (reps % 2 ? v[reps / 2] : (v[reps / 2 - 1] + v[reps / 2]) / 2) / 1e3);
		}
		printf("\n");
	}
	return 0;
}
