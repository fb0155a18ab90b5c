/* echo: write arguments to standard output (sample stand-in). */
#include <stdio.h>
#include <string.h>

#include <libsample.h>

int
main(int argc, char **argv)
{
	int i, nflag = 0;

	argv++;
	argc--;
	if (argc > 0 && strcmp(argv[0], "-n") == 0) {
		nflag = 1;
		argv++;
		argc--;
	}
	for (i = 0; i < argc; i++) {
		fwrite(argv[i], 1, sample_strlen(argv[i]), stdout);
		if (i + 1 < argc)
			putchar(' ');
	}
	if (!nflag)
		putchar('\n');
	return (0);
}
