/* An LD_PRELOAD shim that shifts one host's wall clock (issue 22): CLOCK_REALTIME (and _COARSE) from
 * clock_gettime, gettimeofday and time are moved by the int64 nanoseconds stored in the file named by
 * $SJ_CLOCK_OFFSET_FILE, mapped shared, so the test steps the clock of running processes by rewriting the file.
 * CLOCK_MONOTONIC is untouched (libfaketime shifts it too and hangs Python's Event.wait). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int64_t *offset_ns;
static int (*real_clock_gettime)(clockid_t, struct timespec *);

static int64_t offset(void) {
    if (!offset_ns) {
        const char *path = getenv("SJ_CLOCK_OFFSET_FILE");
        int fd = path ? open(path, O_RDONLY) : -1;
        void *map = fd >= 0 ? mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
        if (fd >= 0) close(fd);
        if (map == MAP_FAILED) return 0;
        offset_ns = map;
    }
    return *offset_ns;
}

static void shift(struct timespec *ts) {
    int64_t ns = (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset();
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    if (!real_clock_gettime) real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    int done = real_clock_gettime(id, ts);
    if (done == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) shift(ts);
    return done;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    (void)tz;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
