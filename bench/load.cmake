# The zmixd load generator (bench/load_zmixd.py; include from bench/CMakeLists.txt). A long
# run is a target that prints a JSON summary; the bounded CI run is the ctest test
# stress_load (tests/stress/).
if(TARGET zmix_store AND ZMIX_PYTHON)
  add_custom_target(bench_load
    COMMAND ${CMAKE_COMMAND} -E env OPENBLAS_NUM_THREADS=1 ZMIX_SHARED_DIR=${ZMIX_SHARED_DIR}
            ${ZMIX_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/load_zmixd.py --zmixd $<TARGET_FILE:zmixd>
            --connections 300 --requests 100000 --duration 600
    DEPENDS zmixd USES_TERMINAL)
endif()
