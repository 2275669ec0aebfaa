// The monitor's command line (contract.h's struct monitor_args).
#define _GNU_SOURCE
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "monitor.h"

MON_TEXT int parse_monitor_args(int argc, char **argv, struct monitor_args *a) {
	static const struct option opts[] = {
		{"state", required_argument, 0, 's'},
		{"log", required_argument, 0, 'l'},
		{"log-dir", required_argument, 0, 'L'},
		{"oom", required_argument, 0, 'o'},
		{"oom-parent", required_argument, 0, 'Q'},
		{"oom-notify", no_argument, 0, 'N'},
		{"netns", required_argument, 0, 'n'},
		{"ipcns", required_argument, 0, 'i'},
		{"utsns", required_argument, 0, 'u'},
		{"pidns", required_argument, 0, 'p'},
		{"userns", required_argument, 0, 'U'},
		{"newpid", no_argument, 0, 'P'},
		{"exec-fd", required_argument, 0, 'e'},
		{"cgroup", required_argument, 0, 'c'},
		{"cgroup-sync", required_argument, 0, 'S'},
		{"oom-score-adj", required_argument, 0, 'A'},
		{"runtime-pid-file", required_argument, 0, 'R'},
		{"tty", no_argument, 0, 't'},
		{"stdin", no_argument, 0, 'I'},
		{"stdin-once", no_argument, 0, 'O'},
		{0, 0, 0, 0}};
	memset(a, 0, sizeof *a);
	a->exec_fd = -1;
	a->cgroup_sync = -1;
	// 0, not 1: getopt starts afresh (the tests parse many command lines
	// in one process) and skips argv[0].
	optind = 0;
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		switch (c) {
		case 's': a->state = optarg; break;
		case 'l': a->log_path = optarg; break;
		case 'L': a->log_dir = optarg; break;
		case 'o': a->oom = optarg; break;
		case 'Q': a->oom_parent = optarg; break;
		case 'N': a->oom_notify = 1; break;
		case 'n': a->netns = optarg; break;
		case 'i': a->ipcns = optarg; break;
		case 'u': a->utsns = optarg; break;
		case 'p': a->pidns = optarg; break;
		case 'U': a->userns = optarg; break;
		case 'P': a->newpid = 1; break;
		case 'e': a->exec_fd = atoi(optarg); break;
		case 'c':
			if (a->ncgroups == MAX_CGROUPS)
				return -1;
			a->cgroups[a->ncgroups++] = optarg;
			break;
		case 'S': a->cgroup_sync = atoi(optarg); break;
		case 'A': a->oom_score_adj = optarg; break;
		case 'R': a->runtime_pid_file = optarg; break;
		case 't': a->tty = 1; break;
		case 'I': a->with_stdin = 1; break;
		case 'O': a->stdin_once = 1; break;
		default: return -1;
		}
	}
	// The daemon places the program, or the monitor does: not both.
	if (a->state == NULL || a->log_path == NULL || optind >= argc || (a->cgroup_sync >= 0 && a->ncgroups > 0))
		return -1;
	a->prog = argv + optind;
	return 0;
}
