# Compute half of the model tests: forward pass, SVD/composition, scoring. They include the
# internal compute header to reach the checked alternatives (forced W' modes, logits).
foreach(t forward score)
  zmix_add_unit_test(test_compute_${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_compute_${t}.c
                     LIBS zmix_model TIMEOUT 120 LABELS model)
  target_include_directories(test_compute_${t} PRIVATE ${PROJECT_SOURCE_DIR}/src/model)
endforeach()
