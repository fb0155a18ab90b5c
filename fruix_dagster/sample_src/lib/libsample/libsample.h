/* libsample: the sample tree's small stand-in for libc. */
#ifndef _LIBSAMPLE_H_
#define _LIBSAMPLE_H_

#include <stddef.h>
#include <stdint.h>

struct sample_list {
	struct sample_list	*next;
	const char		*value;
};

size_t		sample_strlen(const char *);
char		*sample_strlcpy(char *, const char *, size_t);
size_t		sample_fmt_uint(char *, size_t, unsigned long);
uint32_t	sample_fnv1a(const void *, size_t);
struct sample_list *sample_list_push(struct sample_list *, struct sample_list *,
		    const char *);
size_t		sample_list_len(const struct sample_list *);

#endif /* !_LIBSAMPLE_H_ */
