#include "loader.h"

int
bi_load(const char *kernel, unsigned long *addr)
{
	unsigned long h = 5381;

	for (; *kernel != '\0'; kernel++)
		h = h * 33 + (unsigned char)*kernel;
	*addr = 0x200000UL + (h & 0xff000UL);
	return (0);
}
