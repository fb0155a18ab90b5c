#ifndef _LOADER_H_
#define _LOADER_H_

int	bi_load(const char *kernel, unsigned long *addr);

#endif
