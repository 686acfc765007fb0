/* tests/unit/test-console.c — the serial console's socket (no KVM): guest
 * output (THR writes) reaches every attached client and the log file; what a
 * client sends arrives in the UART's receive FIFO (RBR, LSR.DR); a client that
 * goes away is dropped; the socket is 0600 and removed at exit; a path that
 * is a regular file is refused. */
#include "tests/unit/test-vm-util.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#define COM1 0x3F8

static int attach(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		tv_die("connect to the console socket");
	return fd;
}

/* Read what is there within ~1 s into @buf (NUL-terminated). */
static size_t drain(int fd, char *buf, size_t size)
{
	size_t have = 0;

	for (int i = 0; i < 100 && have < size - 1; i++) {
		ssize_t n = recv(fd, buf + have, size - 1 - have, MSG_DONTWAIT);

		if (n > 0) {
			have += (size_t)n;
			continue;
		}
		if (have)
			break;
		usleep(10000);
	}
	buf[have] = '\0';
	return have;
}

static void guest_puts(struct vmm_vm *vm, const char *s)
{
	for (; *s; s++)
		tv_io_wr(&vm->pio, COM1, 1, (uint8_t)*s);
}

int main(void)
{
	char dir[] = "/tmp/cowvm-console.XXXXXX", sock[256], logp[256], opts[600], buf[256];
	struct tv_vm t;
	struct stat st;
	struct ut_err err = { 0, "" };
	int a, b, fd;

	if (!mkdtemp(dir))
		tv_die("mkdtemp");
	snprintf(sock, sizeof(sock), "%s/console.sock", dir);
	snprintf(logp, sizeof(logp), "%s/console.log", dir);
	tv_vm_init(&t, 16 << 20);
	snprintf(opts, sizeof(opts), "console=file:%s,socket=%s", logp, sock);
	CHECK_EQ(vmm_device_create(&t.vm, "serial", opts, &err), 0);
	CHECK(stat(sock, &st) == 0 && S_ISSOCK(st.st_mode), "console socket exists");
	CHECK_EQ(st.st_mode & 0777, 0600);

	a = attach(sock);
	b = attach(sock);
	vmm_loop_run_once(&t.vm.loop, 1000);   /* accept */
	vmm_loop_run_once(&t.vm.loop, 100);
	guest_puts(&t.vm, "hello console\n");
	drain(a, buf, sizeof(buf));
	CHECK_STR(buf, "hello console\n");
	drain(b, buf, sizeof(buf));
	CHECK_STR(buf, "hello console\n");
	fd = open(logp, O_RDONLY);
	CHECK(fd >= 0 && read(fd, buf, sizeof(buf) - 1) == 14, "log file has the output");
	if (fd >= 0)
		close(fd);

	/* input: a client's bytes land in the receive FIFO */
	CHECK_EQ(send(a, "hi", 2, 0), 2);
	for (int i = 0; i < 10 && !(tv_io_rd(&t.vm.pio, COM1 + 5, 1) & 1); i++)
		vmm_loop_run_once(&t.vm.loop, 100);
	CHECK_EQ(tv_io_rd(&t.vm.pio, COM1 + 5, 1) & 1, 1);   /* LSR.DR */
	CHECK_EQ(tv_io_rd(&t.vm.pio, COM1, 1), 'h');
	CHECK_EQ(tv_io_rd(&t.vm.pio, COM1, 1), 'i');
	CHECK_EQ(tv_io_rd(&t.vm.pio, COM1 + 5, 1) & 1, 0);

	/* a client that leaves is dropped; the other one still gets output */
	close(a);
	for (int i = 0; i < 3; i++)
		vmm_loop_run_once(&t.vm.loop, 50);
	guest_puts(&t.vm, "after\n");
	drain(b, buf, sizeof(buf));
	CHECK_STR(buf, "after\n");
	close(b);

	tv_vm_exit(&t);
	CHECK(stat(sock, &st) < 0, "console socket removed at exit");

	/* a regular file in the way is refused and left alone */
	tv_vm_init(&t, 16 << 20);
	fd = open(sock, O_CREAT | O_WRONLY, 0600);
	if (fd >= 0)
		close(fd);
	snprintf(opts, sizeof(opts), "console=none,socket=%s", sock);
	CHECK(vmm_device_create(&t.vm, "serial", opts, &err) < 0, "socket over a regular file refused");
	CHECK_STR(err.msg, "exists and is not a socket");
	CHECK(stat(sock, &st) == 0 && S_ISREG(st.st_mode), "the file is still there");
	tv_vm_exit(&t);
	unlink(sock);
	unlink(logp);
	rmdir(dir);
	return tv_finish("test-console");
}
