/* wall: write a message to users (sample stand-in). */
#include <stdio.h>

int
main(void)
{
	char line[256];

	while (fgets(line, sizeof(line), stdin) != NULL)
		fputs(line, stdout);
	return (0);
}
