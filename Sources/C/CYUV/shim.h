#ifndef SHROUD_CYUV_SHIM_H
#define SHROUD_CYUV_SHIM_H
// libyuv ships no pkg-config file; the module map links "yuv" directly.
#include <libyuv.h>
#endif
