// Exceptions the core throws; the bindings map them to npad_edge.errors classes.
#pragma once

#include <stdexcept>
#include <string>

namespace npad {

// A bad argument (shape, dtype, value). Mapped to npad_edge.errors.InvalidInputError.
struct InvalidInput : std::invalid_argument {
    explicit InvalidInput(const std::string& what) : std::invalid_argument(what) {}
};

// A long call stopped because Control::poll asked it to. The bindings re-raise the Python
// exception (KeyboardInterrupt, or whatever a progress callback raised) that caused it.
struct Cancelled : std::runtime_error {
    Cancelled() : std::runtime_error("cancelled") {}
};

}  // namespace npad
