#include "hello.h"

const char *
greeting(void)
{
	return ("Hello from the fruix_dagster sample world!");
}
