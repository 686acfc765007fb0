/* catalog/paths.c — where the catalog and the runtime files live. */
#include "catalog/db.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int dup_out(char **out, const char *fmt, const char *a, const char *b,
		   struct ut_err *err)
{
	if (asprintf(out, fmt, a, b) < 0) {
		*out = NULL;
		return ut_errf(err, -ENOMEM, "out of memory");
	}
	return 0;
}

int cat_home_dir(char **out, struct ut_err *err)
{
	const char *home = getenv("COWVM_HOME");
	struct passwd *pw;

	if (home && *home) {
		if (home[0] != '/')
			return ut_errf(err, -EINVAL, "COWVM_HOME must be an absolute path, not '%s'",
				       home);
		return dup_out(out, "%s%s", home, "", err);
	}
	home = getenv("HOME");
	if (!home || home[0] != '/') {
		pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : NULL;
	}
	if (!home || home[0] != '/')
		return ut_errf(err, -ENOENT, "unable to find the catalog: set COWVM_HOME or HOME");
	return dup_out(out, "%s%s", home, "/.local/share/cowvm", err);
}

int cat_run_dir(const char *home, char **out, struct ut_err *err)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");

	if (xdg && xdg[0] == '/')
		return dup_out(out, "%s%s", xdg, "/cowvm", err);
	return dup_out(out, "%s%s", home, "/run", err);
}

static int ensure_dir(const char *dir, struct ut_err *err)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return ut_errf_sys(err, -errno, "unable to create directory '%s'", dir);
	return 0;
}

void cat_vm_paths_clear(struct cat_vm_paths *p)
{
	free(p->ctl_socket);
	free(p->console_socket);
	free(p->console_log);
	memset(p, 0, sizeof(*p));
}

int cat_vm_paths(const struct cat_db *db, const char *name, struct cat_vm_paths *out,
		 struct ut_err *err)
{
	struct sockaddr_un sun;
	char *logs = NULL;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = cat_name_check(name, err);
	if (ret < 0)
		goto out;
	ret = ensure_dir(db->run_dir, err);
	if (ret < 0)
		goto out;
	ret = dup_out(&logs, "%s%s", db->home, "/logs", err);
	if (ret < 0)
		goto out;
	ret = ensure_dir(logs, err);
	if (ret < 0)
		goto out;
	if ((ret = dup_out(&out->ctl_socket, "%s/%s.ctl", db->run_dir, name, err)) < 0 ||
	    (ret = dup_out(&out->console_socket, "%s/%s.console", db->run_dir, name, err)) < 0 ||
	    (ret = dup_out(&out->console_log, "%s/%s.log", logs, name, err)) < 0)
		goto out;
	if (strlen(out->console_socket) >= sizeof(sun.sun_path)) {
		ret = ut_errf(err, -ENAMETOOLONG, "the runtime path '%s' is longer than a UNIX "
			      "socket path may be (%zu bytes): set XDG_RUNTIME_DIR or COWVM_HOME "
			      "to a shorter directory", out->console_socket,
			      sizeof(sun.sun_path) - 1);
		goto out;
	}
out:
	free(logs);
	if (ret < 0)
		cat_vm_paths_clear(out);
	return ret;
}
