# Finds libev, which ships neither a CMake package nor a pkg-config file on
# Debian. Defines the imported target Libev::Libev.
find_path(LIBEV_INCLUDE_DIR ev.h)
find_library(LIBEV_LIBRARY NAMES ev)
if(LIBEV_INCLUDE_DIR)
  file(STRINGS "${LIBEV_INCLUDE_DIR}/ev.h" _ev_major REGEX "^#define EV_VERSION_MAJOR +[0-9]+")
  file(STRINGS "${LIBEV_INCLUDE_DIR}/ev.h" _ev_minor REGEX "^#define EV_VERSION_MINOR +[0-9]+")
  string(REGEX REPLACE ".* ([0-9]+)" "\\1" _ev_major "${_ev_major}")
  string(REGEX REPLACE ".* ([0-9]+)" "\\1" _ev_minor "${_ev_minor}")
  set(LIBEV_VERSION "${_ev_major}.${_ev_minor}")
endif()
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Libev REQUIRED_VARS LIBEV_LIBRARY LIBEV_INCLUDE_DIR
                                  VERSION_VAR LIBEV_VERSION)
if(Libev_FOUND AND NOT TARGET Libev::Libev)
  add_library(Libev::Libev UNKNOWN IMPORTED)
  set_target_properties(Libev::Libev PROPERTIES IMPORTED_LOCATION "${LIBEV_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${LIBEV_INCLUDE_DIR}")
endif()
