#ifndef SHROUD_CX11_SHIM_H
#define SHROUD_CX11_SHIM_H
#include <X11/Xlib.h>
#include <X11/Xutil.h>
#include <X11/extensions/XShm.h>
#include <sys/ipc.h>
#include <sys/shm.h>

// XDestroyImage is a macro over the image's function table; shmat returns (void *)-1 on failure,
// which Swift cannot compare against directly.
static inline int shroud_x_destroy_image(XImage *image) { return XDestroyImage(image); }
static inline void *shroud_shmat(int id) { void *p = shmat(id, 0, 0); return p == (void *)-1 ? (void *)0 : p; }
static inline int shroud_x_default_screen(Display *d) { return DefaultScreen(d); }
static inline Window shroud_x_root_window(Display *d, int screen) { return RootWindow(d, screen); }
static inline Visual *shroud_x_default_visual(Display *d, int screen) { return DefaultVisual(d, screen); }
static inline int shroud_x_default_depth(Display *d, int screen) { return DefaultDepth(d, screen); }
static inline int shroud_x_display_width(Display *d, int screen) { return DisplayWidth(d, screen); }
static inline int shroud_x_display_height(Display *d, int screen) { return DisplayHeight(d, screen); }
static inline unsigned long shroud_x_black_pixel(Display *d, int screen) { return BlackPixel(d, screen); }
#endif
