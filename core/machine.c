/* core/machine.c — assemble, restore, run and save a machine; see machine.h. */
#include "core/machine.h"
#include "core/control.h"
#include "core/layout.h"
#include "core/pci.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* The VM (on @ram if given) and its devices, in a fixed order: device ids and
 * PCI slots are the same every time for the same config, which is what a
 * restore relies on. */
static int machine_build(struct vmm_machine *m, const struct vmm_machine_cfg *cfg, uint8_t *ram,
			 int ram_fd, struct ut_err *err)
{
	char opts[4200];
	int r;

	m->sig_fd = -1;
	m->cfg = *cfg;
	r = vmm_vm_create(&m->vm, &(struct vmm_vm_opts){ .ram_size = cfg->mem, .ram = ram,
			  .ram_fd = ram_fd, .ncpus = cfg->cpus, .no_pit = cfg->no_pit }, err);
	if (r)
		return r;
	if (snprintf(opts, sizeof(opts), "console=%s%s%s", cfg->console ? cfg->console : "stdio",
		     cfg->console_socket ? ",socket=" : "",
		     cfg->console_socket ? cfg->console_socket : "") >= (int)sizeof(opts))
		return ut_errf(err, -ENAMETOOLONG, "console paths too long");
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
	return r;
}

int vmm_machine_create(struct vmm_machine *m, const struct vmm_machine_cfg *cfg, struct ut_err *err)
{
	struct vmm_boot_cfg boot = {
		.kernel_path = cfg->kernel, .initrd_path = cfg->initrd,
		.cmdline = cfg->cmdline ? cfg->cmdline : "", .ncpus = cfg->cpus,
	};
	int r;

	memset(m, 0, sizeof(*m));
	r = machine_build(m, cfg, NULL, -1, err);
	if (!r)
		r = vmm_boot_load(&m->vm.mem, &boot, &m->entry, err);
	if (!r)
		r = vmm_boot_setup_cpu(m->vm.vcpus[0].fd, &m->entry, err);
	if (r)
		vmm_machine_destroy(m);
	return r;
}

int vmm_machine_restore(struct vmm_machine *m, const char *path, const char *const *disks,
			int ndisks, const char *console, const char *console_socket, unsigned flags,
			struct ut_err *err)
{
	struct vmm_machine_cfg cfg;
	uint8_t *ram = NULL;
	int ram_fd = -1, r;

	memset(m, 0, sizeof(*m));
	m->sig_fd = -1;
	memset(&cfg, 0, sizeof(cfg));
	r = vmm_state_open(path, flags, &m->sf, err);
	if (r)
		return r;
	vmm_state_machine_cfg(m->sf, &cfg);
	if (ndisks) {
		if (ndisks != cfg.ndisks) {
			r = ut_errf(err, -EINVAL, "'%s' was saved with %d disks; %d --disk given",
				    path, cfg.ndisks, ndisks);
			goto out;
		}
		for (int i = 0; i < ndisks; i++)
			cfg.disks[i] = disks[i];
	}
	cfg.console = console;
	cfg.console_socket = console_socket;
	r = vmm_state_map_ram(m->sf, &ram, &ram_fd, err);
	if (r)
		goto out;
	if ((flags & VMM_STATE_F_VERIFY) && ram_fd < 0) {
		r = vmm_state_verify_ram(m->sf, ram, err);
		if (r) {
			munmap(ram, cfg.mem);
			goto out;
		}
	}
	r = machine_build(m, &cfg, ram, ram_fd, err);
	if (!r)
		r = vmm_state_apply(m->sf, m, err);
	if (r)
		ut_err_prefix(err, "unable to restore '%s'", path);
out:
	if (r)
		vmm_machine_destroy(m);
	return r;
}

static void machine_save(struct vmm_machine *m)
{
	bool was_paused = vmm_vm_paused(&m->vm);
	int r;

	ut_err_clear(&m->save_err);
	if (m->disk_job) {
		/* its switch would come after the state file names the image:
		 * the save waits for its end (vmm_machine_disk_job_ended) */
		m->save_deferred = true;
		return;
	}
	r = vmm_state_save(m, m->save_path, m->save_flags, &m->last_save, &m->save_err);
	if (!r)
		m->saves++;
	if (!r && m->save_resume) {
		if (!was_paused)
			vmm_vm_resume(&m->vm);
		return;
	}
	/* saved (the run ends cleanly) or failed (the run goes on as it was:
	 * nothing lost) */
	if (!r)
		vmm_vm_request_exit(&m->vm, VMM_EXIT_QUIT, 0);
	else if (!was_paused)
		vmm_vm_resume(&m->vm);
}

void vmm_machine_disk_job_ended(struct vmm_machine *m, bool cancelled)
{
	if (!m->save_deferred)
		return;
	m->save_deferred = false;
	if (cancelled)
		ut_errf(&m->save_err, -ECANCELED, "unable to save the VM to '%s': the run ended "
			"while a disk snapshot was in progress, before the save could be made",
			m->save_path);
	else
		machine_save(m);
}

static void machine_signal(void *opaque, uint32_t events)
{
	struct vmm_machine *m = opaque;
	struct signalfd_siginfo si;

	(void)events;
	if (read(m->sig_fd, &si, sizeof(si)) != sizeof(si))
		return;
	if (si.ssi_signo == SIGUSR2) {
		if (m->save_path)
			machine_save(m);
		return;
	}
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
	sigaddset(&set, SIGUSR2);
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
	if (m->on_running) {
		struct ut_err herr = { 0, "" };

		if (m->on_running(m, m->on_running_opaque, &herr))
			vmm_vm_fatal(&m->vm, "%s", herr.msg[0] ? herr.msg : "the run hook failed");
	}
	r = vmm_loop_run(&m->vm.loop);
	if (r)
		vmm_vm_fatal(&m->vm, "event loop failed: %s", strerror(-r));
	vmm_machine_disk_job_cancel(m);   /* the run ended before its answer */
	vmm_vm_request_exit(&m->vm, VMM_EXIT_QUIT, 0);
	vmm_vm_join(&m->vm);
	if (m->vm.exit_kind == VMM_EXIT_FATAL)
		ut_errf(err, -EIO, "%s", m->vm.fatal.msg[0] ? m->vm.fatal.msg : "the VM failed");
	else if (m->save_err.code)
		*err = m->save_err;
	return vmm_vm_exit_status(&m->vm);
}

int vmm_machine_control(struct vmm_machine *m, const char *path, struct ut_err *err)
{
	int r = vmm_control_open(m, path, &m->ctl, err);

	if (r == 0)
		m->vm.resumable = true;   /* "resume" can end a pause on an error */
	return r;
}

void vmm_machine_power_button(struct vmm_machine *m)
{
	vmm_irq_pulse(&m->vm, VMM_IRQ_GED);
}

void vmm_machine_destroy(struct vmm_machine *m)
{
	vmm_machine_disk_job_cancel(m);   /* before the control socket closes */
	vmm_control_close(m->ctl);
	m->ctl = NULL;
	vmm_vm_destroy(&m->vm);
	if (m->sig_fd >= 0)
		close(m->sig_fd);
	m->sig_fd = -1;
	vmm_state_close(m->sf);
	m->sf = NULL;
	for (int i = 0; i < VMM_MAX_DISKS; i++) {
		free(m->disk_opts[i]);
		m->disk_opts[i] = NULL;
	}
}
