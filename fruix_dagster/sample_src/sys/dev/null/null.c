#include "../../kern/kern_sample.h"

int
null_attach(void)
{
	kprintf("null: <full device, null device, zero device>\n");
	return (0);
}
