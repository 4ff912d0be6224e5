# Unit tests of the daemon's persistence (zmix_store): task cache and job store.
# Included from tests/server/CMakeLists.txt. Each runs in about a second; the kill -9 loops
# dominate (30 forks each, writing with fsync until killed).
if(TARGET zmix_store)
  zmix_add_unit_test(test_task_cache SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_task_cache.c
                     LIBS zmix_store PkgConfig::CJSON LABELS persist TIMEOUT 120)
  if(TARGET zmix_model)
    # Cross-check: the cached z' file read by the project's safetensors reader and expert loader.
    target_link_libraries(test_task_cache PRIVATE zmix_model)
    target_compile_definitions(test_task_cache PRIVATE ZMIX_HAVE_MODEL=1)
  endif()
  zmix_add_unit_test(test_job_store SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_job_store.c
                     LIBS zmix_store LABELS persist TIMEOUT 120)
endif()
