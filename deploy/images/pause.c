// The pod sandbox's process (the kubelet's "pause" container, as Kubernetes' build/pause/linux/pause.c):
// holds the pod's namespaces, exits on SIGINT/SIGTERM, reaps orphans when it is the pod's PID 1.
// Built statically by build.sh into the skein-pause image, so the test bed's containerd never pulls one.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { _exit(128 + sig); }

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(void) {
  struct sigaction term = {.sa_handler = on_term};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0 || sigaction(SIGCHLD, &child, NULL) < 0) return 1;
  for (;;) pause();
}
