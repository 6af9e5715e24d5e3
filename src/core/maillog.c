/* maillog.c — being written. */
#include "core/maillog.h"
