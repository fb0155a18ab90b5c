#include "opt_global.h"
#include "assym.h"
#include "../../kern/kern_sample.h"

void
cpu_startup(void)
{
	kprintf("CPU: sample HAMMER (page size %d, pcb size %d)\n",
	    ASSYM_PAGE_SIZE, ASSYM_PCB_SIZE);
#ifdef SMP
	kprintf("FreeBSD/SMP: Multiprocessor System Detected\n");
#endif
}
