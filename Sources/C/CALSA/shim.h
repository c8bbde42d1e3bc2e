#ifndef SHROUD_CALSA_SHIM_H
#define SHROUD_CALSA_SHIM_H
#include <alsa/asoundlib.h>
#endif
