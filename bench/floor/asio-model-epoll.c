/* The Asio operation model, hand-written in C with nothing extra: the floor
 * for any faithful implementation of issue 3's reactor. Per message:
 *   epoll event -> lock descriptor, check gen, perform_io (except, write,
 *   read order), recv, push completion, unlock
 *   run loop pops -> complete fn pointer: move handler out, free slot,
 *   call handler (a fn pointer + captures, as a type-erased closure)
 *   handler -> async_write: alloc slot, build op, lock, queue empty and
 *   try_speculative -> send, done -> unlock, post to private queue
 *   run loop pops -> complete: composed write checks all bytes sent,
 *   calls user handler -> async_read_some: alloc, build, lock, gen,
 *   queue checks, flag clear -> enqueue on descriptor, work++, unlock.
 * Single thread runs it, but locks and work counts are atomics, as in a
 * context that other threads may post to. */
#include "model.h"
#include <errno.h>
#include <sys/epoll.h>

#define MAXEV 128
enum { READ_OP = 0, WRITE_OP = 1, EXCEPT_OP = 2 };
enum { NOT_DONE, DONE, EXHAUSTED };

typedef struct {
  atomic_int lock;
  uint32_t gen;
  int fd;
  uint32_t ready;
  queue q[3];
  char try_spec[3];
} desc;

static desc table[NDESC];
static atomic_long outstanding;
static int ep;

/* The run thread: private queue and work count, recycled slot. */
struct tinfo { queue priv; long priv_work; op *recycled; };

static void close_conn(buf b, conn c) {
  free(b.base);
  close(table[c.index].fd);
  table[c.index].gen++;
}

/* ---- recv op ---- */
static int recv_perform(op *o, int fd) {
  io_state *s = (io_state *)o->state;
  size_t spare = BUF - s->b.len;
  for (;;) {
    ssize_t n = recv(fd, s->b.base + s->b.len, spare, 0);
    if (n > 0) { s->b.len += n; o->result = n; return (size_t)n < spare ? EXHAUSTED : DONE; }
    if (n == 0) { o->result = -1; return DONE; }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return NOT_DONE;
    o->result = -errno; return DONE;
  }
}
static void recv_complete(op *o, tinfo *here) {
  io_state s = *(io_state *)o->state;
  long r = o->result;
  free_op(&here->recycled, o);
  s.h(here, r, s.b, s.c);
}

/* ---- send op (one step of a composed async_write) ---- */
static int send_perform(op *o, int fd) {
  io_state *s = (io_state *)o->state;
  size_t left = s->b.len - s->b.pos;
  for (;;) {
    ssize_t n = send(fd, s->b.base + s->b.pos, left, MSG_NOSIGNAL);
    if (n >= 0) { o->result = n; return (size_t)n < left ? EXHAUSTED : DONE; }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return NOT_DONE;
    o->result = -errno; return DONE;
  }
}
static void start_write(tinfo *t, buf b, handler h, conn c);
static void send_complete(op *o, tinfo *here) {
  io_state s = *(io_state *)o->state;
  long r = o->result;
  free_op(&here->recycled, o);
  if (r < 0) { s.h(here, r, s.b, s.c); return; }
  s.b.pos += r;
  if (s.b.pos < s.b.len) { start_write(here, s.b, s.h, s.c); return; }  /* composed: next step */
  s.h(here, (long)s.b.len, s.b, s.c);
}

/* ---- start_op, Asio's patched version ---- */
static inline int start_op(tinfo *t, int type, conn c, op *o, int speculative) {
  if (c.index >= NDESC) return -1;
  desc *d = &table[c.index];
  lock(&d->lock);
  if (d->gen != c.gen) { unlock(&d->lock); return -1; }
  if (d->q[type].head == NULL && (type != READ_OP || d->q[EXCEPT_OP].head == NULL)) {
    if (speculative && d->try_spec[type]) {
      int st = o->perform(o, d->fd);
      if (st != NOT_DONE) {
        if (st == EXHAUSTED) d->try_spec[type] = 0;
        unlock(&d->lock);
        t->priv_work++;
        qpush(&t->priv, o);
        return 0;
      }
    }
  }
  qpush(&d->q[type], o);
  atomic_fetch_add_explicit(&outstanding, 1, memory_order_relaxed);
  unlock(&d->lock);
  return 0;
}

static void start_write(tinfo *t, buf b, handler h, conn c) {
  op *o = alloc_op(&t->recycled);
  if (!o) { h(t, -1, b, c); return; }
  o->complete = send_complete; o->perform = send_perform; o->result = 0;
  io_state *s = (io_state *)o->state; s->b = b; s->h = h; s->c = c;
  if (start_op(t, WRITE_OP, c, o, 1) < 0) free_op(&t->recycled, o);
}

#include "echo.h"
static NOINLINE void start_read(tinfo *t, buf b, conn c) {
  b.len = 0;
  op *o = alloc_op(&t->recycled);
  if (!o) return;
  o->complete = recv_complete; o->perform = recv_perform; o->result = 0;
  io_state *s = (io_state *)o->state; s->b = b; s->h = on_read; s->c = c;
  if (start_op(t, READ_OP, c, o, 1) < 0) free_op(&t->recycled, o);
}

/* ---- perform_io: except, write, read ---- */
static inline void perform_io(desc *d, uint32_t ev, queue *out) {
  static const uint32_t mask[3] = {EPOLLIN | EPOLLHUP | EPOLLERR, EPOLLOUT | EPOLLHUP | EPOLLERR, EPOLLPRI | EPOLLHUP | EPOLLERR};
  for (int j = EXCEPT_OP; j >= READ_OP; j--) {
    if (!(ev & mask[j])) continue;
    d->try_spec[j] = 1;
    op *o;
    while ((o = d->q[j].head)) {
      int st = o->perform(o, d->fd);
      if (st == NOT_DONE) break;
      qpop(&d->q[j]);
      qpush(out, o);
      if (st == EXHAUSTED) { d->try_spec[j] = 0; break; }
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  int lfd = listen_loopback(argv[1], SOCK_NONBLOCK);
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event le = {.events = EPOLLIN, .data.u64 = ~0ull};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
  pool_init();
  tinfo ti = {0};
  queue ready = {0};
  struct epoll_event evs[MAXEV];
  for (;;) {
    /* run the queued completions (the scheduler's batch) */
    op *o;
    while ((o = qpop(&ready))) {
      o->complete(o, &ti);
      atomic_fetch_sub_explicit(&outstanding, 1, memory_order_relaxed);
    }
    if (ti.priv.head) { /* publish private work, loop again */
      if (ti.priv_work) { atomic_fetch_add_explicit(&outstanding, ti.priv_work, memory_order_relaxed); ti.priv_work = 0; }
      ready = ti.priv; ti.priv.head = ti.priv.tail = NULL;
      if (ready.head) continue;
    }
    int n = epoll_wait(ep, evs, MAXEV, -1);
    for (int i = 0; i < n; i++) {
      uint64_t data = evs[i].data.u64;
      if (data == ~0ull) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0 || fd >= NDESC) { if (fd >= 0) close(fd); break; }
          set_nodelay(fd);
          desc *d = &table[fd];
          d->fd = fd; d->try_spec[0] = d->try_spec[1] = d->try_spec[2] = 1;
          conn c = {fd, d->gen};
          struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP | EPOLLPRI, .data.u64 = ((uint64_t)c.gen << 32) | (uint32_t)fd};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
          buf b = {malloc(BUF), 0, 0};
          start_read(&ti, b, c);
        }
        continue;
      }
      uint32_t index = (uint32_t)data, gen = data >> 32;
      if (index >= NDESC) continue;
      desc *d = &table[index];
      lock(&d->lock);
      if (d->gen != gen) { unlock(&d->lock); continue; }
      d->ready = evs[i].events;
      perform_io(d, evs[i].events, &ti.priv);
      unlock(&d->lock);
    }
    if (ti.priv.head) { ready = ti.priv; ti.priv.head = ti.priv.tail = NULL; }
  }
}
