package shim

/*
#include "contract.h"

static const char *contract_string(int i) {
	switch (i) {
	case 0: return STATE_PID;
	case 1: return STATE_EXIT;
	case 2: return STATE_MONITOR;
	case 3: return STATE_ATTACH;
	case 4: return ENV_CGROUP_FD;
	case 5: return ENV_CONSOLE_FD;
	case 6: return ENV_POD_USERNS;
	}
	return "";
}

static long contract_number(int i) {
	static const long n[] = {EXEC_SERVER_EXEC, EXEC_SERVER_KILL, EXEC_SERVER_FDS, EXEC_SERVER_MAX_CGROUPS,
				 EXEC_SERVER_MAX_ARGS, EXEC_SERVER_MAX_MESSAGE, EXEC_SERVER_MAX_RUNNING,
				 sizeof(struct exec_request)};
	return i >= 0 && i < (int)(sizeof n / sizeof n[0]) ? n[i] : -1;
}

static char contract_byte(int i) {
	static const char b[] = {ATTACH_HELLO, ATTACH_INPUT, ATTACH_CLOSE, ATTACH_RESIZE,
				 ATTACH_STDOUT, ATTACH_STDERR, PLACED_GO, PLACED_REFUSED};
	return i >= 0 && i < (int)sizeof b ? b[i] : 0;
}
*/
import "C"

// contract is contract.h's values, in the order of the switch and the
// array above, for the test that compares them with package monitor's (a
// test file cannot use cgo).
func contract() (strs []string, bytes []byte) {
	for i := range 7 {
		strs = append(strs, C.GoString(C.contract_string(C.int(i))))
	}
	for i := range 8 {
		bytes = append(bytes, byte(C.contract_byte(C.int(i))))
	}
	return strs, bytes
}

// execServerContract is contract.h's EXEC_SERVER_* numbers and the size
// of its struct exec_request, in contract_number's order.
func execServerContract() (n []int) {
	for i := range 8 {
		n = append(n, int(C.contract_number(C.int(i))))
	}
	return n
}
