#include "libsample.h"

struct sample_list *
sample_list_push(struct sample_list *head, struct sample_list *node,
    const char *value)
{
	node->value = value;
	node->next = head;
	return (node);
}

size_t
sample_list_len(const struct sample_list *l)
{
	size_t n;

	for (n = 0; l != NULL; l = l->next)
		n++;
	return (n);
}
