#ifndef ROWCAST_CLIBPQ_SHIM_H
#define ROWCAST_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
