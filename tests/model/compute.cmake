# Compute half of the model tests: forward pass, SVD/composition, scoring. They include the
# internal compute header to reach the checked alternatives (forced W' modes, logits).
foreach(t forward score generate memory)
  zmix_add_unit_test(test_compute_${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_compute_${t}.c
                     LIBS zmix_model TIMEOUT 120 LABELS model)
  target_include_directories(test_compute_${t} PRIVATE ${PROJECT_SOURCE_DIR}/src/model)
endforeach()

# One pytest file of this directory as a test, under Debian's python3 with pytest. Its own
# --basetemp: pytest prunes old numbered temporary directories under /tmp/pytest-of-$USER,
# which would pull files from under a concurrent session.
set(_model_tests_dir ${CMAKE_CURRENT_LIST_DIR})
function(zmix_model_pytest name timeout labels env)
  add_test(NAME ${name}
    COMMAND ${ZMIX_PYTHON} -m pytest -q -p no:cacheprovider
            --basetemp=${CMAKE_CURRENT_BINARY_DIR}/${name}.tmp ${_model_tests_dir}/${name}.py)
  set_tests_properties(${name} PROPERTIES TIMEOUT ${timeout} LABELS "${labels}"
    ENVIRONMENT "${env}")
endfunction()

# The offline CLI (zmix generate / zmix score) end to end on stories260K.
if(ZMIX_PYTHON AND TARGET zmix)
  zmix_model_pytest(test_score_cli 300 "model;cli"
    "ZMIX_BIN=$<TARGET_FILE:zmix>;ZMIX_SHARED_DIR=${ZMIX_SHARED_DIR};OPENBLAS_NUM_THREADS=1")
endif()

# Architectures (RoPE scaling, head_dim, tied embeddings, qwen2, mistral) and 16-bit weights
# against a numpy reference: arch_logits writes zmix's logits for the Python test to compare.
add_executable(arch_logits ${CMAKE_CURRENT_LIST_DIR}/arch_logits.c)
zmix_target_defaults(arch_logits)
target_include_directories(arch_logits PRIVATE ${PROJECT_SOURCE_DIR}/src/model)
target_link_libraries(arch_logits PRIVATE zmix_model)
if(ZMIX_PYTHON)
  zmix_model_pytest(test_arch_reference 300 "model"
    "ZMIX_ARCH_LOGITS=$<TARGET_FILE:arch_logits>;OPENBLAS_NUM_THREADS=1")
endif()

# zmixd and zmix adapt refuse, before loading anything, a model their memory plan says will
# not fit.
if(ZMIX_PYTHON AND TARGET zmixd AND TARGET zmix)
  zmix_model_pytest(test_memory_preflight 120 "model;server"
    "ZMIXD=$<TARGET_FILE:zmixd>;ZMIX_BIN=$<TARGET_FILE:zmix>")
endif()

# zmix generate end to end: the demo's adaptation reproduces its targets, the KV cache gives
# the cache-free path's ids, sampling, stop ids and the refusals.
if(ZMIX_PYTHON AND TARGET zmix)
  zmix_model_pytest(test_generate_cli 600 "model;cli"
    "ZMIX_BIN=$<TARGET_FILE:zmix>;ZMIX_SHARED_DIR=${ZMIX_SHARED_DIR};OPENBLAS_NUM_THREADS=1")
endif()
