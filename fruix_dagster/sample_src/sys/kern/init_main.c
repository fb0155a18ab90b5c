/*
 * The sample kernel: a host program that "boots" by printing what a FreeBSD
 * kernel prints, so two kernel configurations give visibly different kernels.
 */
#include <string.h>

#include "opt_global.h"
#include "kern_sample.h"

static const char copyright[] =
    "Copyright (c) 1992-2026 The FreeBSD Project.\n"
    "Copyright (c) 1979, 1980, 1983, 1986, 1988, 1989, 1991, 1992, 1993, 1994\n"
    "\tThe Regents of the University of California. All rights reserved.\n";

int
main(int argc, char **argv)
{
	kprintf("%s", copyright);
	kprintf("%s", version);
	cpu_startup();
	kern_print_options();
#ifdef DEV_NULL
	null_attach();
#endif
#ifdef DEV_SAMPLE
	sample_attach();
#endif
#ifdef INET
	inet_init();
#endif
	if (argc > 1 && strcmp(argv[1], "-c") == 0)
		kprintf("%s", kernconfstring);
	kprintf("Trying to mount root from ufs:/dev/ada0p2 [rw]...\n");
	return (0);
}
