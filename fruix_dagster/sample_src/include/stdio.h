/*
 * <stdio.h>: stand-in header of the fruix_dagster sample source tree.
 * It only mimics the shape of a FreeBSD header; it declares nothing real.
 */

#ifndef _SAMPLE_STDIO_H_
#define _SAMPLE_STDIO_H_

#include <sys/cdefs.h>

#endif /* !_SAMPLE_STDIO_H_ */
