/* ticker.c -- placeholder until the Redis transport lands. */
#include <stddef.h>

#include "producer.h"

struct ticker *ticker_start(const struct config *cfg) { return NULL; }
void ticker_stop(struct ticker *t) { }
