/* What both floor models share: the operation header, the intrusive queue,
 * the spin lock, the slot pool with a recycled slot, the handle and buffer
 * types, and the listening socket. Everything is static inline, so each
 * model compiles as if it were written in one file. */
#ifndef PINION_FLOOR_MODEL_H
#define PINION_FLOOR_MODEL_H
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define BUF 16384
#define NDESC 1024
#define NSLOTS 4096

/* Each model defines `struct tinfo`, its run thread's private state. */
typedef struct tinfo tinfo;

/* The header every operation starts with, then its type-erased state and
 * handler. `perform` is the reactor's attempt (unused by the proactor). */
typedef struct op op;
struct op {
  op *next;
  void (*complete)(op *, tinfo *here);
  int (*perform)(op *, int fd);
  long result;
  char state[64];
};

typedef struct { op *head, *tail; } queue;
static inline void qpush(queue *q, op *o) {
  o->next = NULL;
  if (q->tail) q->tail->next = o; else q->head = o;
  q->tail = o;
}
static inline op *qpop(queue *q) {
  op *o = q->head;
  if (o) { q->head = o->next; if (!q->head) q->tail = NULL; }
  return o;
}

static inline void lock(atomic_int *l) { int z = 0; while (!atomic_compare_exchange_weak(l, &z, 1)) z = 0; }
static inline void unlock(atomic_int *l) { atomic_exchange(l, 0); }

/* Slots: the thread's recycled slot first, else the locked free list. */
static op slots[NSLOTS];
static op *pool_free;
static atomic_int pool_lock;
static inline void pool_init(void) {
  for (int i = 0; i < NSLOTS; i++) { slots[i].next = pool_free; pool_free = &slots[i]; }
}
static inline op *alloc_op(op **recycled) {
  op *o = *recycled;
  if (o) { *recycled = NULL; return o; }
  lock(&pool_lock); o = pool_free; if (o) pool_free = o->next; unlock(&pool_lock);
  return o;
}
static inline void free_op(op **recycled, op *o) {
  if (!*recycled) { *recycled = o; return; }
  lock(&pool_lock); o->next = pool_free; pool_free = o; unlock(&pool_lock);
}

/* A socket handle (descriptor index and generation) and a buffer. */
typedef struct { uint32_t index, gen; } conn;
typedef struct { char *base; size_t len, pos; } buf;
/* A handler: a function pointer and its captures (buffer, handle). */
typedef void (*handler)(tinfo *, long r, buf b, conn c);
typedef struct { buf b; handler h; conn c; } io_state;

/* A listening socket on 127.0.0.1:port (`flags`: extra SOCK_* flags). */
static inline int listen_loopback(const char *port, int flags) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(port))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0) exit(1);
  return fd;
}
static inline void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}
#endif
