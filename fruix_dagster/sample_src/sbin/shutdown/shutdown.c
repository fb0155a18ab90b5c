/* shutdown: close down the system at a given time (sample stand-in). */
#include <stdio.h>

int
main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: shutdown [-][-hopr] time [warning-message ...]\n");
		return (64);
	}
	printf("shutdown: sample stand-in, nothing is shut down (%s)\n", argv[argc - 1]);
	return (0);
}
