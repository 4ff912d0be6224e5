# Compute half of the model tests: forward pass, SVD/composition, scoring. They include the
# internal compute header to reach the checked alternatives (forced W' modes, logits).
foreach(t forward score)
  zmix_add_unit_test(test_compute_${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_compute_${t}.c
                     LIBS zmix_model TIMEOUT 120 LABELS model)
  target_include_directories(test_compute_${t} PRIVATE ${PROJECT_SOURCE_DIR}/src/model)
endforeach()

# The offline CLI (zmix generate / zmix score) end to end on stories260K, under Debian's
# python3 with pytest. Its own --basetemp: pytest prunes old numbered temporary directories
# under /tmp/pytest-of-$USER, which would pull files from under a concurrent session.
if(ZMIX_PYTHON AND TARGET zmix)
  add_test(NAME test_score_cli
    COMMAND ${ZMIX_PYTHON} -m pytest -q -p no:cacheprovider
            --basetemp=${CMAKE_CURRENT_BINARY_DIR}/test_score_cli.tmp
            ${CMAKE_CURRENT_LIST_DIR}/test_score_cli.py)
  set_tests_properties(test_score_cli PROPERTIES TIMEOUT 300 LABELS "model;cli"
    ENVIRONMENT "ZMIX_BIN=$<TARGET_FILE:zmix>;ZMIX_SHARED_DIR=${ZMIX_SHARED_DIR};OPENBLAS_NUM_THREADS=1")
endif()
