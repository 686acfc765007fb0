/* cli/cli-catalog.c — helpers shared by the catalog commands. */
#include "cli/cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "catalog/catalog.h"

int cli_catalog_open(struct cat_db **db)
{
	struct ut_err err;

	ut_err_clear(&err);
	if (cat_open(db, NULL, &err) < 0) {
		cli_error_err(&err);
		return -1;
	}
	return 0;
}

const char *cli_format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	unsigned u = 0;
	uint64_t v = bytes;

	while (u + 1 < sizeof(units) / sizeof(units[0]) && v >= 1024 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (v >= 10240 && u + 1 < sizeof(units) / sizeof(units[0])) {
		/* not a round number of the next unit: one decimal */
		snprintf(buf, len, "%.1f %s", (double)bytes / (double)(1ULL << (10 * (u + 1))),
			 units[u + 1]);
		return buf;
	}
	snprintf(buf, len, "%" PRIu64 " %s", v, units[u]);
	return buf;
}

int cli_json_print(struct json_object *obj)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY |
						       JSON_C_TO_STRING_SPACED |
						       JSON_C_TO_STRING_NOSLASHESCAPE);

	if (!s || puts(s) == EOF) {
		cli_error("unable to write JSON output");
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}

int cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
	}
	return 0;
}
