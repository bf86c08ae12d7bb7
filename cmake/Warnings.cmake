# Warning and sanitizer flags for every target of the project.
add_compile_options(-Wall -Wextra -Wpedantic -Wshadow=local -Wnon-virtual-dtor
                    -Wno-missing-field-initializers)
if(GATECACHE_WERROR)
  add_compile_options(-Werror)
endif()
if(GATECACHE_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
