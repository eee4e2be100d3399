/* fuzz_fields.h -- for the fuzz targets that decode a Redis stream entry
 * (fuzz_rentry.c, fuzz_events.c): the entry's flat field array built from
 * the input, one element per NUL-separated chunk, as the redisReply that
 * XREADGROUP returns.  A chunk starting with the byte 0x01 becomes a nil
 * reply; with ints, one starting with 0x02 becomes an integer reply.
 * Strings are allocated at their exact size, so ASan sees overreads.
 */
#ifndef JOBRUNNER_FUZZ_FIELDS_H
#define JOBRUNNER_FUZZ_FIELDS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#define FUZZ_MAX_ELEMENTS 64

/* A string reply holding a copy of p[0..len); NULL when out of memory. */
static redisReply *fuzz_str_reply(const uint8_t *p, size_t len)
{
	redisReply *e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	e->type = REDIS_REPLY_STRING;
	e->str = malloc(len + 1);
	if (!e->str) {
		free(e);
		return NULL;
	}
	memcpy(e->str, p, len);
	e->str[len] = '\0';
	e->len = len;
	return e;
}

/* An empty array reply with room for FUZZ_MAX_ELEMENTS; -1 when out of memory. */
static int fuzz_array_init(redisReply *arr)
{
	memset(arr, 0, sizeof *arr);
	arr->type = REDIS_REPLY_ARRAY;
	arr->element = calloc(FUZZ_MAX_ELEMENTS, sizeof *arr->element);
	return arr->element ? 0 : -1;
}

/* Appends the NUL-separated chunks of data to arr (up to FUZZ_MAX_ELEMENTS);
 * stops early when out of memory. */
static void fuzz_add_chunks(redisReply *arr, const uint8_t *data, size_t size, int ints)
{
	size_t pos = 0;
	while (pos <= size && arr->elements < FUZZ_MAX_ELEMENTS) {
		const uint8_t *nul = memchr(data + pos, 0, size - pos);
		size_t len = nul ? (size_t)(nul - (data + pos)) : size - pos;
		redisReply *e;
		if (len > 0 && (data[pos] == 1 || (ints && data[pos] == 2))) {
			e = calloc(1, sizeof *e);
			if (e && data[pos] == 1) {
				e->type = REDIS_REPLY_NIL;
			} else if (e) {
				e->type = REDIS_REPLY_INTEGER;
				e->integer = (long long)len;
			}
		} else {
			e = fuzz_str_reply(data + pos, len);
		}
		if (!e)
			break;
		arr->element[arr->elements++] = e;
		if (!nul)
			break;
		pos += len + 1;
	}
}

static void fuzz_array_free(redisReply *arr)
{
	for (size_t i = 0; i < arr->elements; i++) {
		if (arr->element[i])
			free(arr->element[i]->str);
		free(arr->element[i]);
	}
	free(arr->element);
}

#endif
