/* core/machine.c — assemble and run a machine; see machine.h. */
#include "core/machine.h"
#include "core/pci.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

int vmm_machine_create(struct vmm_machine *m, const struct vmm_machine_cfg *cfg, struct ut_err *err)
{
	struct vmm_boot_cfg boot = {
		.kernel_path = cfg->kernel, .initrd_path = cfg->initrd,
		.cmdline = cfg->cmdline ? cfg->cmdline : "", .ncpus = cfg->cpus,
	};
	char opts[4200];
	int r;

	memset(m, 0, sizeof(*m));
	m->sig_fd = -1;
	r = vmm_vm_create(&m->vm, cfg->mem, cfg->cpus, err);
	if (r)
		return r;
	snprintf(opts, sizeof(opts), "console=%s", cfg->console ? cfg->console : "stdio");
	r = vmm_device_create(&m->vm, "serial", opts, err);
	if (!r)
		r = vmm_device_create(&m->vm, "i8042", "", err);
	if (!r)
		r = vmm_device_create(&m->vm, "debug-exit", "", err);
	if (!r)
		r = vmm_device_create(&m->vm, "acpi-sleep", "", err);
	if (!r)
		r = vmm_pci_init(&m->vm, err);
	for (int i = 0; !r && i < cfg->ndisks; i++)
		r = vmm_device_create(&m->vm, "virtio-blk", cfg->disks[i], err);
	if (!r && cfg->rng)
		r = vmm_device_create(&m->vm, "virtio-rng", "", err);
	if (!r)
		r = vmm_boot_load(&m->vm.mem, &boot, &m->entry, err);
	if (!r)
		r = vmm_boot_setup_cpu(m->vm.vcpus[0].fd, &m->entry, err);
	if (r)
		vmm_machine_destroy(m);
	return r;
}

static void machine_signal(void *opaque, uint32_t events)
{
	struct vmm_machine *m = opaque;
	struct signalfd_siginfo si;

	(void)events;
	if (read(m->sig_fd, &si, sizeof(si)) != sizeof(si))
		return;
	vmm_vm_request_exit(&m->vm, VMM_EXIT_SIGNAL, (int)si.ssi_signo);
}

int vmm_machine_run(struct vmm_machine *m, struct ut_err *err)
{
	sigset_t set;
	int r;

	/* Block the stop signals in every thread (vCPU threads inherit the mask)
	 * and take them through the event loop. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	m->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (m->sig_fd < 0)
		return ut_errf_sys(err, -errno, "unable to create a signalfd");
	r = vmm_loop_add(&m->vm.loop, m->sig_fd, EPOLLIN, machine_signal, m);
	if (r)
		return ut_errf_sys(err, r, "unable to watch signals");
	r = vmm_vm_start(&m->vm, err);
	if (r)
		return r;
	r = vmm_loop_run(&m->vm.loop);
	if (r)
		vmm_vm_fatal(&m->vm, "event loop failed: %s", strerror(-r));
	vmm_vm_request_exit(&m->vm, VMM_EXIT_QUIT, 0);
	vmm_vm_join(&m->vm);
	if (m->vm.exit_kind == VMM_EXIT_FATAL) {
		ut_errf(err, -EIO, "%s", m->vm.fatal.msg[0] ? m->vm.fatal.msg : "the VM failed");
	}
	return vmm_vm_exit_status(&m->vm);
}

void vmm_machine_destroy(struct vmm_machine *m)
{
	vmm_vm_destroy(&m->vm);
	if (m->sig_fd >= 0)
		close(m->sig_fd);
	m->sig_fd = -1;
}
