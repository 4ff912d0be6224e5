# Warnings, sanitizers and the common compile options, applied through zmix_target_defaults().
set(ZMIX_WARNINGS -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla
    -Wformat=2 -Wno-unused-parameter)
if(ZMIX_WERROR)
  list(APPEND ZMIX_WARNINGS -Werror)
endif()

if(ZMIX_SANITIZE AND ZMIX_TSAN)
  message(FATAL_ERROR "ZMIX_SANITIZE and ZMIX_TSAN cannot be combined")
endif()
if(ZMIX_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
if(ZMIX_TSAN)
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
endif()

# Checked builds: the invariants the code states (loop-thread-only functions, job phase
# transitions, counters never negative) abort when violated. On in Debug and in the sanitizer
# builds, so that the ASan and TSan runs execute them; off in Release.
if(ZMIX_SANITIZE OR ZMIX_TSAN OR CMAKE_BUILD_TYPE STREQUAL "Debug")
  add_compile_definitions(ZMIX_CHECKED=1)
endif()

function(zmix_target_defaults target)
  target_compile_options(${target} PRIVATE ${ZMIX_WARNINGS})
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
    $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
endfunction()
