/* queue_redis.c -- placeholder until the Redis Streams transport lands
 * (branch `redis`): reports Redis as unreachable, so everything takes the
 * PostgreSQL path. */
#include <stdio.h>

#include "queue.h"

int queue_redis_open(const struct config *cfg, const char *consumer, struct queue **out,
		     char *err, size_t errlen)
{
	*out = NULL;
	snprintf(err, errlen, "redis transport not built yet");
	return QUEUE_EDOWN;
}
