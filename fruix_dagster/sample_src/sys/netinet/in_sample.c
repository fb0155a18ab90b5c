#include "../kern/kern_sample.h"

int
inet_init(void)
{
	kprintf("lo0: link state changed to UP\n");
	return (0);
}
