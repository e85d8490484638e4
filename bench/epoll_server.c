/* epoll-reference: the ceiling for herd-bench on this machine. A minimal
 * single-threaded epoll server on 127.0.0.1 that answers every non-blank line
 * it receives with one fixed AT-like line, without parsing anything else.
 *
 * Lines may be split across reads and many may arrive in one read; all the
 * replies owed after a read go out in one write. Since every reply is the
 * same, a connection's pending output is only a byte count: it is written
 * from a block of repeated replies, starting at the right offset.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char usage[] =
    "usage: epoll-reference --port N [--reply TEXT]\n"
    "\n"
    "Listens on 127.0.0.1:N (N = 0: any free port) and answers every line "
    "that\n"
    "is not blank with one fixed line. Prints \"epoll-reference: listening on\n"
    "127.0.0.1:PORT\" once ready. Runs until killed.\n"
    "\n"
    "options:\n"
    "  --port N      TCP port (required; 0 picks a free one)\n"
    "  --reply TEXT  the reply line, without its newline (default: a "
    "realistic\n"
    "                AT line, \"AT Ref +0.000000001 bench-1 "
    "+34.068930-118.445127\n"
    "                1621464827.959498503\")\n"
    "  --help        this text\n";

#define READ_SIZE (256 * 1024)
#define BLOCK_REPLIES 1024
#define MAX_OWED (8u * 1024 * 1024) /* stop reading while this much is owed */

struct conn {
  int fd;
  int has_content; /* the current, unfinished line has a non-space byte */
  int eof;
  int reading;             /* EPOLLIN is in the interest set */
  int writing;             /* EPOLLOUT is in the interest set */
  unsigned long long owed; /* reply bytes not yet written */
  size_t phase;            /* offset of the next byte within one reply */
};

static char* block;      /* BLOCK_REPLIES copies of the reply */
static size_t reply_len; /* one reply, newline included */
static size_t block_len;
static int ep;

static int is_space(unsigned char c) {
  return c == ' ' || (c >= '\t' && c <= '\r');
}

static void die(const char* what) {
  fprintf(stderr, "epoll-reference: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void set_interest(struct conn* c, int reading, int writing) {
  if (c->reading == reading && c->writing == writing)
    return;
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = (reading ? EPOLLIN : 0u) | (writing ? EPOLLOUT : 0u);
  ev.data.ptr = c;
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  c->reading = reading;
  c->writing = writing;
}

static void drop(struct conn* c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c);
}

/* Writes what is owed; returns -1 when the connection is gone. */
static int flush(struct conn* c) {
  while (c->owed > 0) {
    size_t len = block_len - c->phase;
    if (len > c->owed)
      len = (size_t)c->owed;
    ssize_t n = send(c->fd, block + c->phase, len, MSG_NOSIGNAL);
    if (n > 0) {
      c->owed -= (unsigned long long)n;
      c->phase = (c->phase + (size_t)n) % reply_len;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    return -1;
  }
  if (c->owed == 0 && c->eof)
    return -1; /* everything answered after the client's EOF: close */
  set_interest(c, !c->eof && c->owed<MAX_OWED, c->owed> 0);
  return 0;
}

/* Counts the complete non-blank lines in buf[0..n); the state of the line
 * still open carries over to the next read. */
static unsigned long long count_lines(struct conn* c, const char* buf,
                                      size_t n) {
  unsigned long long lines = 0;
  const char *p = buf, *end = buf + n;
  while (p < end) {
    const char* nl = memchr(p, '\n', (size_t)(end - p));
    const char* stop = nl ? nl : end;
    if (!c->has_content) {
      for (const char* q = p; q < stop; ++q)
        if (!is_space((unsigned char)*q)) {
          c->has_content = 1;
          break;
        }
    }
    if (!nl)
      break;
    lines += (unsigned long long)c->has_content;
    c->has_content = 0;
    p = nl + 1;
  }
  return lines;
}

static void on_readable(struct conn* c, char* buf) {
  unsigned long long lines = 0;
  for (int round = 0; round < 8; ++round) {
    ssize_t n = recv(c->fd, buf, READ_SIZE, 0);
    if (n > 0) {
      lines += count_lines(c, buf, (size_t)n);
      if (n < READ_SIZE)
        break;
      continue;
    }
    if (n == 0) {
      /* A last line without '\n' before the half-close still counts. */
      lines += (unsigned long long)c->has_content;
      c->has_content = 0;
      c->eof = 1;
      break;
    }
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      break;
    drop(c);
    return;
  }
  c->owed += lines * reply_len;
  if (flush(c) < 0)
    drop(c);
}

static void on_accept(int lfd) {
  for (int i = 0; i < 1024; ++i) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      return; /* EAGAIN, or out of descriptors: try again later */
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn* c = calloc(1, sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    c->fd = fd;
    c->reading = 1;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(fd);
      free(c);
    }
  }
}

int main(int argc, char** argv) {
  long port = -1;
  const char* reply =
      "AT Ref +0.000000001 bench-1 +34.068930-118.445127 1621464827.959498503";
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(usage, stdout);
      return 0;
    } else if (!strcmp(argv[i], "--port") && i + 1 < argc) {
      char* end;
      port = strtol(argv[++i], &end, 10);
      if (*argv[i] == '\0' || *end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "epoll-reference: --port: \"%s\" is not 0..65535\n",
                argv[i]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--reply") && i + 1 < argc) {
      reply = argv[++i];
      if (strchr(reply, '\n')) {
        fprintf(stderr, "epoll-reference: --reply: no newline, please\n");
        return 2;
      }
    } else {
      fprintf(stderr, "epoll-reference: bad argument \"%s\" (see --help)\n",
              argv[i]);
      return 2;
    }
  }
  if (port < 0) {
    fprintf(stderr, "epoll-reference: --port N is required (see --help)\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);

  reply_len = strlen(reply) + 1;
  block_len = reply_len * BLOCK_REPLIES;
  block = malloc(block_len);
  char* buf = malloc(READ_SIZE);
  if (!block || !buf)
    die("malloc");
  for (size_t i = 0; i < BLOCK_REPLIES; ++i) {
    memcpy(block + i * reply_len, reply, reply_len - 1);
    block[i * reply_len + reply_len - 1] = '\n';
  }

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0)
    die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr*)&addr, sizeof addr) != 0)
    die("bind");
  if (listen(lfd, SOMAXCONN) != 0)
    die("listen");
  socklen_t alen = sizeof addr;
  getsockname(lfd, (struct sockaddr*)&addr, &alen);

  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0)
    die("epoll_create1");
  struct epoll_event lev;
  memset(&lev, 0, sizeof lev);
  lev.events = EPOLLIN;
  lev.data.ptr = NULL; /* NULL marks the listening socket */
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) != 0)
    die("epoll_ctl");
  printf("epoll-reference: listening on 127.0.0.1:%u\n",
         (unsigned)ntohs(addr.sin_port));
  fflush(stdout);

  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      struct conn* c = events[i].data.ptr;
      if (!c) {
        on_accept(lfd);
        continue;
      }
      uint32_t ev = events[i].events;
      if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (c->reading || (ev & EPOLLERR)) {
          /* on_readable may free c: nothing touches it afterwards */
          on_readable(c, buf);
          continue;
        }
      }
      if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        if (flush(c) < 0)
          drop(c);
    }
  }
}
