#ifndef _HELLO_H_
#define _HELLO_H_

const char	*greeting(void);

#endif
