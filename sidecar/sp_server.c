/*
 * sp_server: SP over ipc:// on a libev loop (see sp_server.h): the socket
 * file, accepting, the header exchange, framing, and each pipe's kept
 * output.
 *
 * Invariants of a pipe:
 * - in[0..in_len) holds bytes read and not yet handed to on_message; a
 *   frame is handed over only once it is whole, so in_cap grows to the
 *   largest frame the peer sent (at most max_message + SP_FRAME_HEAD) and
 *   shrinks back to SP_IN_MIN when the buffer empties.
 * - out[out_off..out_len) is output the kernel has not taken; the write
 *   watcher runs exactly while it is not empty.
 * - The read watcher runs while the pipe is open, reading is wanted and
 *   unsent output is at most max_unsent.
 * - refs counts the server's own reference (dropped at close) and every
 *   sp_pipe_hold; the pipe is freed when it reaches 0.
 */
#include "sp_server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

#define SP_IN_MIN      (64u << 10)
#define SP_BACKLOG     128
#define SP_ACCEPT_WAIT 0.1 /* s: out of descriptors, try again later */
#define SP_LOG_BURST   10  /* log lines a second */

struct sp_pipe {
	struct sp_server *srv;
	int fd;
	ev_io rw, ww;
	ev_timer handshake;
	int refs;
	bool open;      /* accepted and not closed */
	bool opened;    /* headers exchanged; on_open ran */
	bool reading;   /* the owner wants it read */
	bool in_frames; /* the peer's header is checked */
	uint8_t *in;
	size_t in_len, in_cap;
	uint8_t *out;
	size_t out_off, out_len, out_cap;
	void *data;
	struct sp_pipe *prev, *next; /* the server's open pipes */
};

struct sp_server {
	struct ev_loop *loop;
	struct sp_server_config cfg;
	char what[32];
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t dev; /* of the socket file we bound: removed only if ours */
	ino_t ino;
	struct sp_server_ops ops;
	void *arg;
	int lfd;
	ev_io lw;
	ev_timer accept_wait;
	uint8_t header[SP_HEADER_LEN];
	struct sp_pipe *pipes;
	struct log_limit log_limit; /* server_log's */
};

static void server_emit(struct sp_server *srv, const char *line)
{
	if (srv->ops.on_log)
		srv->ops.on_log(srv->arg, line);
	else
		log_warn("%s", line);
}

/*
 * One line, prefixed with what, through on_log or else as a warning. A
 * local process can make a line per connection, so at most SP_LOG_BURST
 * are written a second, then one saying how many were left out.
 */
__attribute__((format(printf, 2, 3))) static void
server_log(struct sp_server *srv, const char *fmt, ...)
{
	char line[512];
	unsigned missed;
	bool pass = log_limit_pass(&srv->log_limit, (int64_t)ev_now(srv->loop),
	                           SP_LOG_BURST, &missed);
	size_t n;
	va_list ap;
	if (missed) {
		snprintf(line, sizeof(line),
		         "%s: %u more line(s) about connections not logged",
		         srv->what, missed);
		server_emit(srv, line);
	}
	if (!pass)
		return;
	n = (size_t)snprintf(line, sizeof(line), "%s: ", srv->what);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	server_emit(srv, line);
}

/* --- pipes --- */

static void pipe_update_reading(struct sp_pipe *p)
{
	bool want = p->open && p->reading &&
	            p->out_len - p->out_off <= p->srv->cfg.max_unsent;
	if (want && !ev_is_active(&p->rw)) {
		ev_io_start(p->srv->loop, &p->rw);
		/* Frames read before the pause are delivered now, not when
		 * the peer next sends. */
		if (p->in_len > 0)
			ev_feed_event(p->srv->loop, &p->rw, EV_READ);
	} else if (!want && ev_is_active(&p->rw))
		ev_io_stop(p->srv->loop, &p->rw);
}

static void pipe_free(struct sp_pipe *p)
{
	free(p->in);
	free(p->out);
	free(p);
}

void sp_pipe_hold(struct sp_pipe *p)
{
	p->refs++;
}

void sp_pipe_release(struct sp_pipe *p)
{
	if (--p->refs == 0)
		pipe_free(p);
}

void sp_pipe_close(struct sp_pipe *p)
{
	struct sp_server *srv = p->srv;
	if (!p->open)
		return;
	p->open = false;
	ev_io_stop(srv->loop, &p->rw);
	ev_io_stop(srv->loop, &p->ww);
	ev_timer_stop(srv->loop, &p->handshake);
	close(p->fd);
	p->fd = -1;
	if (p->prev)
		p->prev->next = p->next;
	else
		srv->pipes = p->next;
	if (p->next)
		p->next->prev = p->prev;
	p->out_off = p->out_len = 0;
	free(p->out);
	p->out = NULL;
	p->out_cap = 0;
	/* The server's own reference keeps p valid through on_close. */
	if (p->opened && srv->ops.on_close)
		srv->ops.on_close(srv->arg, p);
	sp_pipe_release(p);
}

bool sp_pipe_is_open(const struct sp_pipe *p)
{
	return p->open;
}

size_t sp_pipe_unsent(const struct sp_pipe *p)
{
	return p->out_len - p->out_off;
}

void sp_pipe_set_reading(struct sp_pipe *p, bool reading)
{
	p->reading = reading;
	pipe_update_reading(p);
}

void sp_pipe_set_data(struct sp_pipe *p, void *data)
{
	p->data = data;
}

void *sp_pipe_data(const struct sp_pipe *p)
{
	return p->data;
}

/* Writes kept output. 0 when all of it went, 1 when some is still kept,
 * -1 when p was closed. */
static int pipe_flush(struct sp_pipe *p)
{
	while (p->out_off < p->out_len) {
		ssize_t n = send(p->fd, p->out + p->out_off,
		                 p->out_len - p->out_off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 1;
		if (n < 0) {
			sp_pipe_close(p);
			return -1;
		}
		p->out_off += (size_t)n;
	}
	p->out_off = p->out_len = 0;
	return 0;
}

/* Keeps len bytes at the end of the output; false when out of memory. */
static bool pipe_keep(struct sp_pipe *p, const void *data, size_t len)
{
	if (p->out_len + len > p->out_cap && p->out_off > 0) {
		memmove(p->out, p->out + p->out_off, p->out_len - p->out_off);
		p->out_len -= p->out_off;
		p->out_off = 0;
	}
	if (p->out_len + len > p->out_cap) {
		size_t cap = p->out_cap ? p->out_cap : 4096;
		while (cap < p->out_len + len)
			cap *= 2;
		uint8_t *out = realloc(p->out, cap);
		if (!out)
			return false;
		p->out = out;
		p->out_cap = cap;
	}
	memcpy(p->out + p->out_len, data, len);
	p->out_len += len;
	return true;
}

static void pipe_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sp_pipe *p = w->data;
	struct sp_server *srv = p->srv;
	(void)revents;
	if (pipe_flush(p) != 0)
		return;
	ev_io_stop(loop, &p->ww);
	pipe_update_reading(p);
	if (srv->ops.on_drained) {
		sp_pipe_hold(p);
		srv->ops.on_drained(srv->arg, p);
		sp_pipe_release(p);
	}
}

int sp_pipe_send(struct sp_pipe *p, const struct iovec *iov, int n)
{
	uint8_t head[SP_FRAME_HEAD];
	struct iovec v[1 + 8];
	size_t total = 0, sent = 0;
	if (!p->open || n < 0 || n > 8)
		return -1;
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	sp_wire_frame_head(head, total);
	v[0].iov_base = head;
	v[0].iov_len = sizeof(head);
	memcpy(v + 1, iov, (size_t)n * sizeof(*iov));

	/* Behind kept output the message joins the queue: frames leave in
	 * order. */
	if (p->out_off == p->out_len) {
		struct msghdr mh = {.msg_iov = v, .msg_iovlen = (size_t)n + 1};
		ssize_t w;
		do
			w = sendmsg(p->fd, &mh, MSG_NOSIGNAL);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			sp_pipe_close(p);
			return -1;
		}
		sent = w > 0 ? (size_t)w : 0;
		if (sent == total + sizeof(head))
			return 0;
	}
	for (int i = 0; i <= n; i++) {
		size_t len = v[i].iov_len;
		const uint8_t *base = v[i].iov_base;
		size_t skip = sent < len ? sent : len;
		sent -= skip;
		if (len > skip && !pipe_keep(p, base + skip, len - skip)) {
			sp_pipe_close(p);
			return -1;
		}
	}
	if (!ev_is_active(&p->ww))
		ev_io_start(p->srv->loop, &p->ww);
	pipe_update_reading(p);
	return 0;
}

/* Hands every whole frame in p->in to on_message; false when p closed. */
static bool pipe_deliver(struct sp_pipe *p)
{
	struct sp_server *srv = p->srv;
	size_t at = 0;
	if (!p->in_frames) {
		if (p->in_len < SP_HEADER_LEN)
			return true;
		if (!sp_wire_header_is(p->in, srv->cfg.peer)) {
			server_log(srv,
			           "refused a connection: not an SP "
			           "header of protocol 0x%x",
			           srv->cfg.peer);
			sp_pipe_close(p);
			return false;
		}
		p->in_frames = true;
		p->opened = true;
		ev_timer_stop(srv->loop, &p->handshake);
		at = SP_HEADER_LEN;
		if (srv->ops.on_open) {
			srv->ops.on_open(srv->arg, p);
			if (!p->open)
				return false;
		}
	}
	/* Frames already read wait, too, while the peer does not read. */
	while (p->open && p->reading &&
	       p->out_len - p->out_off <= srv->cfg.max_unsent &&
	       p->in_len - at >= SP_FRAME_HEAD) {
		const uint8_t *f = p->in + at;
		uint64_t len = sp_wire_frame_len(f);
		if (f[0] != SP_MSG_TYPE || len > srv->cfg.max_message) {
			if (f[0] != SP_MSG_TYPE)
				server_log(srv,
				           "closed a pipe: frame type "
				           "0x%02x is not a message",
				           f[0]);
			else
				server_log(srv,
				           "closed a pipe: a %llu-byte "
				           "message is over the %zu-byte "
				           "limit",
				           (unsigned long long)len,
				           srv->cfg.max_message);
			sp_pipe_close(p);
			return false;
		}
		if (p->in_len - at - SP_FRAME_HEAD < len) {
			size_t need = SP_FRAME_HEAD + (size_t)len;
			if (need > p->in_cap) {
				/* Room for the whole frame, where it starts. */
				memmove(p->in, f, p->in_len - at);
				p->in_len -= at;
				at = 0;
				uint8_t *in = realloc(p->in, need);
				if (!in) {
					server_log(srv, "closed a pipe: out "
					                "of memory");
					sp_pipe_close(p);
					return false;
				}
				p->in = in;
				p->in_cap = need;
			}
			break;
		}
		at += SP_FRAME_HEAD + (size_t)len;
		srv->ops.on_message(srv->arg, p, f + SP_FRAME_HEAD,
		                    (size_t)len);
	}
	if (!p->open)
		return false;
	memmove(p->in, p->in + at, p->in_len - at);
	p->in_len -= at;
	if (p->in_len == 0 && p->in_cap > SP_IN_MIN) {
		uint8_t *in = realloc(p->in, SP_IN_MIN);
		if (in) {
			p->in = in;
			p->in_cap = SP_IN_MIN;
		}
	}
	return true;
}

static void pipe_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sp_pipe *p = w->data;
	(void)loop;
	(void)revents;
	if (!p->open)
		return;
	/* One read per callback: the loop is level-triggered, and other
	 * pipes and the browsers get their turn in between. The buffer can
	 * be full only of frames a pause left undelivered. */
	if (p->in_len < p->in_cap) {
		ssize_t n;
		do
			n = recv(p->fd, p->in + p->in_len,
			         p->in_cap - p->in_len, 0);
		while (n < 0 && errno == EINTR);
		if (n == 0 ||
		    (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
			sp_pipe_close(p);
			return;
		}
		if (n > 0)
			p->in_len += (size_t)n;
	}
	sp_pipe_hold(p);
	if (pipe_deliver(p))
		pipe_update_reading(p);
	sp_pipe_release(p);
}

static void pipe_handshake_expired(struct ev_loop *loop, ev_timer *w,
                                   int revents)
{
	struct sp_pipe *p = w->data;
	(void)loop;
	(void)revents;
	server_log(p->srv, "closed a connection that sent no SP header");
	sp_pipe_close(p);
}

/* --- the listener --- */

static void accept_resume(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sp_server *srv = w->data;
	(void)revents;
	ev_io_start(loop, &srv->lw);
}

static void server_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sp_server *srv = w->data;
	(void)revents;
	for (int i = 0; i < SP_BACKLOG; i++) {
		int fd =
		    accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				/* The listen queue stays readable: wait
				 * instead of spinning on it. */
				server_log(srv, "cannot accept: %s",
				           strerror(errno));
				ev_io_stop(loop, &srv->lw);
				ev_timer_set(&srv->accept_wait, SP_ACCEPT_WAIT,
				             0.);
				ev_timer_start(loop, &srv->accept_wait);
			}
			return;
		}
		struct sp_pipe *p = calloc(1, sizeof(*p));
		uint8_t *in = malloc(SP_IN_MIN);
		/* 8 bytes always fit in a new socket's buffer. */
		if (!p || !in ||
		    send(fd, srv->header, SP_HEADER_LEN, MSG_NOSIGNAL) !=
		        SP_HEADER_LEN) {
			free(p);
			free(in);
			close(fd);
			continue;
		}
		p->srv = srv;
		p->fd = fd;
		p->refs = 1;
		p->open = true;
		p->reading = true;
		p->in = in;
		p->in_cap = SP_IN_MIN;
		ev_io_init(&p->rw, pipe_readable, fd, EV_READ);
		ev_io_init(&p->ww, pipe_writable, fd, EV_WRITE);
		ev_timer_init(&p->handshake, pipe_handshake_expired,
		              SP_HANDSHAKE_MS / 1000., 0.);
		p->rw.data = p->ww.data = p->handshake.data = p;
		p->next = srv->pipes;
		if (srv->pipes)
			srv->pipes->prev = p;
		srv->pipes = p;
		ev_io_start(loop, &p->rw);
		ev_timer_start(loop, &p->handshake);
	}
}

/*
 * mkdir -p of the directory of path. What it creates is the sidecar's
 * user's alone (0700, whatever the umask), plus search permission for the
 * group or others when ipc_mode lets them use the socket: they need it to
 * reach the file, and nobody else may create or rename entries in it.
 */
static void make_parent_dirs(const char *path, int ipc_mode)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	mode_t mode = 0700 | ((ipc_mode & 0070) ? 0010 : 0) |
	              ((ipc_mode & 0007) ? 0001 : 0);
	snprintf(dir, sizeof(dir), "%s", path);
	for (char *c = dir + 1; *c; c++) {
		if (*c != '/')
			continue;
		*c = '\0';
		if (mkdir(dir, mode) == 0)
			chmod(dir, mode);
		*c = '/';
	}
}

/*
 * Refuses a socket directory that someone else could write: its owner, or
 * whoever may write it, can replace the socket file with one of their own
 * (then backends talk to them) -- e.g. a /tmp/wsgate created first by
 * another user. So the directory (and the symbolic link to it, if it is
 * one) must belong to the effective uid and not be writable by group or
 * others. /tmp itself (1777) fails this too: its sticky bit keeps others
 * from replacing our file, but not from binding the name first while we
 * are not running (docs/SECURITY.md).
 */
static int check_parent_dir(const struct sp_server *srv, char *err,
                            size_t errlen)
{
	char dir[sizeof(srv->path)];
	char *slash;
	struct stat lst, st;
	uid_t me = geteuid();
	snprintf(dir, sizeof(dir), "%s", srv->path);
	slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0'; /* "/x.ipc" is in "/" */
	else
		*slash = '\0';
	if (lstat(dir, &lst) != 0 || stat(dir, &st) != 0) {
		snprintf(err, errlen, "%s: cannot listen on ipc://%s: %s: %s",
		         srv->what, srv->path, dir, strerror(errno));
		return -1;
	}
	if (lst.st_uid != me || st.st_uid != me) {
		snprintf(err, errlen,
		         "%s: refusing ipc://%s: its directory %s belongs to "
		         "uid %u, not to uid %u (this process), who could "
		         "replace the socket: chown %u %s, or choose another "
		         "--%s path",
		         srv->what, srv->path, dir,
		         (unsigned)(lst.st_uid != me ? lst.st_uid : st.st_uid),
		         (unsigned)me, (unsigned)me, dir, srv->what);
		return -1;
	}
	if ((st.st_mode & 022) && (st.st_mode & S_ISVTX)) {
		snprintf(err, errlen,
		         "%s: refusing ipc://%s: its directory %s is shared "
		         "(mode %04o): another user could create the socket "
		         "there before this process; choose another --%s path, "
		         "in a directory of its own",
		         srv->what, srv->path, dir,
		         (unsigned)(st.st_mode & 07777), srv->what);
		return -1;
	}
	if (st.st_mode & 022) {
		snprintf(err, errlen,
		         "%s: refusing ipc://%s: its directory %s is writable "
		         "by group or others (mode %04o), who could replace "
		         "the socket: chmod go-w %s, or choose another --%s "
		         "path",
		         srv->what, srv->path, dir,
		         (unsigned)(st.st_mode & 07777), dir, srv->what);
		return -1;
	}
	return 0;
}

/* Whether something accepts connections at addr. */
static bool socket_is_live(const struct sockaddr_un *addr)
{
	/* Non-blocking: a live server with a full backlog answers EAGAIN
	 * at once (live) instead of making us wait. */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	bool live;
	if (fd < 0)
		return true; /* cannot tell: do not take it over */
	live = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0 ||
	       (errno != ECONNREFUSED && errno != ENOENT);
	close(fd);
	return live;
}

/*
 * Binds a socket file at srv->path with mode ipc_mode from its first
 * moment: bound under a temporary name, chmod-ed, then renamed over the
 * path (a stale socket file is replaced; rename keeps the inode, which is
 * what connect finds).
 */
static int server_bind(struct sp_server *srv, char *err, size_t errlen)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX}, tmp = addr;
	struct stat st;
	int n;
	memcpy(addr.sun_path, srv->path, sizeof(addr.sun_path));
	n = snprintf(tmp.sun_path, sizeof(tmp.sun_path), "%s.%ld.tmp",
	             srv->path, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp.sun_path)) {
		snprintf(err, errlen, "%s: socket path too long: %s", srv->what,
		         srv->path);
		return -1;
	}
	if (lstat(srv->path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen,
			         "%s: %s exists and is not a socket", srv->what,
			         srv->path);
			return -1;
		}
		if (socket_is_live(&addr)) {
			snprintf(
			    err, errlen,
			    "%s: cannot listen on ipc://%s: address in use",
			    srv->what, srv->path);
			return -1;
		}
	}
	srv->lfd =
	    socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv->lfd < 0)
		goto fail;
	unlink(tmp.sun_path);
	if (bind(srv->lfd, (struct sockaddr *)&tmp, sizeof(tmp)) != 0)
		goto fail;
	if (chmod(tmp.sun_path, (mode_t)srv->cfg.ipc_mode) != 0 ||
	    listen(srv->lfd, SP_BACKLOG) != 0 ||
	    rename(tmp.sun_path, srv->path) != 0 || stat(srv->path, &st) != 0) {
		int e = errno;
		unlink(tmp.sun_path);
		errno = e;
		goto fail;
	}
	srv->dev = st.st_dev;
	srv->ino = st.st_ino;
	return 0;
fail:
	snprintf(err, errlen, "%s: cannot listen on ipc://%s: %s", srv->what,
	         srv->path, strerror(errno));
	if (srv->lfd >= 0)
		close(srv->lfd);
	srv->lfd = -1;
	return -1;
}

int sp_server_listen(struct sp_server **out, struct ev_loop *loop,
                     const struct sp_server_config *cfg,
                     const struct sp_server_ops *ops, void *arg, char *err,
                     size_t errlen)
{
	const char *path;
	struct sp_server *srv;
	if (strncmp(cfg->url, "ipc://", 6) != 0) {
		snprintf(err, errlen,
		         "%s: %s: only ipc:// addresses are served", cfg->what,
		         cfg->url);
		return -1;
	}
	path = cfg->url + 6;
	srv = calloc(1, sizeof(*srv));
	if (!srv) {
		snprintf(err, errlen, "%s: out of memory", cfg->what);
		return -1;
	}
	snprintf(srv->what, sizeof(srv->what), "%s", cfg->what);
	if (!*path || strlen(path) >= sizeof(srv->path)) {
		snprintf(err, errlen, "%s: bad socket path: %s", srv->what,
		         cfg->url);
		free(srv);
		return -1;
	}
	memcpy(srv->path, path, strlen(path) + 1);
	srv->loop = loop;
	srv->cfg = *cfg;
	srv->cfg.what = srv->what;
	srv->cfg.url = NULL; /* not kept: path is */
	srv->ops = *ops;
	srv->arg = arg;
	sp_wire_header(srv->header, cfg->proto);
	srv->lfd = -1;
	make_parent_dirs(srv->path, cfg->ipc_mode);
	if (check_parent_dir(srv, err, errlen) != 0 ||
	    server_bind(srv, err, errlen) != 0) {
		free(srv);
		return -1;
	}
	ev_io_init(&srv->lw, server_accept, srv->lfd, EV_READ);
	ev_timer_init(&srv->accept_wait, accept_resume, SP_ACCEPT_WAIT, 0.);
	srv->lw.data = srv->accept_wait.data = srv;
	ev_io_start(loop, &srv->lw);
	*out = srv;
	return 0;
}

void sp_server_close(struct sp_server *srv)
{
	struct stat st;
	if (!srv)
		return;
	ev_io_stop(srv->loop, &srv->lw);
	ev_timer_stop(srv->loop, &srv->accept_wait);
	while (srv->pipes) {
		struct sp_pipe *p = srv->pipes;
		sp_pipe_hold(p); /* pipe_flush may close p */
		if (p->out_off < p->out_len)
			pipe_flush(p);
		sp_pipe_close(p);
		sp_pipe_release(p);
	}
	close(srv->lfd);
	/* Only our own file: another process may have taken the path. */
	if (stat(srv->path, &st) == 0 && st.st_dev == srv->dev &&
	    st.st_ino == srv->ino)
		unlink(srv->path);
	free(srv);
}
