// connect() + one request/response round trip, timed in C so that what the datapath costs is what shows
// (a Node client's own per-connection overhead would hide a few microseconds of difference).
//   rr server PORT        accept; read 1 byte; write 1 byte; close — until killed
//   rr client IP PORT N   N times: socket, connect, write 1 byte, read 1 byte, close; prints N lines of ns
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int serve(int port)
{
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 1024)) {
		perror("rr server: bind/listen");
		return 1;
	}
	for (;;) {
		int s = accept(ls, NULL, NULL);
		char c;
		if (s < 0)
			continue;
		if (read(s, &c, 1) == 1)
			(void)!write(s, &c, 1);
		close(s);
	}
}

static int client(const char *ip, int port, long n)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		fprintf(stderr, "rr client: %s is not an IPv4 address\n", ip);
		return 2;
	}
	long long *lat = calloc(n, sizeof(*lat));
	for (long i = 0; i < n; i++) {
		long long t0 = now_ns();
		int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
		char c = 'x';
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(s, (struct sockaddr *)&a, sizeof(a)) || write(s, &c, 1) != 1 || read(s, &c, 1) != 1) {
			fprintf(stderr, "rr client: request %ld to %s:%d: %s\n", i, ip, port, strerror(errno));
			return 1;
		}
		close(s);
		lat[i] = now_ns() - t0;
	}
	for (long i = 0; i < n; i++)
		printf("%lld\n", lat[i]);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "server"))
		return serve(atoi(argv[2]));
	if (argc == 5 && !strcmp(argv[1], "client"))
		return client(argv[2], atoi(argv[3]), atol(argv[4]));
	fprintf(stderr, "usage: rr server PORT | rr client IP PORT N\n");
	return 2;
}
