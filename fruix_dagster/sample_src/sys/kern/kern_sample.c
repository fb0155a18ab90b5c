#include "opt_global.h"
#include "kern_sample.h"

void
kern_print_options(void)
{
	kprintf("kernel ident: %s\n", kern_ident);
	kprintf("compiled-in options:");
#ifdef SCHED_ULE
	kprintf(" SCHED_ULE");
#endif
#ifdef PREEMPTION
	kprintf(" PREEMPTION");
#endif
#ifdef INET
	kprintf(" INET");
#endif
#ifdef SMP
	kprintf(" SMP");
#endif
#ifdef INCLUDE_CONFIG_FILE
	kprintf(" INCLUDE_CONFIG_FILE");
#endif
	kprintf("\n");
#ifdef MAXCPU
	kprintf("MAXCPU: %d\n", MAXCPU);
#endif
}
