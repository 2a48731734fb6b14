#pragma once
// Defines: CUSTOMML_PRIVATE_API, the mark on the C++ declarations libcustomml.so exports for
// the Python module _core, which links the library instead of holding a second copy of the
// core (docs/decisions.md, "The C runtime", says why each group is exported). This surface
// is private and unstable: it changes with any commit, has no ABI version, and only the
// _core built from the same tree may use it; programs embedding customml use the C API
// (include/customml/customml.h). Everything unmarked is hidden (-fvisibility=hidden), and
// the library's symbol map (cpp/libcustomml.map) drops what the compiler makes visible
// on its own (std:: template instances).

#if defined(_WIN32) && defined(CUSTOMML_BUILDING)
#define CUSTOMML_PRIVATE_API __declspec(dllexport)
#elif defined(_WIN32)
#define CUSTOMML_PRIVATE_API __declspec(dllimport)
#elif defined(__GNUC__)
#define CUSTOMML_PRIVATE_API __attribute__((visibility("default")))
#else
#define CUSTOMML_PRIVATE_API
#endif
