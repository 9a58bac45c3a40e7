/* stb_image compiled into the fuzz targets (instead of Debian's prebuilt libstb) so that its
 * decoders carry coverage and sanitizer instrumentation. Same header, same version. */
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
