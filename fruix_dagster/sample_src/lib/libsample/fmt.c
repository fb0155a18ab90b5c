#include "libsample.h"

/* Formats v in decimal into buf; returns the length written. */
size_t
sample_fmt_uint(char *buf, size_t size, unsigned long v)
{
	char tmp[32];
	size_t n, i;

	n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0 && n < sizeof(tmp));
	if (size == 0)
		return (0);
	for (i = 0; i < n && i + 1 < size; i++)
		buf[i] = tmp[n - 1 - i];
	buf[i] = '\0';
	return (i);
}
