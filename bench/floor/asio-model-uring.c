/* The proactor operation model of issue 4, hand-written in C over liburing
 * with nothing extra: the floor for a faithful implementation. Per message:
 *   read start: alloc slot, build op, check the socket handle, SQ lock,
 *   SQE (recv, user_data = op), unlock, work++
 *   reap: CQE -> op, result, push on the ready queue
 *   run loop pops -> complete fn pointer: move handler out, free slot,
 *   call handler (fn pointer + captures)
 *   handler -> composed async_write step: alloc, build, check, SQE send
 *   reap, pop, complete: all bytes sent? -> user handler -> read start.
 * One thread runs it; SQ lock and work count are atomics as in a context
 * that other threads may use. io_uring_enter only when nothing is ready. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <liburing.h>
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

typedef struct op op;
struct op {
  op *next;
  void (*complete)(op *, void *here);
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
typedef struct { int fd; uint32_t gen; } desc;
static desc table[NDESC];
static struct io_uring ring;
static atomic_int sq_lock;
static atomic_long outstanding;
typedef struct { op *recycled; long priv_work; } tinfo;
static op slots[4096];
static op *pool_free;
static atomic_int pool_lock;
static inline void lock(atomic_int *l) { int z = 0; while (!atomic_compare_exchange_weak(l, &z, 1)) z = 0; }
static inline void unlock(atomic_int *l) { atomic_exchange(l, 0); }
static inline op *alloc_op(tinfo *t) {
  op *o = t->recycled;
  if (o) { t->recycled = NULL; return o; }
  lock(&pool_lock); o = pool_free; if (o) pool_free = o->next; unlock(&pool_lock);
  return o;
}
static inline void free_op(tinfo *t, op *o) {
  if (!t->recycled) { t->recycled = o; return; }
  lock(&pool_lock); o->next = pool_free; pool_free = o; unlock(&pool_lock);
}
typedef struct { uint32_t index, gen; } conn;
typedef struct { char *base; size_t len, pos; } buf;
typedef void (*handler)(tinfo *, long r, buf b, conn c);
typedef struct { buf b; handler h; conn c; } io_state;

static void close_conn(conn c) { close(table[c.index].fd); table[c.index].gen++; }

/* Queues one SQE for `o`; the handle is checked first. */
static inline int submit(tinfo *t, conn c, op *o, int is_send, buf *b) {
  if (c.index >= NDESC || table[c.index].gen != c.gen) return -1;
  int fd = table[c.index].fd;
  lock(&sq_lock);
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
  if (!sqe) { io_uring_submit(&ring); sqe = io_uring_get_sqe(&ring); }
  if (is_send) io_uring_prep_send(sqe, fd, b->base + b->pos, b->len - b->pos, MSG_NOSIGNAL);
  else io_uring_prep_recv(sqe, fd, b->base + b->len, BUF - b->len, 0);
  io_uring_sqe_set_data(sqe, o);
  unlock(&sq_lock);
  t->priv_work++;
  return 0;
}

static void recv_complete(op *o, void *here) {
  io_state s = *(io_state *)o->state;
  long r = o->result;
  free_op(here, o);
  if (r > 0) s.b.len += r;
  s.h(here, r == 0 ? -1 : r, s.b, s.c);
}
static void start_write(tinfo *t, buf b, handler h, conn c);
static void send_complete(op *o, void *here) {
  io_state s = *(io_state *)o->state;
  long r = o->result;
  free_op(here, o);
  if (r < 0) { s.h(here, r, s.b, s.c); return; }
  s.b.pos += r;
  if (s.b.pos < s.b.len) { start_write(here, s.b, s.h, s.c); return; }
  s.h(here, (long)s.b.len, s.b, s.c);
}
static void start_write(tinfo *t, buf b, handler h, conn c) {
  op *o = alloc_op(t);
  if (!o) { h(t, -1, b, c); return; }
  o->complete = send_complete; o->result = 0;
  io_state *s = (io_state *)o->state; s->b = b; s->h = h; s->c = c;
  if (submit(t, c, o, 1, &b) < 0) free_op(t, o);
}
static void on_write(tinfo *t, long r, buf b, conn c);
static NOINLINE void start_read(tinfo *t, buf b, conn c);
static void on_read(tinfo *t, long r, buf b, conn c) {
  if (r <= 0) { free(b.base); close_conn(c); return; }
  b.pos = 0;
  start_write(t, b, on_write, c);
}
static void on_write(tinfo *t, long r, buf b, conn c) {
  if (r < 0) { free(b.base); close_conn(c); return; }
  start_read(t, b, c);
}
static NOINLINE void start_read(tinfo *t, buf b, conn c) {
  b.len = 0;
  op *o = alloc_op(t);
  if (!o) return;
  o->complete = recv_complete; o->result = 0;
  io_state *s = (io_state *)o->state; s->b = b; s->h = on_read; s->c = c;
  if (submit(t, c, o, 0, &b) < 0) free_op(t, o);
}

int main(int argc, char **argv) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) return 1;
  if (io_uring_queue_init(1024, &ring, 0) < 0) return 1;
  for (int i = 0; i < 4096; i++) { slots[i].next = pool_free; pool_free = &slots[i]; }
  tinfo ti = {0};
  queue ready = {0};
  /* accepts are not per message: a plain accept SQE with user_data 0 */
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
  io_uring_prep_accept(sqe, lfd, NULL, NULL, 0);
  io_uring_sqe_set_data(sqe, NULL);
  for (;;) {
    op *o;
    while ((o = qpop(&ready))) {
      o->complete(o, &ti);
      atomic_fetch_sub_explicit(&outstanding, 1, memory_order_relaxed);
    }
    if (ti.priv_work) { atomic_fetch_add_explicit(&outstanding, ti.priv_work, memory_order_relaxed); ti.priv_work = 0; }
    /* one io_uring_enter submits and waits, only when nothing is ready */
    if (!io_uring_cq_ready(&ring)) io_uring_submit_and_wait(&ring, 1);
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      seen++;
      op *p = io_uring_cqe_get_data(cqe);
      if (!p) { /* accept */
        int fd = cqe->res;
        if (fd >= 0 && fd < NDESC) {
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          table[fd].fd = fd;
          conn c = {fd, table[fd].gen};
          buf b = {malloc(BUF), 0, 0};
          start_read(&ti, b, c);
        } else if (fd >= 0) close(fd);
        struct io_uring_sqe *s2 = io_uring_get_sqe(&ring);
        io_uring_prep_accept(s2, lfd, NULL, NULL, 0);
        io_uring_sqe_set_data(s2, NULL);
        continue;
      }
      p->result = cqe->res;
      qpush(&ready, p);
    }
    io_uring_cq_advance(&ring, seen);
  }
}
