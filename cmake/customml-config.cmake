# find_package(customml CONFIG) for a customml installation (the wheel's layout:
# customml/lib/cmake/customml/ here, customml/lib/libcustomml.so.0, customml/include/).
# Defines the imported target customml::customml: the C API of include/customml/customml.h
# (C99) and its header-only C++ wrapper customml/customml.hpp (C++17).
get_filename_component(_customml_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET customml::customml)
  add_library(customml::customml SHARED IMPORTED)
  # The library file is its SONAME: a wheel cannot hold the libcustomml.so symlink.
  set_target_properties(customml::customml PROPERTIES
    IMPORTED_LOCATION "${_customml_prefix}/lib/libcustomml.so.@CUSTOMML_C_ABI_VERSION@"
    IMPORTED_SONAME "libcustomml.so.@CUSTOMML_C_ABI_VERSION@"
    INTERFACE_INCLUDE_DIRECTORIES "${_customml_prefix}/include")
endif()
set(customml_INCLUDE_DIR "${_customml_prefix}/include")
set(customml_LIBRARY "${_customml_prefix}/lib/libcustomml.so.@CUSTOMML_C_ABI_VERSION@")
unset(_customml_prefix)
