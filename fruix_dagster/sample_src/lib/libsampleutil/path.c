#include "libsampleutil.h"

const char *
sampleutil_basename(const char *path)
{
	const char *base = path;

	for (; *path != '\0'; path++)
		if (*path == '/' && path[1] != '\0')
			base = path + 1;
	return (base);
}
