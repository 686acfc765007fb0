/* cli/cmd-run.c — `cowvm run`: placeholder until the VMM core lands. */
#include "cli/cli.h"

int cli_cmd_run(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("run: not built yet");
	return CLI_EXIT_FAIL;
}
