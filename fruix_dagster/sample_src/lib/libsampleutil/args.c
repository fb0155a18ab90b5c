#include <string.h>

#include "libsampleutil.h"

/* Returns the index of flag in argv[1..argc-1], or 0 if absent. */
int
sampleutil_flag(int argc, char **argv, const char *flag)
{
	int i;

	for (i = 1; i < argc; i++)
		if (strcmp(argv[i], flag) == 0)
			return (i);
	return (0);
}
