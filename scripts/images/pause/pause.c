/*
 * The pod sandbox's process: it holds the pod's namespaces open and does nothing else.
 *
 * As PID 1 of the sandbox it also reaps orphaned children (with a shared PID namespace every
 * container's orphans are re-parented to it) and exits 0 on SIGINT or SIGTERM, so that the
 * runtime's stop is quick and clean. `pause -v` prints the version and exits.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "3.10.1 (fintech stand-in)"

static void stop(int signal_number) {
  (void)signal_number;
  _exit(0);
}

static void reap(int signal_number) {
  int saved_errno = errno;
  (void)signal_number;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved_errno;
}

static void handle(int signal_number, void (*handler)(int), int flags) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  if (sigaction(signal_number, &action, NULL) < 0) {
    perror("pause: sigaction");
    exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "-v") == 0) {
    printf("pause %s\n", VERSION);
    return 0;
  }
  if (getpid() != 1) {
    /* Not an error: it still waits for a signal, as the upstream one does. */
    fprintf(stderr, "pause: warning: not running as PID 1\n");
  }
  handle(SIGINT, stop, 0);
  handle(SIGTERM, stop, 0);
  handle(SIGCHLD, reap, SA_NOCLDSTOP | SA_RESTART);
  for (;;) {
    pause();
  }
  /* Not reached. */
  return 42;
}
