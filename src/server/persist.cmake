# zmix_persist: the daemon's durable state — task cache and job store (their file helpers and
# record frame are in zmix_util).
# Plain blocking file I/O, no libuv; included from src/server/CMakeLists.txt.
add_library(zmix_persist STATIC
  ${CMAKE_CURRENT_LIST_DIR}/task_name.c
  ${CMAKE_CURRENT_LIST_DIR}/task_cache.c
  ${CMAKE_CURRENT_LIST_DIR}/job_store.c)
zmix_target_defaults(zmix_persist)
target_include_directories(zmix_persist PUBLIC ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(zmix_persist PUBLIC zmix_util PkgConfig::CJSON Threads::Threads)
