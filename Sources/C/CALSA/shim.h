#ifndef SHROUD_CALSA_SHIM_H
#define SHROUD_CALSA_SHIM_H
#include <alsa/asoundlib.h>

// ALSA prints its own diagnostics ("ALSA lib pcm.c:…: Unknown PCM foo") to stderr through a
// variadic handler; Swift cannot define a variadic C function, so the silent handler lives here.
// Shroud reports each failure itself as a one-line MediaError.
static void shroud_alsa_silent_error(const char *file, int line, const char *function, int err,
                                     const char *fmt, ...) {
    (void)file; (void)line; (void)function; (void)err; (void)fmt;
}
static inline void shroud_alsa_silence_errors(void) { snd_lib_error_set_handler(shroud_alsa_silent_error); }
#endif
