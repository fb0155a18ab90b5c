/* The sample pseudo-device; compiled into GENERIC and built as sample.ko. */
#ifdef KLD_MODULE
int	sample_attach(void);
#else
#include "../../kern/kern_sample.h"
#endif

static int sample_units = 4;

int
sample_attach(void)
{
#ifndef KLD_MODULE
	kprintf("sample0: <sample pseudo-device> %d units\n", sample_units);
#endif
	return (sample_units);
}
