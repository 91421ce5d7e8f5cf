// Error types and argument checks shared by the whole core.
//
// The core never aborts the interpreter: caller mistakes throw std::invalid_argument
// (ValueError in Python), broken files throw FormatError (pylocalize.FormatError, a
// ValueError), a Ctrl-C seen by a long loop throws Interrupted (KeyboardInterrupt).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace pylocalize {

// A file or byte buffer that is not a valid pylocalize container.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A long call stopped because the user pressed Ctrl-C.
class Interrupted : public std::runtime_error {
 public:
  Interrupted() : std::runtime_error("interrupted") {}
};

namespace detail {
template <typename... Args>
std::string Concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace pylocalize

// Throws std::invalid_argument (-> ValueError) with a message that should say the fix.
#define PYL_CHECK(cond, ...)                                                  \
  do {                                                                        \
    if (!(cond)) {                                                            \
      throw std::invalid_argument(::pylocalize::detail::Concat(__VA_ARGS__)); \
    }                                                                         \
  } while (0)

#define PYL_CHECK_FORMAT(cond, ...)                                               \
  do {                                                                            \
    if (!(cond)) {                                                                \
      throw ::pylocalize::FormatError(::pylocalize::detail::Concat(__VA_ARGS__)); \
    }                                                                             \
  } while (0)
