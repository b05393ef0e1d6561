/* Input for bindgen (see build.rs): the whole public libcriu API. */
#include <criu/criu.h>
