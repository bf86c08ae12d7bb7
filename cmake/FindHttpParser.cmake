# Finds the http-parser library (nodejs/http-parser), which Debian ships
# without a CMake package or a pkg-config file. Defines HttpParser::HttpParser.
find_path(HTTP_PARSER_INCLUDE_DIR http_parser.h)
find_library(HTTP_PARSER_LIBRARY NAMES http_parser)
if(HTTP_PARSER_INCLUDE_DIR)
  file(STRINGS "${HTTP_PARSER_INCLUDE_DIR}/http_parser.h" _hp_major REGEX "^#define HTTP_PARSER_VERSION_MAJOR +[0-9]+")
  file(STRINGS "${HTTP_PARSER_INCLUDE_DIR}/http_parser.h" _hp_minor REGEX "^#define HTTP_PARSER_VERSION_MINOR +[0-9]+")
  string(REGEX REPLACE ".* ([0-9]+)" "\\1" _hp_major "${_hp_major}")
  string(REGEX REPLACE ".* ([0-9]+)" "\\1" _hp_minor "${_hp_minor}")
  set(HTTP_PARSER_VERSION "${_hp_major}.${_hp_minor}")
endif()
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(HttpParser REQUIRED_VARS HTTP_PARSER_LIBRARY HTTP_PARSER_INCLUDE_DIR
                                  VERSION_VAR HTTP_PARSER_VERSION)
if(HttpParser_FOUND AND NOT TARGET HttpParser::HttpParser)
  add_library(HttpParser::HttpParser UNKNOWN IMPORTED)
  set_target_properties(HttpParser::HttpParser PROPERTIES IMPORTED_LOCATION "${HTTP_PARSER_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${HTTP_PARSER_INCLUDE_DIR}")
endif()
