// Does a burst over loopback run slower after a paced or idle phase than after a continuous one?
//
// Why: on the Firecracker VMs migsim's real-QEMU validation was built on, QEMU's switchover after
// a rate-limited live phase took 4-10 ms where one after an unlimited stream took 2-3
// (switchover_cost.paced_stop in docs/host-profiles.md). This program shows the host effect
// without QEMU: a sender thread streams 4 KiB pages in 32 KiB writes (QEMU's QEMUFile buffer)
// over a loopback TCP socket; a receiver thread polls, reads 32 KiB at a time and copies each
// page into a 64 MiB "guest RAM" (QEMU's ram_load_precopy). After 2 s of one prelude
//   idle:       nothing sent;
//   paced:      200 pages a 100 ms window, then sleep (8 MiB/s, QEMU's rate limiter);
//   continuous: pages sent without a pause;
// it times a burst of N pages, until the sender's last write returns (QMP's downtime ends
// there) and until the receiver has copied the last page.
//
// Build and run (gcc or clang; no dependencies):
//   cc -O2 -pthread -o /tmp/loopback_burst benchmarks/loopback_burst.c
//   /tmp/loopback_burst 6000        # burst of 6000 pages, 4 rounds of the three preludes
//   /tmp/loopback_burst cpu         # the same preludes with a memcpy only (no threads waking)
// PREWARM=MiB touches and frees that much memory just before each burst (to test whether the
// host's free page reporting is the cause: it made no difference on the VMs above).
//
// On those VMs (2 vCPUs), quiet, a 6000-page burst: after idle 10-16 us a page, after pacing
// 5.5-12, after continuous streaming 2.0-3.3; the cpu mode shows no such difference (0.6-0.9 us a
// page after each prelude). Ruled out as causes: the guest's halt polling (the VM boots with
// haltpoll.guest_halt_poll_ns=0; 200 us of polling changed nothing), waking the other vCPU
// (both threads pinned to one vCPU: the same), user memory handed back to the hypervisor
// (PREWARM=256: the same). The state that makes a burst slow lasts seconds and is the host's.
//
// On a VM of the same class on 2026-12-07 it showed no difference: the sender took 0.9-1.7 us a
// page after every prelude, with net.ipv4.tcp_slow_start_after_idle at 1 and at 0, while QEMU's
// switchovers after pacing took 1-2 ms there. The state comes and goes.
#define _GNU_SOURCE
#include <pthread.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define PAGE 4096L
#define RAM_PAGES (64L * 1024 * 1024 / PAGE)
#define WRITE_PAGES 8 /* 32 KiB a write */

static char *src, *dst;
static int rfd;
static volatile long received;
static volatile int done;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void sleep_s(double s) {
  struct timespec t = {(time_t)s, (long)((s - (long)s) * 1e9)};
  nanosleep(&t, NULL);
}

static void copy_pages(long n, long start) {
  for (long i = 0; i < n; i++) {
    long p = (start + i) % RAM_PAGES;
    memcpy(dst + p * PAGE, src + p * PAGE, PAGE);
    src[p * PAGE]++;
  }
}

static const char *PRELUDES[] = {"idle", "paced", "continuous"};

static void cpu_mode(void) {
  for (int round = 0; round < 3; round++)
    for (int k = 0; k < 3; k++) {
      double t0 = now();
      long pos = 0;
      while (now() - t0 < 2.0) {
        if (k == 0) sleep_s(0.1);
        else if (k == 1) { copy_pages(200, pos); pos += 200; sleep_s(0.0997); }
        else { copy_pages(1000, pos); pos += 1000; }
      }
      double t = now();
      printf("cpu  %-10s us a page, per 1000 pages:", PRELUDES[k]);
      for (int blk = 0; blk < 8; blk++) {
        copy_pages(1000, pos);
        pos += 1000;
        double t1 = now();
        printf(" %5.2f", (t1 - t) * 1e6 / 1000);
        t = t1;
      }
      printf("\n");
      fflush(stdout);
    }
}

static void *receiver(void *arg) {
  (void)arg;
  char buf[WRITE_PAGES * PAGE];
  long got = 0;
  while (!done) {
    struct pollfd p = {rfd, POLLIN, 0};
    poll(&p, 1, 50);
    for (;;) {
      ssize_t r = recv(rfd, buf, sizeof buf, MSG_DONTWAIT);
      if (r <= 0) break;
      for (long i = 0; i < r / PAGE; i++)
        memcpy(dst + ((got / PAGE + i) % RAM_PAGES) * PAGE, buf + i * PAGE, PAGE);
      got += r;
      received = got;
    }
  }
  return NULL;
}

static void send_pages(int fd, long n, long *pos) {
  static char buf[WRITE_PAGES * PAGE];
  while (n > 0) {
    long k = n < WRITE_PAGES ? n : WRITE_PAGES;
    for (long i = 0; i < k; i++) memcpy(buf + i * PAGE, src + ((*pos + i) % RAM_PAGES) * PAGE, PAGE);
    for (long off = 0; off < k * PAGE;) {
      ssize_t w = send(fd, buf + off, k * PAGE - off, 0);
      if (w < 0) { perror("send"); exit(1); }
      off += w;
    }
    *pos += k;
    n -= k;
  }
}

static void socket_mode(long burst) {
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0; /* any free port */
  socklen_t len = sizeof a;
  if (bind(ls, (void *)&a, sizeof a) || listen(ls, 1) || getsockname(ls, (void *)&a, &len)) {
    perror("listen");
    exit(1);
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd, (void *)&a, sizeof a)) { perror("connect"); exit(1); }
  rfd = accept(ls, NULL, NULL);
  pthread_t th;
  pthread_create(&th, NULL, receiver, NULL);
  long pos = 0;
  const char *prewarm = getenv("PREWARM");
  for (int round = 0; round < 4; round++)
    for (int k = 0; k < 3; k++) {
      double t0 = now();
      while (now() - t0 < 2.0) {
        if (k == 0) sleep_s(0.1);
        else if (k == 1) { send_pages(fd, 200, &pos); sleep_s(0.099); }
        else send_pages(fd, 1000, &pos);
      }
      while (received < pos * PAGE) sched_yield(); /* the receiver has caught up */
      if (prewarm) {
        size_t n = (size_t)atol(prewarm) << 20;
        char *m = malloc(n);
        memset(m, 3, n);
        free(m);
      }
      long target = (pos + burst) * PAGE;
      double s0 = now();
      send_pages(fd, burst, &pos);
      double s1 = now();
      while (received < target) {}
      double s2 = now();
      printf("sock %-10s burst of %ld pages: sender %.2f us a page, receiver %.2f (%.1f ms)\n",
             PRELUDES[k], burst, (s1 - s0) * 1e6 / burst, (s2 - s0) * 1e6 / burst, (s2 - s0) * 1e3);
      fflush(stdout);
    }
  done = 1;
  pthread_join(th, NULL);
}

int main(int argc, char **argv) {
  src = malloc(RAM_PAGES * PAGE);
  dst = malloc(RAM_PAGES * PAGE);
  memset(src, 1, RAM_PAGES * PAGE);
  memset(dst, 2, RAM_PAGES * PAGE);
  if (argc > 1 && !strcmp(argv[1], "cpu")) cpu_mode();
  else socket_mode(argc > 1 ? atol(argv[1]) : 6000);
  return 0;
}
