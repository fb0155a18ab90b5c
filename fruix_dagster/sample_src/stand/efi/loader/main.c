/* loader.efi: sample stand-in for the FreeBSD EFI loader. */
#include <stdio.h>

#include "loader.h"

int
main(int argc, char **argv)
{
	const char *kernel = argc > 1 ? argv[1] : "/boot/kernel/kernel";
	unsigned long addr;

	printf("Consoles: EFI console\n");
	printf("FreeBSD/amd64 EFI loader, Revision 1.1 (sample)\n");
	if (bi_load(kernel, &addr) != 0)
		return (1);
	printf("Loading %s at 0x%lx\n", kernel, addr);
	return (0);
}
