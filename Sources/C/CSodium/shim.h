#ifndef SHROUD_CSODIUM_SHIM_H
#define SHROUD_CSODIUM_SHIM_H
#include <sodium.h>
#endif
