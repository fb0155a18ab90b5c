/*
 * <sys/param.h>: stand-in header of the fruix_dagster sample source tree.
 * It only mimics the shape of a FreeBSD header; it declares nothing real.
 */

#ifndef _SAMPLE_SYS_PARAM_H_
#define _SAMPLE_SYS_PARAM_H_

#include <sys/cdefs.h>

#define	BSD	199506		/* System version (year & month). */
#define	BSD4_3	1
#define	BSD4_4	1

/*
 * __FreeBSD_version numbers are documented in the Porter's Handbook.
 */
#undef __FreeBSD_version
#define __FreeBSD_version 1500000

#define	MAXCOMLEN	19		/* max command name remembered */
#define	MAXHOSTNAMELEN	256		/* max hostname size */
#define	MAXPATHLEN	1024		/* max bytes in pathname */
#define	PAGE_SIZE	4096

#endif /* !_SAMPLE_SYS_PARAM_H_ */
