// The pylocalize._core extension: one Bind<Topic> per binding file.
#include "common.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "pylocalize C++ core (see the pylocalize package for the documented API)";
  pylocalize::bindings::BindUtil(m);
  pylocalize::bindings::BindHamming(m);
  pylocalize::bindings::BindRender(m);
  pylocalize::bindings::BindImage(m);
  pylocalize::bindings::BindCann(m);
  pylocalize::bindings::BindCannPq(m);
  pylocalize::bindings::BindKnn(m);
  pylocalize::bindings::BindBow(m);
  pylocalize::bindings::BindCuda(m);
}
