/* cat: concatenate files (sample stand-in, no options). */
#include <stdio.h>

#include <libsampleutil.h>

static int
copy(FILE *in)
{
	char buf[4096];
	size_t n;

	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		if (fwrite(buf, 1, n, stdout) != n)
			return (1);
	return (ferror(in) ? 1 : 0);
}

int
main(int argc, char **argv)
{
	FILE *in;
	int i, rv = 0;

	if (argc < 2)
		return (copy(stdin));
	for (i = 1; i < argc; i++) {
		if ((in = fopen(argv[i], "r")) == NULL) {
			fprintf(stderr, "%s: %s: cannot open\n",
			    sampleutil_basename(argv[0]), argv[i]);
			rv = 1;
			continue;
		}
		rv |= copy(in);
		fclose(in);
	}
	return (rv);
}
