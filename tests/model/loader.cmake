# Model tests, file-format half: hashing, safetensors, both model loaders, examples, experts
# and the factor cache. Included from tests/model/CMakeLists.txt.
set(_dir ${CMAKE_CURRENT_LIST_DIR})
set(_src ${PROJECT_SOURCE_DIR}/src/model)

zmix_add_unit_test(test_formats_sha256 SOURCES ${_dir}/test_formats_sha256.c LIBS zmix_util
  LABELS model TIMEOUT 60)

# The format tests reach into the model's internals (model_internal.h, safetensors.h).
add_library(zmix_test_formats_fixtures STATIC ${_dir}/test_formats_fixtures.c)
zmix_target_defaults(zmix_test_formats_fixtures)
target_include_directories(zmix_test_formats_fixtures PUBLIC ${_src})
target_link_libraries(zmix_test_formats_fixtures PUBLIC zmix_model zmix_util zmix_testutil PkgConfig::CMOCKA)

foreach(_t test_safetensors test_formats_models test_formats_agreement test_formats_fuzz test_examples
           test_experts test_factor_cache test_factor_cache_runtime test_memory_plan)
  if(EXISTS ${_dir}/${_t}.c)
    zmix_add_unit_test(${_t} SOURCES ${_dir}/${_t}.c LIBS zmix_test_formats_fixtures
      LABELS model TIMEOUT 120)
  endif()
endforeach()

# Tokenizers: tok_dump encodes a corpus with zmix's tokenizer for the parity test, which
# compares it with the reference implementations (tests/model/tokenizers/).
add_executable(tok_dump ${_dir}/tok_dump.c)
zmix_target_defaults(tok_dump)
target_link_libraries(tok_dump PRIVATE zmix_model PkgConfig::CJSON)
if(ZMIX_PYTHON)
  add_test(NAME test_tokenizer_parity
           COMMAND ${ZMIX_PYTHON} ${_dir}/test_tokenizer_parity.py $<TARGET_FILE:tok_dump>
                   --shared ${ZMIX_SHARED_DIR})
  set_tests_properties(test_tokenizer_parity PROPERTIES TIMEOUT 900 LABELS "model;python"
    SKIP_RETURN_CODE 77)
endif()
zmix_add_unit_test(test_tokenizer SOURCES ${_dir}/test_tokenizer.c LIBS zmix_test_formats_fixtures
  LABELS model TIMEOUT 120)
target_compile_definitions(test_tokenizer PRIVATE ZMIX_TOKENIZER_FIXTURES="${_dir}/tokenizers")
set_tests_properties(test_tokenizer PROPERTIES ENVIRONMENT "ZMIX_SHARED_DIR=${ZMIX_SHARED_DIR}")
