# Every build option of the project, in one place.
option(GATECACHE_BUILD_TESTS "Build the unit tests and register the integration tests" ON)
option(GATECACHE_WERROR "Treat compiler warnings as errors" OFF)
option(GATECACHE_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
