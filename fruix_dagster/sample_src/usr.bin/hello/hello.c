/* hello: print a greeting and what the world was built from. */
#include <stdio.h>

#include <libsample.h>

#include "buildinfo.h"
#include "hello.h"

int
main(void)
{
	char num[32];
	const char *g = greeting();

	sample_fmt_uint(num, sizeof(num),
	    (unsigned long)sample_fnv1a(g, sample_strlen(g)));
	printf("%s\n", g);
	printf("world: %s (build time: %s, greeting hash %s)\n",
	    BUILDINFO_VERSION, BUILDINFO_TIME, num);
	return (0);
}
