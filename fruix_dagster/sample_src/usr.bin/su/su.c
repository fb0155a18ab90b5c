/* su: sample stand-in for a setuid program; it does nothing privileged. */
#include <stdio.h>

int
main(void)
{
	fprintf(stderr, "su: sample stand-in, not implemented\n");
	return (1);
}
