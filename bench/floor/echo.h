/* The echo itself, the same for both models: read_some -> write all ->
 * read_some; an error or end of stream closes the connection. Included
 * after the model's start_write and close_conn, before its start_read. */
static void on_write(tinfo *t, long r, buf b, conn c);
static NOINLINE void start_read(tinfo *t, buf b, conn c);
static void on_read(tinfo *t, long r, buf b, conn c) {
  if (r <= 0) { close_conn(b, c); return; }
  b.pos = 0;
  start_write(t, b, on_write, c);
}
static void on_write(tinfo *t, long r, buf b, conn c) {
  if (r < 0) { close_conn(b, c); return; }
  start_read(t, b, c);
}
