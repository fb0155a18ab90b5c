/* libsampleutil: the sample tree's stand-in for libutil. */
#ifndef _LIBSAMPLEUTIL_H_
#define _LIBSAMPLEUTIL_H_

const char	*sampleutil_basename(const char *);
int		sampleutil_flag(int, char **, const char *);

#endif /* !_LIBSAMPLEUTIL_H_ */
