/*
 * clock.h - time sources.  Monotonic for durations and deadlines (never goes
 * back), wall clock only for timestamps shown to people and to OpenAI's
 * "created" field.
 */
#ifndef AG_BASE_CLOCK_H
#define AG_BASE_CLOCK_H

#include <stdint.h>

uint64_t ag_clock_mono_ns(void);
uint64_t ag_clock_wall_ns(void); /* since the Unix epoch */

#endif
