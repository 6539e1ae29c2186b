/*
 * clock.c - CLOCK_MONOTONIC and CLOCK_REALTIME in nanoseconds.
 */
#define _POSIX_C_SOURCE 200809L
#include "base/clock.h"

#include <time.h>

static uint64_t read_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t ag_clock_mono_ns(void) { return read_ns(CLOCK_MONOTONIC); }
uint64_t ag_clock_wall_ns(void) { return read_ns(CLOCK_REALTIME); }
