#ifndef _KERN_SAMPLE_H_
#define _KERN_SAMPLE_H_

extern const char version[];
extern const char kern_ident[];
extern const char kernconfstring[];

void	kprintf(const char *, ...);
void	cpu_startup(void);
void	kern_print_options(void);
int	null_attach(void);
int	sample_attach(void);
int	inet_init(void);

#endif
