# zmixd benchmarks (include from bench/CMakeLists.txt). Not timed tests: `bench_status_latency`
# is a target that prints numbers; a --quick smoke run is a ctest test.
if(TARGET zmix_store AND ZMIX_PYTHON)
  add_custom_target(bench_status_latency
    COMMAND ${ZMIX_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/bench_status_latency.py --zmixd $<TARGET_FILE:zmixd>
    DEPENDS zmixd USES_TERMINAL)
  if(ZMIX_BUILD_TESTS)
    add_test(NAME bench_status_latency_quick
             COMMAND ${ZMIX_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/bench_status_latency.py
                     --zmixd $<TARGET_FILE:zmixd> --quick)
    set_tests_properties(bench_status_latency_quick PROPERTIES TIMEOUT 120 LABELS "bench;server"
      ENVIRONMENT "ZMIX_SHARED_DIR=${ZMIX_SHARED_DIR};OPENBLAS_NUM_THREADS=1")
  endif()
endif()
