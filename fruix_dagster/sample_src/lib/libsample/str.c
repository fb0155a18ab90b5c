#include "libsample.h"

size_t
sample_strlen(const char *s)
{
	const char *p;

	for (p = s; *p != '\0'; p++)
		;
	return ((size_t)(p - s));
}

char *
sample_strlcpy(char *dst, const char *src, size_t size)
{
	size_t i;

	if (size == 0)
		return (dst);
	for (i = 0; i + 1 < size && src[i] != '\0'; i++)
		dst[i] = src[i];
	dst[i] = '\0';
	return (dst);
}
