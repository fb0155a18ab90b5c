#include <stdarg.h>
#include <stdio.h>

#include "kern_sample.h"

void
kprintf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}
