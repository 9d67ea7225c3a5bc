// Placeholder until the search core lands; replaced by the real bindings.
#include <pybind11/pybind11.h>
PYBIND11_MODULE(_core, m) { m.doc() = "npad_edge compiled core (placeholder)"; }
