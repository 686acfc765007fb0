/* cli/cmd-image-check.c — `cowvm image check FILE [--repair leaks|all] [--json]
 * [-U]`. Exit status as qemu-img check: 0 clean, 2 corruptions left, 3 only
 * leaks left, 1 the check could not run. The image is locked (cow/lock.h)
 * for the whole check: shared, for writing with --repair, not at all with -U. */
#include "cli/cli.h"
#include "cli/image.h"
#include "cow/lock.h"

#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cli_image_check(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "repair", required_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'o' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	enum cow_repair rep = COW_REPAIR_NONE;
	struct cow_check_res r;
	struct ut_err err;
	bool json = false, share = false;
	int c, ret, lfd = -1;

	ut_err_clear(&err);
	while ((c = getopt_long(argc, argv, "r:U", lo, NULL)) != -1) {
		switch (c) {
		case 'r':
			if (!strcmp(optarg, "leaks"))
				rep = COW_REPAIR_LEAKS;
			else if (!strcmp(optarg, "all"))
				rep = COW_REPAIR_ALL;
			else
				return cli_usage_error("image check", "--repair takes leaks or all");
			break;
		case 'j': json = true; break;
		case 'o':
			if (cli_image_output_opt(optarg, &json))
				return cli_usage_error("image check", "--output=%s: expected json or human", optarg);
			break;
		case 'U': share = true; break;
		default: return cli_usage_error("image check", "bad option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("image check", "%s", optind >= argc ? "missing FILE" : "one FILE only");
	if (share && rep != COW_REPAIR_NONE)
		return cli_usage_error("image check", "--force-share is for read-only access, not with --repair");
	/* cow_check opens the file itself, without locks: hold them here on a
	 * separate fd from before the first read to after the last write */
	if (!share && cow_lock_path(argv[optind], rep != COW_REPAIR_NONE ? COW_LOCK_WRITE : COW_LOCK_SHARED,
				    false, &lfd, &err) < 0) {
		cli_image_error(&err, rep == COW_REPAIR_NONE);
		return CLI_EXIT_FAIL;
	}
	{
		/* a raw file has nothing to check (no locks: lfd holds them, a
		 * second set would conflict). When this open fails, cow_check
		 * says why: it refuses what cannot be checked with the same
		 * message (its parse is the open's), and opens in its check
		 * mode what qemu-img check opens too and a normal open refuses
		 * (overlapping core tables, a header length that is not a
		 * multiple of 8), to report the damage. */
		struct cow_img *img = NULL;
		if (cow_open(argv[optind], NULL, COW_O_RDONLY | COW_O_NO_BACKING | COW_O_NO_LOCK,
			     &img, &err) < 0) {
			ut_err_clear(&err);
		} else if (cow_format(img) != COW_FMT_QCOW2) {
			cow_close(img);
			printf("'%s' is a raw image: nothing to check\n", argv[optind]);
			ret = CLI_EXIT_OK;
			goto out;
		} else {
			cow_close(img);
		}
	}
	if (cow_check(argv[optind], rep, &r, &err) < 0) {
		cli_error_err(&err);
		ut_buf_release(&r.msgs);
		ret = CLI_EXIT_FAIL;
		goto out;
	}
	if (json) {
		/* the name as a JSON string (quotes, backslashes, control
		 * characters escaped) */
		struct json_object *fn = json_object_new_string(argv[optind]);
		printf("{\n    \"filename\": %s,\n    \"format\": \"qcow2\",\n"
		       "    \"check-errors\": 0,\n    \"corruptions\": %llu,\n    \"leaks\": %llu,\n"
		       "    \"corruptions-fixed\": %llu,\n    \"leaks-fixed\": %llu,\n"
		       "    \"image-end-offset\": %llu,\n    \"total-clusters\": %llu,\n"
		       "    \"allocated-clusters\": %llu,\n    \"compressed-clusters\": %llu\n}\n",
		       fn ? json_object_to_json_string_ext(fn, JSON_C_TO_STRING_NOSLASHESCAPE) : "null",
		       (unsigned long long)r.corruptions, (unsigned long long)r.leaks,
		       (unsigned long long)r.corruptions_fixed, (unsigned long long)r.leaks_fixed,
		       (unsigned long long)r.image_end_offset, (unsigned long long)r.total_clusters,
		       (unsigned long long)r.allocated_clusters, (unsigned long long)r.compressed_clusters);
		json_object_put(fn);
	} else {
		if (r.msgs.len)
			fputs((const char *)r.msgs.data, stdout);
		if (r.leaks_fixed || r.corruptions_fixed)
			printf("The following inconsistencies were found and repaired:\n\n"
			       "    %llu leaked clusters\n    %llu corruptions\n\n"
			       "Double checking the fixed image now...\n",
			       (unsigned long long)r.leaks_fixed, (unsigned long long)r.corruptions_fixed);
		if (!r.corruptions && !r.leaks)
			printf("No errors were found on the image.\n");
		if (r.corruptions)
			printf("\n%llu errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
			       (unsigned long long)r.corruptions);
		if (r.leaks)
			printf("\n%llu leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
			       (unsigned long long)r.leaks);
		printf("%llu/%llu = %.2f%% allocated, %.2f%% compressed clusters\n",
		       (unsigned long long)r.allocated_clusters, (unsigned long long)r.total_clusters,
		       r.total_clusters ? 100.0 * (double)r.allocated_clusters / (double)r.total_clusters : 0.0,
		       r.allocated_clusters ? 100.0 * (double)r.compressed_clusters / (double)r.allocated_clusters : 0.0);
		printf("Image end offset: %llu\n", (unsigned long long)r.image_end_offset);
	}
	ret = r.corruptions ? 2 : r.leaks ? 3 : CLI_EXIT_OK;
	ut_buf_release(&r.msgs);
out:
	if (lfd >= 0)
		close(lfd);
	return ret;
}
