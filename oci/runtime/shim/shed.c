// The programs here that live as long as a container or a pod (the
// monitor, the pod init) give back, once they are set up, the pages of
// husk-runtime they mapped to start: the kernel maps a file's pages 64 KiB
// at a time around each one touched, so starting maps some 1 MiB of code
// and constants that the loop that follows never runs. Dropped from the
// process (not from memory: the sealed binary is shared by all), only the
// pages the loop touches come back, which halves the resident size of
// each monitor and pod init.
#define _GNU_SOURCE
#include <link.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shed.h"

static int shed_executable(struct dl_phdr_info *info, size_t size, void *data) {
	(void)size;
	(void)data;
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		// Only segments that were never writable: their pages are the
		// file's, read again when touched. A writable segment holds the
		// data, and the part of it made read-only after relocation
		// (RELRO) has pages of its own that dropping would lose.
		// (husk-runtime has no text relocations.)
		if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W))
			continue;
		uintptr_t start = (info->dlpi_addr + ph->p_vaddr + page - 1) & ~(page - 1);
		uintptr_t end = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz) & ~(page - 1);
		if (end > start)
			madvise((void *)start, end - start, MADV_DONTNEED);
	}
	return 1; // the executable is the first object; the vDSO is not ours
}

void shim_shed_readonly(void) { dl_iterate_phdr(shed_executable, NULL); }
