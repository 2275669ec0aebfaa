// shed.h: see shed.c.
#ifndef HUSK_SHED_H
#define HUSK_SHED_H

void shim_shed_readonly(void);

#endif
