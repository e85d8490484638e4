/* The log writer's drop-behind against plain appends: writes MB megabytes
 * to a new file in DIR in 256 KiB writes, plainly or the way net/logging.cpp
 * does it (every 8 MiB, start the write-out of what is new and drop what the
 * previous chunk started from the page cache once it is on disk), ROUNDS
 * times each, alternating, and prints the system and wall time of each run.
 *
 *   write-behind-bench DIR [MB (1000)] [ROUNDS (2)]
 *
 * Linux only (sync_file_range). The file is removed after each run. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double seconds(struct timeval t) {
  return (double)t.tv_sec + (double)t.tv_usec / 1e6;
}

static int run(const char* path, long long total, int drop) {
  static char buf[256 << 10];
  const long long chunk = 8LL << 20;
  long long off = 0, started = 0, dropped = 0;
  struct rusage r0, r1;
  struct timespec t0, t1;
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  if (fd < 0) {
    perror(path);
    return 1;
  }
  memset(buf, 'x', sizeof buf);
  getrusage(RUSAGE_SELF, &r0);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (off < total) {
    ssize_t n = write(fd, buf, sizeof buf);
    if (n <= 0) {
      perror("write");
      close(fd);
      return 1;
    }
    off += n;
    if (drop && off - started >= chunk) {
      if (started > dropped) {
        sync_file_range(fd, dropped, started - dropped,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                            SYNC_FILE_RANGE_WAIT_AFTER);
        long long from = dropped > chunk ? dropped - chunk : 0;
        posix_fadvise(fd, from, started - from, POSIX_FADV_DONTNEED);
        dropped = started;
      }
      sync_file_range(fd, started, off - started, SYNC_FILE_RANGE_WRITE);
      started = off;
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  getrusage(RUSAGE_SELF, &r1);
  close(fd);
  unlink(path);
  printf("%-11s %lld MB: %.2f s system, %.2f s wall\n",
         drop ? "drop-behind" : "plain", total >> 20,
         seconds(r1.ru_stime) - seconds(r0.ru_stime),
         (double)(t1.tv_sec - t0.tv_sec) +
             (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    fprintf(stderr, "usage: write-behind-bench DIR [MB] [ROUNDS]\n");
    return 2;
  }
  long long mb = argc > 2 ? atoll(argv[2]) : 1000;
  int rounds = argc > 3 ? atoi(argv[3]) : 2;
  if (mb <= 0 || rounds <= 0) {
    fprintf(stderr, "write-behind-bench: MB and ROUNDS must be positive\n");
    return 2;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/write-behind-bench.%d", argv[1],
           (int)getpid());
  for (int r = 0; r < rounds; ++r)
    for (int drop = 0; drop < 2; ++drop)
      if (run(path, mb << 20, drop) != 0)
        return 1;
  return 0;
}
