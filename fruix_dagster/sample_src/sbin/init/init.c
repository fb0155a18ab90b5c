/* init: sample stand-in; announces itself and exits. */
#include <stdio.h>

#include <libsample.h>
#include <libsampleutil.h>

int
main(int argc, char **argv)
{
	struct sample_list a, b, *l = NULL;

	l = sample_list_push(l, &a, "/etc/rc");
	l = sample_list_push(l, &b, "/etc/rc.shutdown");
	printf("%s: sample init, %zu scripts known%s\n",
	    sampleutil_basename(argv[0]), sample_list_len(l),
	    sampleutil_flag(argc, argv, "-s") ? " (single user)" : "");
	return (0);
}
