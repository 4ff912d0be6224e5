# Finds every external dependency through pkg-config. When one is missing, configuration stops
# with the Debian package that provides it, so the fix is one apt-get away.
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: install it with `apt-get install pkg-config`")
endif()
find_package(Threads REQUIRED)

function(zmix_require_pkg target module debian_package)
  pkg_check_modules(${target} IMPORTED_TARGET GLOBAL ${module})
  if(NOT ${target}_FOUND)
    message(FATAL_ERROR "${module} not found (pkg-config module '${module}'): "
                        "install it with `apt-get install ${debian_package}`")
  endif()
endfunction()

zmix_require_pkg(OPENBLAS openblas libopenblas-dev)
zmix_require_pkg(LAPACKE lapacke liblapacke-dev)
zmix_require_pkg(LIBUV libuv libuv1-dev)
zmix_require_pkg(MSGPACK msgpack libmsgpack-dev)
zmix_require_pkg(CJSON libcjson libcjson-dev)
zmix_require_pkg(MHD libmicrohttpd libmicrohttpd-dev) # zmixd --http
zmix_require_pkg(HIREDIS hiredis libhiredis-dev)      # zmixd --store redis://
if(ZMIX_BUILD_TESTS)
  zmix_require_pkg(CMOCKA cmocka libcmocka-dev)
endif()

# zmix::blas: OpenBLAS with LAPACKE on top (LAPACKE must come first on the link line).
add_library(zmix_blas INTERFACE)
target_link_libraries(zmix_blas INTERFACE PkgConfig::LAPACKE PkgConfig::OPENBLAS m)
add_library(zmix::blas ALIAS zmix_blas)
