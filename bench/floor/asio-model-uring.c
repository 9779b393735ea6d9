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
#include "model.h"
#include <liburing.h>

typedef struct { int fd; uint32_t gen; } desc;
static desc table[NDESC];
static struct io_uring ring;
static atomic_int sq_lock;
static atomic_long outstanding;

/* The run thread: recycled slot and private work count. */
struct tinfo { op *recycled; long priv_work; };

static void close_conn(buf b, conn c) {
  free(b.base);
  close(table[c.index].fd);
  table[c.index].gen++;
}

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

static void recv_complete(op *o, tinfo *here) {
  io_state s = *(io_state *)o->state;
  long r = o->result;
  free_op(&here->recycled, o);
  if (r > 0) s.b.len += r;
  s.h(here, r == 0 ? -1 : r, s.b, s.c);
}
static void start_write(tinfo *t, buf b, handler h, conn c);
static void send_complete(op *o, tinfo *here) {
  io_state s = *(io_state *)o->state;
  long r = o->result;
  free_op(&here->recycled, o);
  if (r < 0) { s.h(here, r, s.b, s.c); return; }
  s.b.pos += r;
  if (s.b.pos < s.b.len) { start_write(here, s.b, s.h, s.c); return; }
  s.h(here, (long)s.b.len, s.b, s.c);
}
static void start_write(tinfo *t, buf b, handler h, conn c) {
  op *o = alloc_op(&t->recycled);
  if (!o) { h(t, -1, b, c); return; }
  o->complete = send_complete; o->result = 0;
  io_state *s = (io_state *)o->state; s->b = b; s->h = h; s->c = c;
  if (submit(t, c, o, 1, &b) < 0) free_op(&t->recycled, o);
}
#include "echo.h"
static NOINLINE void start_read(tinfo *t, buf b, conn c) {
  b.len = 0;
  op *o = alloc_op(&t->recycled);
  if (!o) return;
  o->complete = recv_complete; o->result = 0;
  io_state *s = (io_state *)o->state; s->b = b; s->h = on_read; s->c = c;
  if (submit(t, c, o, 0, &b) < 0) free_op(&t->recycled, o);
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  int lfd = listen_loopback(argv[1], 0);
  if (io_uring_queue_init(1024, &ring, 0) < 0) return 1;
  pool_init();
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
          set_nodelay(fd);
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
