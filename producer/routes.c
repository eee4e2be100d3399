/* routes.c -- placeholder until the HTTP layer lands (common/httpd). */
#include <stddef.h>

#include "producer.h"

int producer_api_start(const struct config *cfg, struct worker *w, struct producer_api **out)
{
	*out = NULL;
	return -1;
}

void producer_api_stop(struct producer_api *api) { }
