// The one thing Node cannot tell about a unix socket: who is on the other end. The Workload API attests its
// callers from it, so it must hold on to the very process that connected, not to a pid number that the
// kernel hands to another process once the connector exits: SO_PEERPIDFD (Linux >= 6.5) gives a pidfd of
// the process that called connect(); where it is missing, pidfd_open(SO_PEERCRED's pid) with a start-time
// check stands in for it.
#include <napi.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* include/uapi/asm-generic/socket.h, Linux 6.5 */
#endif

static Napi::Error ErrnoError(Napi::Env env, const std::string &what, int err)
{
	Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
	e.Set("errno", Napi::Number::New(env, err));
	return e;
}

/* Seconds since boot at which `pid` started (field 22 of /proc/<pid>/stat, in clock ticks); -1 if unknown. */
static double StartSecondsSinceBoot(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char buf[4096];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* comm (field 2) may hold spaces and parentheses: fields after it start after the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	unsigned long long start = 0;
	/* After ')': state (3) ... starttime (22), i.e. skip 19 fields. */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", &start) != 1)
		return -1;
	return (double)start / (double)sysconf(_SC_CLK_TCK);
}

static bool PidfdExited(int pidfd)
{
	struct pollfd p = {pidfd, POLLIN, 0};
	int r = poll(&p, 1, 0);
	return r != 0; /* readable (exited or reaped), or poll failed: never "alive" by mistake */
}

/*
 * peerProcess(fd, how = "auto"): { pid, uid, gid, pidfd, via } of the process that connected on `fd`.
 * how "pidfd_open" skips SO_PEERPIDFD (the fallback's path, for tests). The pidfd is O_CLOEXEC and the
 * caller's to close.
 */
static Napi::Value PeerProcess(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsNumber())
		throw Napi::TypeError::New(env, "peerProcess(fd, how?): fd must be a number");
	int fd = info[0].As<Napi::Number>().Int32Value();
	std::string how = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "auto";
	if (how != "auto" && how != "pidfd_open")
		throw Napi::TypeError::New(env, "peerProcess(fd, how?): how must be \"auto\" or \"pidfd_open\"");

	/* Taken first: the connection was made before this moment. */
	struct timespec accepted;
	clock_gettime(CLOCK_BOOTTIME, &accepted);

	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		throw ErrnoError(env, "getsockopt(SO_PEERCRED)", errno);

	int pidfd = -1;
	const char *via = "SO_PEERPIDFD";
	if (how == "auto") {
		len = sizeof(pidfd);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0) {
			/* ENOPROTOOPT: a kernel before 6.5. Anything else is a real failure (the peer is gone, ...). */
			if (errno != ENOPROTOOPT)
				throw ErrnoError(env, "getsockopt(SO_PEERPIDFD)", errno);
			pidfd = -1;
		}
	}
	if (pidfd < 0) {
		via = "pidfd_open";
		pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
		if (pidfd < 0)
			throw ErrnoError(env, "pidfd_open(" + std::to_string(cred.pid) + ")", errno);
		/*
		 * The pid may already be another process's: the connector exited and its pid was reused before we
		 * opened it. A process that started after the accept cannot be the connector. (A reuse between
		 * connect() and accept(), or within a clock tick of it, is the fallback's remaining window;
		 * SO_PEERPIDFD has none.) The start time is read while the pidfd's process is alive, so it is
		 * that process's.
		 */
		double started = StartSecondsSinceBoot(cred.pid);
		double acceptedAt = (double)accepted.tv_sec + (double)accepted.tv_nsec / 1e9;
		if (started < 0 || PidfdExited(pidfd) || started > acceptedAt) {
			close(pidfd);
			throw ErrnoError(env, "pidfd_open(" + std::to_string(cred.pid) + "): not the connecting process (it exited, or its pid was reused)", ESRCH);
		}
	}

	Napi::Object out = Napi::Object::New(env);
	out.Set("pid", Napi::Number::New(env, cred.pid));
	out.Set("uid", Napi::Number::New(env, cred.uid));
	out.Set("gid", Napi::Number::New(env, cred.gid));
	out.Set("pidfd", Napi::Number::New(env, pidfd));
	out.Set("via", Napi::String::New(env, via));
	return out;
}

/* pidfdAlive(pidfd): false once the process has exited (a zombie included), so its pid may be reused. */
static Napi::Value PidfdAlive(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsNumber())
		throw Napi::TypeError::New(env, "pidfdAlive(pidfd): pidfd must be a number");
	return Napi::Boolean::New(env, !PidfdExited(info[0].As<Napi::Number>().Int32Value()));
}

static Napi::Object Init(Napi::Env env, Napi::Object exports)
{
	exports.Set("peerProcess", Napi::Function::New(env, PeerProcess));
	exports.Set("pidfdAlive", Napi::Function::New(env, PidfdAlive));
	return exports;
}

NODE_API_MODULE(peer_cred, Init)
